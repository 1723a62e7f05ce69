/**
 * `retryExports` in virtual time: the sink's answers are thenables on the TestScheduler, 2
 * frames after each attempt (test/support/sinks.ts `markedSink`); the retry waits are
 * `minDelayMs: 10, maxDelayMs: 40` with `random: () => 1`: 10, then 20.
 */
import { describe, it, expect } from 'vitest';
import { map, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { DeliveryError, FencedError } from '../src/errors.js';
import type { ExportTask } from '../src/operators/deliver-exports.js';
import { retryExports, type RetryExportsOptions } from '../src/operators/retry-exports.js';
import type { ExportSink } from '../src/sinks/types.js';
import type { RateLimiter } from '../src/stores/rate-limiter.js';
import { brief, httpError as http, markedSink as sink, markedTask as task, openLimiter as open } from '../test/support/sinks.js';

const scheduler = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));

/** retryExports with one sink, the open limiter, the test's scheduler and the longest waits. */
const retrying = (ts: TestScheduler, s: ExportSink, over: Partial<RetryExportsOptions> = {}) =>
  retryExports({ sinkFor: () => s, limiterFor: () => open, scheduler: ts, random: () => 1, ...over });

/** A task whose first attempt failed with `status`. */
const failed = (id: string, status = 503): ExportTask => task(id, { attempts: 1, error: http(status) });

describe('retryExports', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('|');
      expectObservable(src.pipe(retrying(ts, sink(ts, log, () => 200)))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
    expect(log).toEqual([]);
  });

  it('one failed task: retried after the first wait, delivered; completes only then', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a|', { a: failed('x') });
      expectObservable(src.pipe(retrying(ts, sink(ts, log, () => 200)), map(brief))).toBe('12ms (a|)', { a: 'x:delivered/2' });
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
    expect(log).toEqual(['10 attempt x#1']);
  });

  it('many: retries a retryable failure twice with backoff on the scheduler; delivered or the last error', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, (id, n) => (id === 'late' && n < 2 ? 503 : id === 'never' ? 503 : 200));
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('ab|', { a: failed('late'), b: failed('never') });
      // waits 10 then 20 (+2 per attempt): late#2 at 10, late#3 at 32 → out at 34.
      expectObservable(src.pipe(retrying(ts, s), map(brief))).toBe('34ms a (b|)', { a: 'late:delivered/3', b: 'never:error/3' });
    });
    expect(log.filter((l) => l.includes('late'))).toEqual(['10 attempt late#1', '32 attempt late#2']);
  });

  it('passes through at once what needs no retry (open, permanent failure, abandoned even with a retryable error)', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('abc|', { a: task('new'), b: failed('perm', 400), c: task('lost', { attempts: 1, error: http(503), abandoned: new FencedError('x') }) });
      expectObservable(src.pipe(retrying(ts, sink(ts, log, () => 200)), map(brief))).toBe('abc|', {
        a: 'new:open',
        b: 'perm:error/1',
        c: 'lost:abandoned ERR_FENCED',
      });
    });
    expect(log).toEqual([]);
  });

  it('every retry waits for a send permit of the dataflow limiter', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const asked: string[] = [];
      const slow: RateLimiter = { acquire: () => (asked.push(`${ts.now()}`), cold<void>('-----(a|)') as Observable<void>) };
      const op = retrying(ts, sink(ts, log, () => 200), { limiterFor: (id) => (asked.push(id), slow) });
      // the wait (10), then the permit (5), then the answer (2)
      expectObservable(cold<ExportTask>('a|', { a: failed('x') }).pipe(op, map(brief))).toBe('17ms (a|)', { a: 'x:delivered/2' });
      ts.flush();
      expect(asked).toEqual(['f', '10']);
    });
    expect(log).toEqual(['15 attempt x#1']);
  });

  it('resends at once a 401 answered to credentials just renewed, as part of the same attempt', () => {
    const ts = scheduler();
    const log: string[] = [];
    const renewed = new DeliveryError('ERR_HTTP_STATUS', 'HTTP 401', { retryable: false, statusCode: 401, credentialsRenewed: true });
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('a|', { a: task('x', { attempts: 1, error: renewed }) });
      expectObservable(src.pipe(retrying(ts, sink(ts, log, () => 200)), map(brief))).toBe('--(a|)', { a: 'x:delivered/1' });
    });
    expect(log).toEqual(['0 attempt x#1']);
  });

  it('abandons a task fenced during its retries', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const s = sink(ts, [], () => new FencedError('lease lost'));
      expectObservable(cold<ExportTask>('a|', { a: failed('x') }).pipe(retrying(ts, s), map(brief))).toBe('12ms (a|)', { a: 'x:abandoned ERR_FENCED' });
    });
  });

  it('passes a source error through and cancels the retry wait (no attempt after)', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a-#', { a: failed('x') });
      expectObservable(src.pipe(retrying(ts, sink(ts, log, () => 200)))).toBe('--#');
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
    expect(log).toEqual([]);
  });

  it('stays open on a never-ending source, its retries still done', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('-a-', { a: failed('x') });
      expectObservable(src.pipe(retrying(ts, sink(ts, [], () => 200)), map(brief))).toBe('- 12ms a', { a: 'x:delivered/2' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribed early: unsubscribes the source and cancels the attempt in flight', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a 20ms |', { a: failed('x') });
      expectObservable(src.pipe(retrying(ts, sink(ts, log, () => 503))), '11ms !').toBe('-');
      expectSubscriptions(src.subscriptions).toBe('^ 10ms !');
    });
    expect(log).toEqual(['10 attempt x#1', '11 cancel x#1']);
  });

  it('unsubscribed during the retry wait: no attempt at all', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a|', { a: failed('x') }).pipe(retrying(ts, sink(ts, log, () => 200))), '5ms !').toBe('-');
    });
    expect(log).toEqual([]);
  });

  it('a throwing sinkFor errors the output (a bug of the wiring: the chain stops)', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const op = retryExports({
        sinkFor: () => {
          throw new Error('no sink');
        },
        limiterFor: () => open,
        scheduler: ts,
      });
      expectObservable(cold<ExportTask>('a|', { a: failed('x') }).pipe(op)).toBe('#', undefined, new Error('no sink'));
    });
  });

  it('a throwing onRetry ends that task\'s retries with its error; the chain goes on', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const op = retrying(ts, sink(ts, log, () => 200), {
        onRetry: () => {
          throw new Error('metrics broke');
        },
      });
      const out = cold<ExportTask>('ab|', { a: failed('x'), b: task('y') }).pipe(op, map((t) => `${brief(t)} ${(t.error as Error | undefined)?.message ?? ''}`));
      expectObservable(out).toBe('ab|', { a: 'x:error/1 metrics broke', b: 'y:open ' });
    });
    expect(log).toEqual([]);
  });
});
