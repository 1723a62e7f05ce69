import { describe, it, expect } from 'vitest';
import { catchError, defer, map, Observable, of, takeUntil, timer } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { emptySnapshot } from '../src/domain/merge.js';
import type { PlannedEnvelope } from '../src/operators/build-exports.js';
import { deliverExports, type SettledEnvelope } from '../src/operators/deliver-exports.js';
import type { DeliveryOutcome, ExportJob, ExportSink } from '../src/sinks/types.js';
import type { SourceMessage } from '../src/streams/types.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/** A source message recording the virtual frame of each `working` / `ack` / `nak` call. */
function timedMessage(ts: TestScheduler, seq: number): SourceMessage & { working$: number[] } {
  const working$: number[] = [];
  return {
    data: '',
    key: `test:${seq}`,
    seq,
    receivedAt: 0,
    working$,
    ack: () => {},
    nak: () => {},
    working: () => {
      working$.push(ts.now());
    },
  };
}

/** An export job; its idempotency key `<dataflow>/<profile>/<n>` names it in the tests. */
const job = (dataflowId: string, profileId: string, n: number): ExportJob => ({
  dataflowId,
  destinationId: `dest-${dataflowId}`,
  profileId,
  idempotencyKey: `${dataflowId}/${profileId}/${n}`,
  payload: { n },
});

/** A planned envelope of `msg` with these jobs (decisions and snapshots do not matter here). */
function planned(msg: SourceMessage, jobs: ExportJob[], profileId = 'p-1'): PlannedEnvelope {
  const update = { profileId };
  return {
    msg,
    update,
    applied: { update, before: null, after: emptySnapshot(profileId), replayed: false },
    decisions: jobs.map((j) => ({ dataflowId: j.dataflowId, reasons: ['attribute' as const], entered: [], exited: [] })),
    jobs,
  };
}

const delivered = (j: ExportJob): DeliveryOutcome => ({ status: 'delivered', job: j, attempts: 1, statusCode: 200 });
const failed = (j: ExportJob): DeliveryOutcome => ({ status: 'failed', job: j, attempts: 3, statusCode: 503, code: 'ERR_HTTP_STATUS', error: 'HTTP 503' });

/**
 * Sinks whose `send(job)` returns the observable `answers[job.idempotencyKey]` (a cold
 * observable, so its subscription frames show when the job was sent). `sent` records each
 * `send` call: `<frame> <key>`.
 */
function sinks(ts: TestScheduler, answers: Record<string, Observable<DeliveryOutcome>>) {
  const sent: string[] = [];
  const sink: ExportSink = {
    send(j) {
      sent.push(`${ts.now()} ${j.idempotencyKey}`);
      const answer = answers[j.idempotencyKey];
      if (!answer) throw new Error(`no answer for ${j.idempotencyKey}`);
      return answer;
    },
    close: () => Promise.resolve(),
  };
  return { sent, sinkFor: (_dataflowId: string): ExportSink => sink };
}

/** The settled envelope as `<msg seq>:<outcome statuses>`. */
const brief = (e: SettledEnvelope): string => `${e.msg.seq}:${e.outcomes.map((o) => `${o.job.idempotencyKey}=${o.status}`).join(',')}`;

describe('deliverExports', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     |');
      expectObservable(src.pipe(deliverExports({ sinkFor: sinks(ts, {}).sinkFor, scheduler: ts }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('sends the one job of an envelope and emits the envelope with its outcome once it is settled', () => {
    const ts = scheduler();
    const j = job('flow-1', 'p-1', 1);
    const a = planned(timedMessage(ts, 1), [j]);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     -a|     ', { a });
      const answer = cold<DeliveryOutcome>('   ---(d|) ', { d: delivered(j) });
      const expected = '                      ----(a|)';
      const { sinkFor } = sinks(ts, { [j.idempotencyKey]: answer });
      expectObservable(src.pipe(deliverExports({ sinkFor, scheduler: ts }))).toBe(expected, {
        a: { ...a, outcomes: [delivered(j)] },
      });
      expectSubscriptions(src.subscriptions).toBe('^-!     ');
      expectSubscriptions(answer.subscriptions).toBe('-^--!   ');
    });
  });

  it('sends the jobs of one envelope (its dataflows) in parallel and waits for every one', () => {
    const ts = scheduler();
    const j1 = job('flow-1', 'p-1', 1);
    const j2 = job('flow-2', 'p-1', 1);
    const j3 = job('flow-3', 'p-1', 1);
    const a = planned(timedMessage(ts, 1), [j1, j2, j3]);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     a|     ', { a });
      const slow = cold<DeliveryOutcome>('    -----(d|)', { d: delivered(j1) });
      const fast = cold<DeliveryOutcome>('    -(f|)    ', { f: failed(j2) });
      const mid = cold<DeliveryOutcome>('     ---(d|)  ', { d: delivered(j3) });
      const expected = '                      -----(a|)';
      const { sinkFor } = sinks(ts, { [j1.idempotencyKey]: slow, [j2.idempotencyKey]: fast, [j3.idempotencyKey]: mid });
      // Outcomes in job order, whatever order they settled in.
      expectObservable(src.pipe(deliverExports({ sinkFor, scheduler: ts }), map(brief))).toBe(expected, {
        a: '1:flow-1/p-1/1=delivered,flow-2/p-1/1=failed,flow-3/p-1/1=delivered',
      });
      expectSubscriptions(slow.subscriptions).toBe('^----!   ');
      expectSubscriptions(fast.subscriptions).toBe('^!       ');
      expectSubscriptions(mid.subscriptions).toBe(' ^--!     ');
    });
  });

  it('handles envelopes one at a time in order: a later one is not sent before the earlier settles', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const jb = job('flow-1', 'p-1', 2);
    const jc = job('flow-2', 'p-2', 1);
    const v = { a: planned(timedMessage(ts, 1), [ja]), b: planned(timedMessage(ts, 2), [jb]), c: planned(timedMessage(ts, 3), [jc], 'p-2') };
    let sent: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     abc|        ', v);
      const answerA = cold<DeliveryOutcome>(' ----(d|)    ', { d: delivered(ja) });
      const answerB = cold<DeliveryOutcome>('     --(d|)', { d: delivered(jb) });
      const answerC = cold<DeliveryOutcome>('       -(d|)', { d: delivered(jc) });
      const expected = '                      ----a-b(c|)';
      const double = sinks(ts, { [ja.idempotencyKey]: answerA, [jb.idempotencyKey]: answerB, [jc.idempotencyKey]: answerC });
      const sinkFor = double.sinkFor;
      sent = double.sent;
      expectObservable(src.pipe(deliverExports({ sinkFor, scheduler: ts }), map(brief))).toBe(expected, {
        a: '1:flow-1/p-1/1=delivered',
        b: '2:flow-1/p-1/2=delivered',
        c: '3:flow-2/p-2/1=delivered',
      });
      expectSubscriptions(src.subscriptions).toBe('^--!        ');
      expectSubscriptions(answerA.subscriptions).toBe('^---!       ');
      expectSubscriptions(answerB.subscriptions).toBe('----^-!     ');
      expectSubscriptions(answerC.subscriptions).toBe('------^!    ');
    });
    // `send` itself is only called when the envelope's turn comes.
    expect(sent).toEqual(['0 flow-1/p-1/1', '4 flow-1/p-1/2', '6 flow-2/p-2/1']);
  });

  it('passes an envelope without jobs at once, still in its turn', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const v = { a: planned(timedMessage(ts, 1), [ja]), b: planned(timedMessage(ts, 2), []), c: planned(timedMessage(ts, 3), []) };
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('     -ab-----c|', v);
      const answer = cold<DeliveryOutcome>('   ---(d|)   ', { d: delivered(ja) });
      const expected = '                      ----(ab)c|';
      const { sinkFor } = sinks(ts, { [ja.idempotencyKey]: answer });
      expectObservable(src.pipe(deliverExports({ sinkFor, scheduler: ts }), map(brief))).toBe(expected, {
        a: '1:flow-1/p-1/1=delivered',
        b: '2:',
        c: '3:',
      });
    });
    expect((v.b.msg as ReturnType<typeof timedMessage>).working$).toEqual([]);
  });

  it('calls msg.working() every workingIntervalMs while jobs are pending, and not after', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const jb = job('flow-1', 'p-1', 2);
    const ma = timedMessage(ts, 1);
    const mb = timedMessage(ts, 2);
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('     ab--------------------|', { a: planned(ma, [ja]), b: planned(mb, [jb]) });
      const answerA = cold<DeliveryOutcome>(' -------(d|)             ', { d: delivered(ja) });
      const answerB = cold<DeliveryOutcome>('        --(d|)', { d: delivered(jb) });
      const expected = '                      -------a-b------------|';
      const { sinkFor } = sinks(ts, { [ja.idempotencyKey]: answerA, [jb.idempotencyKey]: answerB });
      expectObservable(src.pipe(deliverExports({ sinkFor, workingIntervalMs: 3, scheduler: ts }), map(brief))).toBe(expected, {
        a: '1:flow-1/p-1/1=delivered',
        b: '2:flow-1/p-1/2=delivered',
      });
    });
    // a pending 0..7: at 3 and 6; b pending 7..9: never a full interval.
    expect(ma.working$).toEqual([3, 6]);
    expect(mb.working$).toEqual([]);
  });

  it('keeps calling msg.working() on the default asyncScheduler (virtual in run mode)', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const ma = timedMessage(ts, 1);
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('     a|', { a: planned(ma, [ja]) });
      const answer = cold<DeliveryOutcome>('  25s (d|)', { d: delivered(ja) });
      const { sinkFor } = sinks(ts, { [ja.idempotencyKey]: answer });
      expectObservable(src.pipe(deliverExports({ sinkFor }), map(brief))).toBe('25s (a|)', { a: '1:flow-1/p-1/1=delivered' });
    });
    // @default 10000
    expect(ma.working$).toEqual([10_000, 20_000]);
  });

  it('errors when a sink errors, unsubscribing the other jobs, the keep-alive and the source', () => {
    const ts = scheduler();
    const j1 = job('flow-1', 'p-1', 1);
    const j2 = job('flow-2', 'p-1', 1);
    const ma = timedMessage(ts, 1);
    const boom = new Error('sink broke its contract');
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     -a---b--|', { a: planned(ma, [j1, j2]), b: planned(timedMessage(ts, 2), []) });
      const slow = cold<DeliveryOutcome>('     ----------(d|)', { d: delivered(j1) });
      const failing = cold<DeliveryOutcome>('  -----#', undefined, boom);
      const expected = '                      ------#  ';
      const { sinkFor } = sinks(ts, { [j1.idempotencyKey]: slow, [j2.idempotencyKey]: failing });
      expectObservable(src.pipe(deliverExports({ sinkFor, workingIntervalMs: 2, scheduler: ts }))).toBe(expected, undefined, boom);
      expectSubscriptions(src.subscriptions).toBe('^-----!  ');
      expectSubscriptions(slow.subscriptions).toBe('-^----!  ');
      expectSubscriptions(failing.subscriptions).toBe('-^----!  ');
    });
    expect(ma.working$).toEqual([3, 5]);
  });

  it('errors when sinkFor throws (no sink for the dataflow)', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const jx = job('flow-404', 'p-1', 1);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     a-x-|', { a: planned(timedMessage(ts, 1), [ja]), x: planned(timedMessage(ts, 2), [jx]) });
      const answer = cold<DeliveryOutcome>('  -(d|)', { d: delivered(ja) });
      const expected = '                      -a#  ';
      const sinkFor = (id: string): ExportSink => {
        if (id === 'flow-404') throw new Error('no sink for dataflow flow-404');
        return { send: () => answer, close: () => Promise.resolve() };
      };
      expectObservable(src.pipe(deliverExports({ sinkFor, scheduler: ts }), map(brief))).toBe(
        expected,
        { a: '1:flow-1/p-1/1=delivered' },
        new Error('no sink for dataflow flow-404'),
      );
      expectSubscriptions(src.subscriptions).toBe('^-!  ');
    });
  });

  it('passes a source error through, abandoning the jobs in flight', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const ma = timedMessage(ts, 1);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     a--#', { a: planned(ma, [ja]) }, new Error('source down'));
      const answer = cold<DeliveryOutcome>('  -----(d|)', { d: delivered(ja) });
      const expected = '                      ---#';
      const { sinkFor } = sinks(ts, { [ja.idempotencyKey]: answer });
      expectObservable(src.pipe(deliverExports({ sinkFor, workingIntervalMs: 2, scheduler: ts }))).toBe(expected, undefined, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^--!');
      expectSubscriptions(answer.subscriptions).toBe('^--!');
    });
    expect(ma.working$).toEqual([2]);
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     -a-b-', { a: planned(timedMessage(ts, 1), [ja]), b: planned(timedMessage(ts, 2), []) });
      const answer = cold<DeliveryOutcome>('   -(d|)', { d: delivered(ja) });
      const expected = '                      --ab-';
      const { sinkFor } = sinks(ts, { [ja.idempotencyKey]: answer });
      expectObservable(src.pipe(deliverExports({ sinkFor, scheduler: ts }), map(brief))).toBe(expected, {
        a: '1:flow-1/p-1/1=delivered',
        b: '2:',
      });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source, the pending jobs and the keep-alive when unsubscribed early', () => {
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const jb = job('flow-1', 'p-1', 2);
    const ma = timedMessage(ts, 1);
    const mb = timedMessage(ts, 2);
    const answers: Record<string, Observable<DeliveryOutcome>> = {};
    const { sinkFor, sent } = sinks(ts, answers);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<PlannedEnvelope>('     ab------|', { a: planned(ma, [ja]), b: planned(mb, [jb]) });
      const answer = cold<DeliveryOutcome>('  ------(d|)', { d: delivered(ja) });
      const unsub = '                         -----!   ';
      const expected = '                      -----    ';
      answers[ja.idempotencyKey] = answer;
      const out = src.pipe(deliverExports({ sinkFor, workingIntervalMs: 2, scheduler: ts }));
      expectObservable(out, unsub).toBe(expected);
      expectSubscriptions(src.subscriptions).toBe('^----!   ');
      expectSubscriptions(answer.subscriptions).toBe('^----!   ');
    });
    // b never reached its sink; no keep-alive after the unsubscription (frames 2, 4 only).
    expect(sent).toEqual(['0 flow-1/p-1/1']);
    expect(ma.working$).toEqual([2, 4]);
    expect(mb.working$).toEqual([]);
  });

  it('sends each job once when the sink answers synchronously', () => {
    // A sink's `send` is a cold Observable: every subscription is one more HTTP request.
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const jb = job('flow-2', 'p-1', 1);
    const subscriptions: string[] = [];
    const sinkFor = (): ExportSink => ({
      send: (j) =>
        defer(() => {
          subscriptions.push(j.idempotencyKey);
          return of(delivered(j));
        }),
      close: () => Promise.resolve(),
    });
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('     -a|', { a: planned(timedMessage(ts, 1), [ja, jb]) });
      const expected = '                      -a|';
      expectObservable(src.pipe(deliverExports({ sinkFor, scheduler: ts }), map(brief))).toBe(expected, {
        a: '1:flow-1/p-1/1=delivered,flow-2/p-1/1=delivered',
      });
    });
    expect(subscriptions).toEqual(['flow-1/p-1/1', 'flow-2/p-1/1']);
  });

  it('does not keep an envelope pending forever when a sink completes without an outcome', () => {
    // `send` must emit one outcome; one that completes empty breaks that contract. The
    // envelope must not hang (never acked, never nak'ed, working() forever): like rateLimit
    // for a limiter that completes without a permit, the output errors.
    const ts = scheduler();
    const ja = job('flow-1', 'p-1', 1);
    const ma = timedMessage(ts, 1);
    ts.run(({ cold, expectObservable }) => {
      const src = cold<PlannedEnvelope>('     a----------|', { a: planned(ma, [ja]) });
      const answer = cold<DeliveryOutcome>('  ---|');
      const expected = '                      ---(E|)     ';
      const { sinkFor } = sinks(ts, { [ja.idempotencyKey]: answer });
      const out = src.pipe(
        deliverExports({ sinkFor, workingIntervalMs: 2, scheduler: ts }),
        map(brief),
        catchError(() => of('E')),
        // A bound, so that a hanging envelope fails this test instead of looping forever.
        takeUntil(timer(20, ts)),
      );
      expectObservable(out).toBe(expected);
    });
    expect(ma.working$).toEqual([2]);
  });
});
