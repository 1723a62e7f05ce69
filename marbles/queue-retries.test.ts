/**
 * `queueRetries`: a retryable failure goes to the retry queue (outcome queued, the message no
 * longer waits); the rest passes — in virtual time.
 */
import { describe, expect, it } from 'vitest';
import { map } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import { DeliveryError, StoreError } from '../src/errors.js';
import type { ExportTask } from '../src/operators/deliver-exports.js';
import { queueRetries, type QueueRetriesTarget } from '../src/operators/queue-retries.js';
import { brief, http, job, later, scheduler, task } from './queue-stages.support.js';

function target(ts: TestScheduler, log: string[], o: { storeDown?: boolean; throwing?: boolean } = {}): QueueRetriesTarget {
  return {
    enqueue: (j, attempts, err) => {
      if (o.throwing) throw new Error('queue broken');
      log.push(`${ts.now()} enqueue ${j.profileId}/${attempts} ${(err as DeliveryError).statusCode}`);
      return later(ts, 2, () => {
        if (o.storeDown) throw new StoreError('queue store down');
      });
    },
    succeeded: (f) => log.push(`${ts.now()} succeeded ${f}`),
  };
}

const failed = (id: string, status: number): ExportTask => task(id, { attempts: 1, error: http(status) });

describe('queueRetries', () => {
  it('empty: completes with the source', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('--|');
      expectObservable(src.pipe(queueRetries({ queues: target(ts, log) }))).toBe('--|');
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
    expect(log).toEqual([]);
  });

  it('one: a 503 is queued once stored, and settles as queued with its attempts', () => {
    const ts = scheduler();
    const log: string[] = [];
    const t = failed('p', 503);
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a|', { a: t }).pipe(queueRetries({ queues: target(ts, log) }), map(brief))).toBe('--(a|)', { a: 'p:queued/1' });
    });
    expect(log).toEqual(['0 enqueue p/1 503']);
    expect(t.error).toBeUndefined();
  });

  it('many: retryable (5xx, 429, a 401 after renewal) queued; permanent (400), delivered, abandoned pass at once; a delivery tells the queues', () => {
    const ts = scheduler();
    const log: string[] = [];
    const renewed = task('renewed', { attempts: 1, error: new DeliveryError('ERR_HTTP_STATUS', 'HTTP 401', { retryable: false, statusCode: 401, credentialsRenewed: true }) });
    const ok = task('ok', { attempts: 1, outcome: { status: 'delivered', job: job('ok'), attempts: 1, statusCode: 200 } });
    const gone = task('gone', { abandoned: new StoreError('x') });
    const out: string[] = [];
    ts.run(({ cold, expectSubscriptions }) => {
      const src = cold<ExportTask>('abcdef|', { a: failed('a', 500), b: failed('b', 429), c: renewed, d: failed('perm', 400), e: ok, f: gone });
      src.pipe(queueRetries({ queues: target(ts, log) }), map(brief)).subscribe({ next: (v) => out.push(`${ts.now()} ${v}`), complete: () => out.push(`${ts.now()} |`) });
      expectSubscriptions(src.subscriptions).toBe('^-----!');
    });
    expect(out).toEqual(['2 a:queued/1', '3 perm:error/1', '3 b:queued/1', '4 ok:delivered/1', '4 renewed:queued/1', '5 gone:abandoned ERR_STORE', '6 |']);
    expect(log).toContain('4 succeeded f');
  });

  it('error: a source error passes through; a queue that cannot store abandons the task', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('-#').pipe(queueRetries({ queues: target(ts, []) }))).toBe('-#');
      expectObservable(cold<ExportTask>('a|', { a: failed('p', 502) }).pipe(queueRetries({ queues: target(ts, [], { storeDown: true }) }), map(brief))).toBe('--(a|)', {
        a: 'p:abandoned ERR_STORE',
      });
    });
  });

  it('never-ending: does not complete while the source does not', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a-', { a: failed('p', 500) }).pipe(queueRetries({ queues: target(ts, []) }), map(brief))).toBe('--a', { a: 'p:queued/1' });
    });
  });

  it('early unsubscribe: an enqueue answered after the unsubscription emits nothing', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a--|', { a: failed('p', 500) });
      expectObservable(src.pipe(queueRetries({ queues: target(ts, []) })), '-!').toBe('--');
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
  });

  it('throwing callback: a queue that throws synchronously abandons the task (settle catches it)', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a|', { a: failed('p', 500) }).pipe(queueRetries({ queues: target(ts, [], { throwing: true }) }), map(brief))).toBe('a|', {
        a: 'p:abandoned Error: queue broken',
      });
    });
  });
});
