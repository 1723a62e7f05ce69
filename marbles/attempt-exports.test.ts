/**
 * `attemptExports` in virtual time: the sink's answers are thenables on the TestScheduler,
 * 2 frames after each attempt (test/support/sinks.ts `markedSink`).
 */
import { describe, it, expect } from 'vitest';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { FencedError, HttpDestinationError } from '../src/errors.js';
import { attemptExports } from '../src/operators/attempt-exports.js';
import type { ExportTask } from '../src/operators/deliver-exports.js';
import type { ExportSink } from '../src/sinks/types.js';
import { brief, markedJob as job, markedSink as sink, markedTask as task } from '../test/support/sinks.js';

const scheduler = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));

describe('attemptExports', () => {
  it('completes at once on an empty source, attempting nothing', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('|');
      expectObservable(src.pipe(attemptExports({ sinkFor: () => sink(ts, log, () => 200) }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
    expect(log).toEqual([]);
  });

  it('one task: one attempt, delivered when it answers; completes only then', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, () => 200);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a|', { a: task('x') });
      expectObservable(src.pipe(attemptExports({ sinkFor: () => s }), map(brief))).toBe('--(a|)', { a: 'x:delivered/1' });
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
    expect(log).toEqual(['0 attempt x#1']);
  });

  it('many: one attempt per open task — delivered, failed (error kept for the retry stage) or fenced (abandoned); others pass at once; out in the order attempts end', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, (id) => (id === 'bad' ? 503 : id === 'lost' ? new FencedError('lease lost') : 200));
    const out: string[] = [];
    ts.run(({ cold, expectSubscriptions }) => {
      const done = task('done', { outcome: { status: 'delivered', job: job('done'), attempts: 1, statusCode: 200 } });
      const src = cold<ExportTask>('abcd|', { a: task('ok'), b: task('bad'), c: task('lost'), d: done });
      src.pipe(attemptExports({ sinkFor: () => s }), map(brief)).subscribe({ next: (v) => out.push(`${ts.now()} ${v}`), complete: () => out.push(`${ts.now()} |`) });
      expectSubscriptions(src.subscriptions).toBe('^---!');
    });
    expect(out).toEqual(['2 ok:delivered/1', '3 done:delivered/1', '3 bad:error/1', '4 lost:abandoned ERR_FENCED', '4 |']);
  });

  it('passes on a task already failed or abandoned without an attempt', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, () => 200);
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('ab|', { a: task('failed', { attempts: 1, error: new Error('x') }), b: task('gone', { abandoned: new FencedError('x') }) });
      expectObservable(src.pipe(attemptExports({ sinkFor: () => s }), map(brief))).toBe('ab|', { a: 'failed:error/1', b: 'gone:abandoned ERR_FENCED' });
    });
    expect(log).toEqual([]);
  });

  it('abandons a task whose sink was refused a new send permit (the limiter is closing)', () => {
    const ts = scheduler();
    const s = sink(ts, [], () => new HttpDestinationError('ERR_RATE_LIMITER', 'the redis rate limiter is closed'));
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a|', { a: task('x') }).pipe(attemptExports({ sinkFor: () => s }), map(brief))).toBe('--(a|)', {
        a: 'x:abandoned ERR_RATE_LIMITER',
      });
    });
  });

  it('passes a source error through and cancels the attempt in flight', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, () => 200);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a#', { a: task('x') });
      expectObservable(src.pipe(attemptExports({ sinkFor: () => s }))).toBe('-#');
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
    expect(log).toEqual(['0 attempt x#1', '1 cancel x#1']);
  });

  it('stays open on a never-ending source, its tasks still delivered', () => {
    const ts = scheduler();
    const s = sink(ts, [], () => 200);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('-a-', { a: task('x') });
      expectObservable(src.pipe(attemptExports({ sinkFor: () => s }), map(brief))).toBe('---a-', { a: 'x:delivered/1' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribed early: unsubscribes the source, cancels the attempts in flight, emits nothing after', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, () => 200);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a-b|', { a: task('x'), b: task('y') });
      expectObservable(src.pipe(attemptExports({ sinkFor: () => s })), '-!').toBe('-');
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
    expect(log).toEqual(['0 attempt x#1', '1 cancel x#1']);
  });

  it('a throwing sinkFor or attempt fails that task (error kept: the stages after store it), not the chain', () => {
    const ts = scheduler();
    const throwing: ExportSink = {
      ...sink(ts, [], () => 200),
      attempt: () => {
        throw new Error('attempt broke');
      },
    };
    const sinkFor = (flow: string): ExportSink => {
      if (flow === 'unknown') throw new Error('no sink');
      return throwing;
    };
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('ab|', { a: task('x', { job: { ...job('x'), dataflowId: 'unknown' } }), b: task('y') });
      const out = src.pipe(attemptExports({ sinkFor }), map((t) => `${brief(t)} ${(t.error as Error).message}`));
      expectObservable(out).toBe('ab|', { a: 'x:error/1 no sink', b: 'y:error/1 attempt broke' });
    });
  });
});
