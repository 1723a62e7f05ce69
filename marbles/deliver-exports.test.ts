import { describe, it, expect } from 'vitest';
import { map, mergeMap, NEVER, timer, type MonoTypeOperatorFunction } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { emptySnapshot } from '../src/domain/merge.js';
import type { PlannedEnvelope } from '../src/operators/build-exports.js';
import { deliverExports, type ExportTask, type SettledEnvelope } from '../src/operators/deliver-exports.js';
import type { ExportJob } from '../src/sinks/types.js';
import { fakeMessage } from '../test/support/messages.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/** An export job; its idempotency key `<dataflow>/<profile>` names it in the tests. */
const job = (dataflowId: string, profileId: string): ExportJob => ({
  dataflowId,
  destinationId: `dest-${dataflowId}`,
  profileId,
  idempotencyKey: `${dataflowId}/${profileId}`,
  payload: {},
});

/** A planned envelope of message `seq` with jobs for these dataflows. */
function planned(seq: number, flows: string[], profileId = `p-${seq}`): PlannedEnvelope {
  const update = { profileId };
  return {
    msg: fakeMessage('', seq),
    update,
    applied: { update, before: null, after: emptySnapshot(profileId), replayed: false },
    decisions: flows.map((dataflowId) => ({ dataflowId, reasons: ['attribute' as const], entered: [], exited: [] })),
    jobs: flows.map((f) => job(f, profileId)),
  };
}

/**
 * A stage that settles each task `delays[dataflowId]` frames later (delivered), or leaves it
 * open when the delay is negative. `seen` records `<frame> <key>` of each task it got.
 */
function settleAfter(ts: TestScheduler, delays: Record<string, number>, seen: string[] = []): MonoTypeOperatorFunction<ExportTask> {
  return mergeMap((task) => {
    seen.push(`${ts.now()} ${task.job.idempotencyKey}`);
    const d = delays[task.job.dataflowId] ?? 0;
    return timer(Math.max(0, d)).pipe(
      map(() => {
        if (d >= 0) task.outcome = { status: 'delivered', job: task.job, attempts: 1, statusCode: 200 };
        return task;
      }),
    );
  });
}

/** `<seq>:<outcome statuses>` or `<seq>!<fault kind>`. */
const brief = (e: SettledEnvelope): string =>
  e.fault ? `${e.msg.seq}!${e.fault.kind}` : `${e.msg.seq}:${e.outcomes.map((o) => `${o.job.dataflowId}=${o.status}`).join(',')}`;

describe('deliverExports', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('|');
      expectObservable(src.pipe(deliverExports(settleAfter(ts, {})))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('sends one envelope\'s jobs through the stages at once and emits it when every job is settled', () => {
    const ts = scheduler();
    const seen: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('a|', { a: planned(1, ['f1', 'f2']) });
      expectObservable(src.pipe(deliverExports(settleAfter(ts, { f1: 3, f2: 1 }, seen)), map(brief))).toBe('---(a|)', {
        a: '1:f1=delivered,f2=delivered',
      });
    });
    expect(seen).toEqual(['0 f1/p-1', '0 f2/p-1']);
  });

  it('many envelopes run concurrently and go on in the order they settle; one without jobs goes on at once', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('ab-c|', { a: planned(1, ['slow']), b: planned(2, ['fast']), c: planned(3, []) });
      expectObservable(src.pipe(deliverExports(settleAfter(ts, { slow: 5, fast: 1 })), map(brief))).toBe('--bc-(a|)', {
        a: '1:slow=delivered',
        b: '2:fast=delivered',
        c: '3:',
      });
    });
  });

  it('faults an envelope whose task comes back unsettled (its other tasks still finish); a faulted envelope passes at once', () => {
    const ts = scheduler();
    const faulted = planned(2, ['f1']);
    faulted.fault = { kind: 'rejected', error: new (class extends Error {})() as never };
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('ab|', { a: planned(1, ['ok', 'lost']), b: faulted });
      expectObservable(src.pipe(deliverExports(settleAfter(ts, { ok: 2, lost: -1 })), map(brief))).toBe('-b(a|)', {
        a: '1!unsettled',
        b: '2!rejected',
      });
    });
  });

  it('passes an error of a stage through and unsubscribes the source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('a-b|', { a: planned(1, ['f1']), b: planned(2, ['f1']) });
      const failing: MonoTypeOperatorFunction<ExportTask> = mergeMap(() => {
        throw new Error('stage broke');
      });
      expectObservable(src.pipe(deliverExports(failing))).toBe('#', undefined, new Error('stage broke'));
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('passes a source error through', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('a#', { a: planned(1, []) }, new Error('source down'));
      expectObservable(src.pipe(deliverExports(settleAfter(ts, {})), map(brief))).toBe('a#', { a: '1:' }, new Error('source down'));
    });
  });

  it('stays open on a never-ending source, and waits for tasks that never come back', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('a|', { a: planned(1, ['f1']) });
      expectObservable(src.pipe(deliverExports(mergeMap(() => NEVER)))).toBe('-');
      expectObservable(cold<PlannedEnvelope>('-').pipe(deliverExports(settleAfter(ts, {})))).toBe('-');
    });
  });

  it('unsubscribing early unsubscribes the source and the stages (cancelling sends and timers)', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('a|', { a: planned(1, ['f1']) });
      const inner = cold<ExportTask>('-----x');
      const stage: MonoTypeOperatorFunction<ExportTask> = mergeMap(() => inner);
      expectObservable(src.pipe(deliverExports(stage)), '--!').toBe('--');
      expectSubscriptions(src.subscriptions).toBe('^!');
      expectSubscriptions(inner.subscriptions).toBe('^-!');
    });
  });
});
