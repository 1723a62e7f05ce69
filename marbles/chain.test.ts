/**
 * The composed chain (`exportPipeline`, what `http-destination run` executes) in virtual
 * time: in-memory store, sink and limiter fakes whose answers arrive on the TestScheduler.
 */
import { describe, it, expect } from 'vitest';
import { map, Observable, type Subscriber } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { applyUpdate } from '../src/domain/merge.js';
import type { DataflowRules, ProfileSnapshot, ProfileUpdate } from '../src/domain/types.js';
import { DeliveryError, EventRejectedError, StoreError } from '../src/errors.js';
import { createLogger } from '../src/observability/logger.js';
import { Metrics } from '../src/observability/metrics.js';
import type { SettledEnvelope } from '../src/operators/deliver-exports.js';
import type { ExportFilter } from '../src/operators/filter-exports.js';
import type { DeliveryOutcome, ExportJob, ExportSink, RejectedEvent, RejectedEventStore } from '../src/sinks/types.js';
import { tokenBucket } from '../src/stores/memory-rate-limiter.js';
import type { RateLimiter } from '../src/stores/rate-limiter.js';
import type { ApplyResult, SnapshotStore } from '../src/stores/types.js';
import type { SourceMessage } from '../src/streams/types.js';
import { exportPipeline, type PipelineOptions } from '../src/worker/pipeline.js';

type Log = string[];

/** A thenable settling `delay` frames from now (0: at once, inside `then`): Promises would settle outside virtual time. */
function later<T>(ts: TestScheduler, delay: number, work: () => T): Promise<T> {
  const thenable = {
    then(resolve: (v: T) => void, reject: (e: unknown) => void) {
      const settle = (): void => {
        let v: T;
        try {
          v = work();
        } catch (err) {
          return reject(err);
        }
        resolve(v);
      };
      if (delay > 0) ts.schedule(settle, delay);
      else settle();
      return thenable;
    },
  };
  return thenable as unknown as Promise<T>;
}

/** A store: apply merges after `applyDelay` frames; `fails(profileId, n)` makes the n-th apply of a profile throw. */
function store(
  ts: TestScheduler,
  log: Log,
  opts: { applyDelay?: number; fails?: (profileId: string, n: number) => unknown; malformed?: (profileId: string) => boolean } = {},
): SnapshotStore {
  const snapshots = new Map<string, ProfileSnapshot>();
  const applies = new Map<string, number>();
  const unused = (): never => {
    throw new Error('not used');
  };
  return {
    apply(update: ProfileUpdate) {
      const n = (applies.get(update.profileId) ?? 0) + 1;
      applies.set(update.profileId, n);
      log.push(`${ts.now()} apply ${update.eventId}`);
      return later(ts, opts.applyDelay ?? 1, (): ApplyResult => {
        const err = opts.fails?.(update.profileId, n);
        if (err) throw err;
        const before = snapshots.get(update.profileId) ?? null;
        const after = applyUpdate(before, update);
        snapshots.set(update.profileId, after);
        // A malformed result: the pure steps after it meet a TypeError (a bug on this event's data).
        if (opts.malformed?.(update.profileId)) return { update, before, after: null as unknown as ProfileSnapshot, replayed: false };
        return { update, before, after, replayed: false };
      });
    },
    confirm(_profileId, key) {
      log.push(`${ts.now()} confirm ${key}`);
      return later(ts, 1, () => undefined);
    },
    get: (id) => later(ts, 0, () => snapshots.get(id) ?? null),
    members: unused,
    scanMembers: unused,
    beginBackfill: unused,
    getBackfill: unused,
    setBackfill: unused,
    close: () => Promise.resolve(),
  };
}

/** A sink: an attempt answers `status(eventId, n)` after `delay` frames; cancellations and failed records are logged. */
function sink(ts: TestScheduler, log: Log, opts: { delay?: number; status?: (eventId: string, n: number) => number; failStore?: boolean } = {}): ExportSink {
  const counts = new Map<string, number>();
  const eventOf = (job: ExportJob): string => String((job.payload as { e?: string }).e ?? job.profileId);
  return {
    retryDelays: { minDelayMs: 10, maxDelayMs: 40, retryAfterMaxMs: 40 },
    attempt(job, cancellation) {
      const e = eventOf(job);
      const n = (counts.get(e) ?? 0) + 1;
      counts.set(e, n);
      log.push(`${ts.now()} send ${e}#${n}`);
      const status = opts.status?.(e, n) ?? 200;
      const p = later(ts, opts.delay ?? 2, () => {
        if (cancellation.cancelled) throw new Error('cancelled');
        if (status >= 300) throw new DeliveryError('ERR_HTTP_STATUS', `HTTP ${status}`, { retryable: status >= 500, statusCode: status });
        return { statusCode: status };
      });
      cancellation.attach({ cancel: () => log.push(`${ts.now()} cancel ${e}#${n}`) });
      return p;
    },
    fail(job, attempts, err) {
      log.push(`${ts.now()} fail ${eventOf(job)} after ${attempts}`);
      if (opts.failStore) return later(ts, 0, () => { throw new StoreError('failed-request store down'); });
      const o: DeliveryOutcome = { status: 'failed', job, attempts, code: 'ERR_HTTP_STATUS', error: String(err) };
      return later(ts, 0, () => o);
    },
    close: () => Promise.resolve(),
  };
}

function rejectedStore(ts: TestScheduler, log: Log): RejectedEventStore & { records: RejectedEvent[] } {
  const records: RejectedEvent[] = [];
  return {
    records,
    put: (r) => later(ts, 0, () => {
      records.push(r);
      log.push(`${ts.now()} rejected ${r.sourceKey} ${r.code}`);
    }),
    list: () => Promise.resolve(records),
    close: () => Promise.resolve(),
  };
}

/** The message of event `e` (profile `p`), recording ack / nak with their frame. */
function message(ts: TestScheduler, log: Log, seq: number, update: ProfileUpdate): SourceMessage {
  return {
    data: JSON.stringify(update),
    key: `m${seq}`,
    seq,
    receivedAt: 0,
    ack: () => log.push(`${ts.now()} ack ${update.eventId}`),
    nak: () => log.push(`${ts.now()} nak ${update.eventId}`),
    working: () => {},
  };
}

/** flow-1 maps aud-1 and the attribute `e` (so every update of a member exports, its payload naming the event). */
const dataflows: Array<DataflowRules & { filter?: ExportFilter }> = [
  { id: 'flow-1', destinationId: 'd', audiences: [{ id: 'aud-1', mappingCreatedAt: 0, mappingUpdatedAt: 0 }], attributes: ['e'], includeSegmentNames: false, includeSegmentTimestamps: false },
];
const audiences = [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp', createdAt: 0, updatedAt: 0, origin: 'segmentation' as const }];
/** Event `e` of profile `p`: joins aud-1 and writes attribute e = its id. */
const ev = (e: string, p: string, extra: Partial<ProfileUpdate> = {}): ProfileUpdate => ({
  profileId: p,
  eventId: e,
  attributes: { e },
  segmentMembership: { ups: { 'aud-1': { status: 'realized' } } },
  ...extra,
});

function setup(ts: TestScheduler, log: Log, over: Partial<PipelineOptions> = {}, limiter?: RateLimiter) {
  const metrics = new Metrics();
  const rejected = rejectedStore(ts, log);
  const options: PipelineOptions = {
    dataflows,
    audiences,
    store: store(ts, log),
    rejected,
    sinkFor: () => sink(ts, log),
    limiterFor: () => limiter ?? tokenBucket({ rate: 10_000, burst: 100, scheduler: ts }),
    metrics,
    logger: createLogger({ level: 'silent' }),
    concurrency: 16,
    maxEventBytes: 65_536,
    scheduler: ts,
    random: () => 1,
    ...over,
  };
  return { options, metrics, rejected };
}

const scheduler = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));
const outcome = (e: SettledEnvelope): string => (e.fault ? `${e.update.eventId}!${e.fault.kind}` : `${e.update.eventId}:${e.outcomes.map((o) => o.status).join(',')}`);

describe('the chain (exportPipeline) in virtual time', () => {
  it('keeps one profile in order while its export backs off, runs other profiles meanwhile, confirms before it acks', () => {
    const ts = scheduler();
    const log: Log = [];
    const s = sink(ts, log, { status: (e, n) => (e === 'a1' && n === 1 ? 503 : 200) });
    const { options } = setup(ts, log, { sinkFor: () => s });
    ts.run(({ cold, expectObservable }) => {
      const msgs = { x: message(ts, log, 1, ev('a1', 'p-A')), y: message(ts, log, 2, ev('b1', 'p-B')), z: message(ts, log, 3, ev('a2', 'p-A')) };
      const out = cold<SourceMessage>('xyz|', msgs).pipe(exportPipeline(options), map(outcome));
      // b1: apply 1–2, send 2–4, confirm 4–5, ack 5. a1: 503 at 3, retry after 10 → 13–15, ack 16; then a2.
      expectObservable(out).toBe('-----b---------- a---(c|)', { a: 'a1:delivered', b: 'b1:delivered', c: 'a2:delivered' });
    });
    expect(log).toEqual([
      '0 apply a1',
      '1 apply b1',
      '1 send a1#1',
      '2 send b1#1',
      '4 confirm m2',
      '5 ack b1',
      '13 send a1#2',
      '15 confirm m1',
      '16 ack a1',
      '16 apply a2',
      '17 send a2#1',
      '19 confirm m3',
      '20 ack a2',
    ]);
  });

  it('holds exports to the rate limit (an operator of the chain), for first attempts and retries alike', () => {
    const ts = scheduler();
    const log: Log = [];
    const s = sink(ts, log, { status: (e, n) => (e === 'c' && n === 1 ? 503 : 200) });
    const { options } = setup(ts, log, { sinkFor: () => s }, tokenBucket({ rate: 100, burst: 1, scheduler: ts }));
    ts.run(({ cold, expectObservable }) => {
      const msgs = { a: message(ts, log, 1, ev('a', 'p-1')), b: message(ts, log, 2, ev('b', 'p-2')), c: message(ts, log, 3, ev('c', 'p-3')) };
      expectObservable(cold<SourceMessage>('abc|', msgs).pipe(exportPipeline(options), map(() => 'x'))).toBe('----x 9ms x 21ms (x|)');
    });
    // one slot per 10 ms: a at 1, b at 11, c at 21; c's retry waits 10 ms, then its slot (31).
    expect(log.filter((l) => l.includes('send'))).toEqual(['1 send a#1', '11 send b#1', '21 send c#1', '33 send c#2']);
  });

  it('retries a failing store step in place: that profile waits, the others go on; counted as store errors', () => {
    const ts = scheduler();
    const log: Log = [];
    const { options, metrics } = setup(ts, log, {
      store: store(ts, log, { fails: (p, n) => (p === 'p-bad' && n <= 2 ? new StoreError('redis down') : undefined) }),
      storeRetryMaxMs: 1_000,
    });
    ts.run(({ cold, expectObservable }) => {
      const msgs = { x: message(ts, log, 1, ev('x1', 'p-bad')), o: message(ts, log, 2, ev('ok', 'p-ok')) };
      const out = cold<SourceMessage>('xo|', msgs).pipe(exportPipeline(options), map(outcome));
      // x1: fails at 1 (waits 200), fails at 202 (waits 400), applies 602–603, sends 603–605, acked 606.
      expectObservable(out).toBe('-----o 600ms (x|)', { o: 'ok:delivered', x: 'x1:delivered' });
    });
    expect(log.filter((l) => l.includes('apply x1'))).toEqual(['0 apply x1', '201 apply x1', '602 apply x1']);
    expect(metrics.storeErrors).toBe(2);
  });

  it('naks a message whose export cannot be settled (the failed-request store refuses), and goes on', () => {
    const ts = scheduler();
    const log: Log = [];
    const s = sink(ts, log, { status: (e) => (e === 'bad' ? 400 : 200), failStore: true });
    const { options, metrics } = setup(ts, log, { sinkFor: () => s });
    ts.run(({ cold, expectObservable }) => {
      const msgs = { b: message(ts, log, 1, ev('bad', 'p-1')), g: message(ts, log, 2, ev('good', 'p-2')) };
      expectObservable(cold<SourceMessage>('bg|', msgs).pipe(exportPipeline(options), map(outcome))).toBe('---b-(g|)', {
        b: 'bad!unsettled',
        g: 'good:delivered',
      });
    });
    expect(log).toContain('3 fail bad after 1');
    expect(log).toContain('3 nak bad');
    expect(log.some((l) => l.includes('ack bad') || l.includes('confirm m1'))).toBe(false);
    expect(metrics.inFlight).toBe(0);
  });

  it('rejects a poison event (the merge throws EventRejectedError; a pure step throws a TypeError) and acks it; the rest flows with maxInFlight 2', () => {
    const ts = scheduler();
    const log: Log = [];
    const { options, metrics, rejected } = setup(ts, log, {
      concurrency: 2,
      store: store(ts, log, {
        fails: (p) => (p === 'p-proto' ? new EventRejectedError('ERR_EVENT_SHAPE', 'attributes: "__proto__" is not allowed') : undefined),
        malformed: (p) => p === 'p-bug',
      }),
    });
    ts.run(({ cold, expectObservable }) => {
      const msgs = {
        p: message(ts, log, 1, ev('proto', 'p-proto')),
        q: message(ts, log, 2, ev('q', 'p-q')),
        r: message(ts, log, 3, ev('r', 'p-r')),
        s: message(ts, log, 4, ev('s', 'p-s')),
        b: message(ts, log, 5, ev('bug', 'p-bug')),
      };
      const out = cold<SourceMessage>('pqrbs|', msgs).pipe(exportPipeline(options), map(outcome));
      expectObservable(out).toBe('-p---qrb--(s|)', { p: 'proto!rejected', q: 'q:delivered', r: 'r:delivered', s: 's:delivered', b: 'bug!rejected' });
    });
    expect(rejected.records.map((r) => [r.sourceKey, r.code, r.reason.slice(0, 40)])).toEqual([
      ['m1', 'ERR_EVENT_SHAPE', 'attributes: "__proto__" is not allowed'],
      ['m5', 'ERR_EVENT_SHAPE', 'event: could not be processed (detect: T'],
    ]);
    expect(log).toContain('1 ack proto');
    expect(log.filter((l) => l.includes('ack bug'))).toHaveLength(1);
    expect(metrics.eventsRejected).toBe(2);
    expect(metrics.inFlight).toBe(0);
  });

  it('cancels sends in flight and backoff timers when unsubscribed (shutdown), and acks nothing more', () => {
    const ts = scheduler();
    const log: Log = [];
    const s = sink(ts, log, { delay: 50, status: (e) => (e === 'r' ? 503 : 200) });
    const { options } = setup(ts, log, {
      sinkFor: () => s,
      store: store(ts, log, { fails: (p) => (p === 'p-down' ? new StoreError('redis down') : undefined) }),
    });
    ts.run(({ cold, expectObservable }) => {
      const msgs = { s: message(ts, log, 1, ev('slow', 'p-1')), d: message(ts, log, 2, ev('down', 'p-down')) };
      expectObservable(cold<SourceMessage>('sd|', msgs).pipe(exportPipeline(options)), '--- 30ms !').toBe('-');
    });
    // the send in flight was cancelled at 33; the store step's retry (due at 202) never ran.
    expect(log).toEqual(['0 apply slow', '1 apply down', '1 send slow#1', '33 cancel slow#1']);
  });

  it('a dataflow filter skips the export of a profile it does not select: acked at once, counted as excluded', () => {
    const ts = scheduler();
    const log: Log = [];
    const { options, metrics } = setup(ts, log, { dataflows: [{ ...dataflows[0]!, filter: { attribute: 'country', equals: 'FR' } }] });
    ts.run(({ cold, expectObservable }) => {
      const msgs = { f: message(ts, log, 1, ev('fr', 'p-1', { attributes: { e: 'fr', country: 'FR' } })), d: message(ts, log, 2, ev('de', 'p-2', { attributes: { e: 'de', country: 'DE' } })) };
      expectObservable(cold<SourceMessage>('fd|', msgs).pipe(exportPipeline(options), map(outcome))).toBe('---d(f|)', { f: 'fr:delivered', d: 'de:' });
    });
    expect(log.filter((l) => l.includes('send'))).toEqual(['1 send fr#1']);
    expect(metrics.flow('flow-1')).toMatchObject({ received: 2, excluded: 1, delivered: 1 });
  });

  // The sink checks a send permit's age from the moment `attempt` is called (src/sinks/http/sink.ts):
  // that holds only while nothing asynchronous sits between `rateLimit` and `attemptExports`.
  it.each([
    ['inline retries', false],
    ['retry queues', true],
  ])('calls the attempt in the same call stack as the limiter grants its slot (%s: rateLimit directly before attemptExports)', (_name, queued) => {
    const ts = scheduler();
    const log: Log = [];
    const waiting: Array<Subscriber<void>> = [];
    const limiter: RateLimiter = { acquire: () => new Observable<void>((s) => void waiting.push(s)), tryAcquire: () => false };
    const queues = {
      isQueued: () => false,
      backingOff: () => false,
      enqueue: () => later(ts, 0, () => undefined),
      succeeded: () => {},
    };
    const marks = { record: () => later(ts, 0, () => undefined) };
    const { options } = setup(ts, log, queued ? { retryQueue: { queues, marks } } : {}, limiter);
    const atGrant: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const msgs = { a: message(ts, log, 1, ev('a', 'p-1')), b: message(ts, log, 2, ev('b', 'p-2')) };
      const grant = (): void => {
        const sends = log.filter((l) => l.includes('send')).length;
        waiting.shift()!.next();
        // Nothing may run between the grant and the attempt: the send is logged before `next` returns.
        atGrant.push(`${sends}→${log.filter((l) => l.includes('send')).length}`);
      };
      ts.schedule(grant, 5);
      ts.schedule(grant, 8);
      expectObservable(cold<SourceMessage>('ab|', msgs).pipe(exportPipeline(options), map(() => 'x'))).toBe('--------x 2ms (x|)');
    });
    expect(atGrant).toEqual(['0→1', '1→2']);
    expect(log.filter((l) => l.includes('send'))).toEqual(['5 send a#1', '8 send b#1']);
  });
});

