/**
 * `queueBehind`: version stamps, and the tasks that must wait in the retry queue (their
 * profile has a queued export, or their dataflow's endpoint is failing) — in virtual time.
 */
import { describe, expect, it } from 'vitest';
import { map } from 'rxjs';
import { StoreError } from '../src/errors.js';
import type { ExportTask } from '../src/operators/deliver-exports.js';
import { queueBehind, type QueueBehindTarget } from '../src/operators/queue-behind.js';
import { brief, later, scheduler, task } from './queue-stages.support.js';
import type { TestScheduler } from 'rxjs/testing';

/** A queue whose `enqueue` answers 2 frames later; `queued` profiles and `failing` dataflows as given. */
function target(ts: TestScheduler, log: string[], o: { queued?: string[]; failing?: string[]; storeDown?: boolean; throwing?: boolean } = {}): QueueBehindTarget {
  return {
    isQueued: (_f, p) => {
      if (o.throwing) throw new Error('index broken');
      return (o.queued ?? []).includes(p);
    },
    backingOff: (f) => (o.failing ?? []).includes(f),
    enqueue: (j, attempts) => {
      log.push(`${ts.now()} enqueue ${j.profileId}/${attempts} v${j.version}`);
      return later(ts, 2, () => {
        if (o.storeDown) throw new StoreError('queue store down');
      });
    },
  };
}

describe('queueBehind', () => {
  it('empty: completes with the source, nothing queued', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('---|');
      expectObservable(src.pipe(queueBehind({ queues: target(ts, log), scheduler: ts }))).toBe('---|');
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
    expect(log).toEqual([]);
  });

  it('one: a task of an unqueued profile passes at once, synchronously, with a version stamped', () => {
    const ts = scheduler();
    const t = task('p1');
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a|', { a: t }).pipe(queueBehind({ queues: target(ts, []), scheduler: ts }), map(brief))).toBe('a|', { a: 'p1:open' });
    });
    expect(t.job.version).toBe(0 * 1000 + 1);
  });

  it('many: behind a queued profile, or for a failing dataflow, a task is queued (outcome queued); versions strictly increase', () => {
    const ts = scheduler();
    const log: string[] = [];
    const a = task('free');
    const b = task('behind');
    const c = task('other-flow', { job: { ...task('x').job, dataflowId: 'down', profileId: 'x' } });
    const d = task('done', { outcome: { status: 'delivered', job: task('done').job, attempts: 1, statusCode: 200 } });
    ts.run(({ cold, expectObservable }) => {
      const src = cold<ExportTask>('a(bc)---d|', { a, b, c, d });
      expectObservable(src.pipe(queueBehind({ queues: target(ts, log, { queued: ['behind'], failing: ['down'] }), scheduler: ts }), map(brief))).toBe('a--(bc)-d|', {
        a: 'free:open',
        b: 'behind:queued/0',
        c: 'x:queued/0',
        d: 'done:delivered/1',
      });
    });
    expect(log).toEqual(['1 enqueue behind/0 v1000', '1 enqueue x/0 v1001']);
    expect([a.job.version, b.job.version, c.job.version]).toEqual([1, 1000, 1001]);
    expect(d.job.version).toBeUndefined();
  });

  it('error: a source error passes through; a queue that cannot store abandons the task (its message is nak\'ed)', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a-#', { a: task('behind') }).pipe(queueBehind({ queues: target(ts, [], { queued: ['behind'] }), scheduler: ts }), map(brief))).toBe('--#');
      expectObservable(cold<ExportTask>('a|', { a: task('behind') }).pipe(queueBehind({ queues: target(ts, [], { queued: ['behind'], storeDown: true }), scheduler: ts }), map(brief))).toBe('--(a|)', {
        a: 'behind:abandoned ERR_STORE',
      });
    });
  });

  it('never-ending: does not complete while the source does not', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a-', { a: task('p') }).pipe(queueBehind({ queues: target(ts, []), scheduler: ts }), map(brief))).toBe('a-', { a: 'p:open' });
    });
  });

  it('early unsubscribe: an enqueue answered after the unsubscription emits nothing', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<ExportTask>('a---|', { a: task('behind') });
      expectObservable(src.pipe(queueBehind({ queues: target(ts, log, { queued: ['behind'] }), scheduler: ts })), '-!').toBe('--');
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
    expect(log).toEqual(['0 enqueue behind/0 v1']);
  });

  it('throwing callback: an index that throws errors the output', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<ExportTask>('a|', { a: task('p') }).pipe(queueBehind({ queues: target(ts, [], { throwing: true }), scheduler: ts }))).toBe('#', undefined, new Error('index broken'));
    });
  });
});
