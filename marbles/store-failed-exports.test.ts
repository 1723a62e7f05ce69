/**
 * `storeFailedExports` in virtual time: the sink's `fail` answers a `failed` outcome 1 frame
 * after it is called, or rejects at once when its store is down (test/support/sinks.ts
 * `markedSink`).
 */
import { describe, it, expect } from 'vitest';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { FencedError } from '../src/errors.js';
import type { ExportTask } from '../src/operators/deliver-exports.js';
import { storeFailedExports } from '../src/operators/store-failed-exports.js';
import type { DeliveryOutcome, ExportSink } from '../src/sinks/types.js';
import { brief, httpError as http, markedJob as job, markedSink as sink, markedTask as task } from '../test/support/sinks.js';
import { later } from '../test/support/virtual-time.js';

const scheduler = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));

/** A task whose last attempt (of `attempts`) failed with `status`. */
const failed = (id: string, attempts = 3, status = 503): ExportTask => task(id, { attempts, error: http(status) });

describe('storeFailedExports', () => {
  it('completes at once on an empty source, storing nothing', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('|');
      expectObservable(src.pipe(storeFailedExports({ sinkFor: () => sink(ts, log, () => 200) }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
    expect(log).toEqual([]);
  });

  it('one task with a final error: stored, settled as failed; completes only then', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a|', { a: failed('x') });
      expectObservable(src.pipe(storeFailedExports({ sinkFor: () => sink(ts, log, () => 200) }), map(brief))).toBe('-(a|)', { a: 'x:failed/3' });
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
    expect(log).toEqual(['0 fail x after 3']);
  });

  it('many: stores each task with a final error; abandons it when the store refuses; others pass at once', () => {
    const ts = scheduler();
    const log: string[] = [];
    const out: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const ok = sink(ts, log, () => 200);
      const src = cold<ExportTask>('ab|', { a: failed('x'), b: task('y', { attempts: 1 }) });
      src.pipe(storeFailedExports({ sinkFor: () => ok }), map(brief)).subscribe({ next: (v) => out.push(`${ts.now()} ${v}`), complete: () => out.push(`${ts.now()} |`) });
      const broken = sink(ts, log, () => 200, { failStore: true });
      expectObservable(cold<ExportTask>('a|', { a: failed('z', 1, 400) }).pipe(storeFailedExports({ sinkFor: () => broken }), map(brief))).toBe('a|', {
        a: 'z:abandoned ERR_STORE',
      });
    });
    expect(out).toEqual(['1 y:open', '1 x:failed/3', '2 |']);
    expect(log).toEqual(['0 fail x after 3', '0 fail z after 1']);
  });

  it('passes on a settled or abandoned task without storing it, even with an error', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const done = task('done', { attempts: 1, error: http(503), outcome: { status: 'delivered', job: job('done'), attempts: 1, statusCode: 200 } });
      const lost = task('lost', { attempts: 1, error: http(503), abandoned: new FencedError('x') });
      expectObservable(cold<ExportTask>('ab|', { a: done, b: lost }).pipe(storeFailedExports({ sinkFor: () => sink(ts, log, () => 200) }), map(brief))).toBe('ab|', {
        a: 'done:delivered/1',
        b: 'lost:abandoned ERR_FENCED',
      });
    });
    expect(log).toEqual([]);
  });

  it('passes a source error through; a record being stored is not emitted after it', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('(a#)', { a: failed('x') });
      expectObservable(src.pipe(storeFailedExports({ sinkFor: () => sink(ts, log, () => 200) }))).toBe('#');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
    expect(log).toEqual(['0 fail x after 3']);
  });

  it('stays open on a never-ending source, its failures still stored', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('-a-', { a: failed('x') });
      expectObservable(src.pipe(storeFailedExports({ sinkFor: () => sink(ts, [], () => 200) }), map(brief))).toBe('--a-', { a: 'x:failed/3' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribed early: unsubscribes the source and drops the answer of a record being stored', () => {
    const ts = scheduler();
    const log: string[] = [];
    const seen: string[] = [];
    // answers 3 frames after it is called
    const slow: ExportSink = {
      ...sink(ts, [], () => 200),
      fail: (j, attempts) => {
        log.push(`${ts.now()} fail ${j.profileId}`);
        return later(ts, 3, (): DeliveryOutcome => ({ status: 'failed', job: j, attempts, code: 'ERR_HTTP_STATUS', error: 'HTTP 503' }));
      },
    };
    const x = failed('x');
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a 9ms b|', { a: x, b: failed('y') });
      const out = src.pipe(
        storeFailedExports({ sinkFor: () => slow }),
        map((t) => {
          seen.push(brief(t));
          return brief(t);
        }),
      );
      expectObservable(out, '--!').toBe('');
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
    expect(log).toEqual(['0 fail x']);
    expect(seen).toEqual([]);
    expect(x.outcome, 'a task left alone once the output is closed').toBeUndefined();
  });

  it('a throwing sinkFor or fail abandons that task (its message comes back), not the chain', () => {
    const ts = scheduler();
    const throwing: ExportSink = {
      ...sink(ts, [], () => 200),
      fail: () => {
        throw new Error('fail broke');
      },
    };
    const sinkFor = (flow: string): ExportSink => {
      if (flow === 'unknown') throw new Error('no sink');
      return throwing;
    };
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('ab|', { a: task('x', { job: { ...job('x'), dataflowId: 'unknown' }, attempts: 1, error: http(400) }), b: failed('y') });
      const out = src.pipe(storeFailedExports({ sinkFor }), map((t) => `${t.job.profileId} abandoned: ${(t.abandoned as Error).message}`));
      expectObservable(out).toBe('ab|', { a: 'x abandoned: no sink', b: 'y abandoned: fail broke' });
    });
  });
});
