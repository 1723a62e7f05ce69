/**
 * The delivery stages of `deliverExports` one by one: attemptExports, retryExports,
 * storeFailedExports (in virtual time; the sink's answers are thenables on the TestScheduler).
 */
import { describe, it, expect } from 'vitest';
import { map, of } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { DeliveryError, FencedError, StoreError } from '../src/errors.js';
import { attemptExports } from '../src/operators/attempt-exports.js';
import type { ExportTask } from '../src/operators/deliver-exports.js';
import { retryExports } from '../src/operators/retry-exports.js';
import { storeFailedExports } from '../src/operators/store-failed-exports.js';
import type { DeliveryOutcome, ExportJob, ExportSink } from '../src/sinks/types.js';
import type { RateLimiter } from '../src/stores/rate-limiter.js';

const scheduler = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));
const job = (id: string): ExportJob => ({ dataflowId: 'f', destinationId: 'd', profileId: id, idempotencyKey: id, payload: {} });
const task = (id: string, over: Partial<ExportTask> = {}): ExportTask => ({ job: job(id), attempts: 0, ...over });
const http = (status: number): DeliveryError => new DeliveryError('ERR_HTTP_STATUS', `HTTP ${status}`, { retryable: status >= 500, statusCode: status });

function later<T>(ts: TestScheduler, delay: number, work: () => T): Promise<T> {
  const t = {
    then(ok: (v: T) => void, fail: (e: unknown) => void) {
      const go = (): void => {
        try {
          ok(work());
        } catch (err) {
          fail(err);
        }
      };
      if (delay > 0) ts.schedule(go, delay);
      else go();
      return t;
    },
  };
  return t as unknown as Promise<T>;
}

/** A sink answering `answer(id, n)` (a status or an error) 2 frames after each attempt. */
function sink(ts: TestScheduler, log: string[], answer: (id: string, n: number) => number | Error, failStore = false): ExportSink {
  const n = new Map<string, number>();
  return {
    retryDelays: { minDelayMs: 10, maxDelayMs: 40, retryAfterMaxMs: 40 },
    attempt(j, cancellation) {
      const k = (n.get(j.profileId) ?? 0) + 1;
      n.set(j.profileId, k);
      log.push(`${ts.now()} attempt ${j.profileId}#${k}`);
      cancellation.attach({ cancel: () => log.push(`${ts.now()} cancel ${j.profileId}#${k}`) });
      return later(ts, 2, () => {
        const a = answer(j.profileId, k);
        if (a instanceof Error) throw a;
        if (a >= 300) throw http(a);
        return { statusCode: a };
      });
    },
    fail(j, attempts, err) {
      log.push(`${ts.now()} fail ${j.profileId} after ${attempts}`);
      if (failStore) return later(ts, 0, () => { throw new StoreError('store down'); });
      return later(ts, 1, (): DeliveryOutcome => ({ status: 'failed', job: j, attempts, code: 'ERR_HTTP_STATUS', error: String(err) }));
    },
    close: () => Promise.resolve(),
  };
}

const open: RateLimiter = { acquire: () => of(undefined), tryAcquire: () => true };
const brief = (t: ExportTask): string =>
  `${t.job.profileId}:${t.outcome ? `${t.outcome.status}/${t.outcome.attempts}` : t.abandoned ? `abandoned ${(t.abandoned as { code?: string }).code}` : t.error ? `error/${t.attempts}` : 'open'}`;

describe('attemptExports', () => {
  it('makes one attempt per open task: delivered, failed (error kept for the retry stage) or fenced (abandoned); others pass', () => {
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

  it('cancels the attempts in flight when unsubscribed', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, () => 200);
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a|', { a: task('x') }).pipe(attemptExports({ sinkFor: () => s })), '-!').toBe('-');
    });
    expect(log).toEqual(['0 attempt x#1', '1 cancel x#1']);
  });
});

describe('retryExports', () => {
  it('retries a retryable failure twice with backoff on the scheduler, each through the limiter; delivered or the last error', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, (id, n) => (id === 'late' && n < 2 ? 503 : id === 'never' ? 503 : 200));
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('ab|', { a: task('late', { attempts: 1, error: http(503) }), b: task('never', { attempts: 1, error: http(503) }) });
      const op = retryExports({ sinkFor: () => s, limiterFor: () => open, scheduler: ts, random: () => 1 });
      // waits 10 then 20 (+2 per attempt): late#2 at 10, late#3 at 32 → out at 34.
      expectObservable(src.pipe(op, map(brief))).toBe('34ms a (b|)', { a: 'late:delivered/3', b: 'never:error/3' });
    });
    expect(log.filter((l) => l.includes('late'))).toEqual(['10 attempt late#1', '32 attempt late#2']);
  });

  it('passes through at once what needs no retry (delivered, permanent failure, abandoned)', () => {
    const ts = scheduler();
    const s = sink(ts, [], () => 200);
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('ab|', { a: task('perm', { attempts: 1, error: http(400) }), b: task('lost', { abandoned: new FencedError('x') }) });
      expectObservable(src.pipe(retryExports({ sinkFor: () => s, limiterFor: () => open, scheduler: ts }), map(brief))).toBe('ab|', {
        a: 'perm:error/1',
        b: 'lost:abandoned ERR_FENCED',
      });
    });
  });

  it('cancels its waits and attempts when unsubscribed', () => {
    const ts = scheduler();
    const log: string[] = [];
    const s = sink(ts, log, () => 503);
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('a|', { a: task('x', { attempts: 1, error: http(503) }) });
      expectObservable(src.pipe(retryExports({ sinkFor: () => s, limiterFor: () => open, scheduler: ts, random: () => 1 })), '11ms !').toBe('-');
    });
    expect(log).toEqual(['10 attempt x#1', '11 cancel x#1']);
  });
});

describe('storeFailedExports', () => {
  it('stores a task with a final error as failed; abandons it when the store refuses; others pass', () => {
    const ts = scheduler();
    const log: string[] = [];
    const out: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const ok = sink(ts, log, () => 200);
      const src = cold<ExportTask>('ab|', { a: task('x', { attempts: 3, error: http(503) }), b: task('y', { attempts: 1 }) });
      src.pipe(storeFailedExports({ sinkFor: () => ok }), map(brief)).subscribe({ next: (v) => out.push(`${ts.now()} ${v}`), complete: () => out.push(`${ts.now()} |`) });
      const broken = sink(ts, log, () => 200, true);
      expectObservable(cold<ExportTask>('a|', { a: task('z', { attempts: 1, error: http(400) }) }).pipe(storeFailedExports({ sinkFor: () => broken }), map(brief))).toBe('a|', {
        a: 'z:abandoned ERR_STORE',
      });
    });
    expect(out).toEqual(['1 y:open', '1 x:failed/3', '2 |']);
  });
});
