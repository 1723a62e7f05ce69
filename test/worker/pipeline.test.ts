import { describe, expect, it } from 'vitest';
import { defer, EMPTY, from, lastValueFrom, map, Observable, tap, timer, toArray } from 'rxjs';
import { idempotencyKey } from '../../src/domain/keys.js';
import type { Audience, DataflowRules, MembershipStatus, ProfileUpdate } from '../../src/domain/types.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { SettledEnvelope } from '../../src/operators/deliver-exports.js';
import type { Envelope } from '../../src/streams/envelope.js';
import type { DeliveryOutcome, ExportJob, ExportSink, RejectedEvent, RejectedEventStore } from '../../src/sinks/types.js';
import { MemorySnapshotStore } from '../../src/stores/memory-snapshot-store.js';
import type { ApplyContext, ApplyResult } from '../../src/stores/types.js';
import { backfillId, backfillSource } from '../../src/streams/backfill.js';
import type { SourceMessage } from '../../src/streams/types.js';
import { exportPipeline, type PipelineOptions } from '../../src/worker/pipeline.js';
import { EventRejectedError, FencedError, StoreError } from '../../src/errors.js';
import { fakeMessage, type FakeMessage } from '../support/messages.js';
import { fakeSink, openLimiter } from '../support/sinks.js';

const audiences: Audience[] = [
  { id: 'aud-1', name: 'Audience one', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'segmentation' },
  { id: 'aud-2', name: 'Audience two', mergePolicyId: 'mp-1', createdAt: 3, updatedAt: 4, origin: 'segmentation' },
];

/** flow-1 maps aud-1 and the first name; flow-2 maps aud-2 and the email address. */
const dataflows: DataflowRules[] = [
  {
    id: 'flow-1',
    destinationId: 'dest-1',
    audiences: [{ id: 'aud-1', mappingCreatedAt: 10, mappingUpdatedAt: 11 }],
    attributes: ['person.name.firstName'],
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
  },
  {
    id: 'flow-2',
    destinationId: 'dest-2',
    audiences: [{ id: 'aud-2', mappingCreatedAt: 20, mappingUpdatedAt: 21 }],
    attributes: ['personalEmail.address'],
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
  },
];

/** One timeline for sinks and messages: `send <tag> <flow>`, `settle <tag> <flow>`, `ack <tag>`, `nak <tag>`. */
type Log = string[];

/** An event `tag` (its eventId) of `profileId`. */
interface Event {
  tag: string;
  update: ProfileUpdate;
}

const ev = (tag: string, profileId: string, rest: Omit<ProfileUpdate, 'profileId' | 'eventId'> = {}): Event => ({
  tag,
  update: { profileId, eventId: tag, ...rest },
});
const joins = (audienceId: string, status: MembershipStatus = 'realized') => ({
  segmentMembership: { ups: { [audienceId]: { status, lastQualificationTime: '2026-11-26T10:00:00Z' } } },
});

/** A fakeMessage whose ack / nak also go to the shared log, tagged. */
function logged(log: Log, tag: string, data: string, seq: number): FakeMessage {
  const m = fakeMessage(data, seq);
  return {
    ...m,
    ack: () => {
      log.push(`ack ${tag}`);
      m.ack();
    },
    nak: (delayMs?: number) => {
      log.push(`nak ${tag}`);
      m.nak(delayMs);
    },
  };
}

function messages(log: Log, events: Event[]): FakeMessage[] {
  return events.map((e, i) => logged(log, e.tag, JSON.stringify(e.update), i + 1));
}

/**
 * Sinks that record each attempt and answer after `answer(job).delayMs` (real time): 2xx, or
 * `status: 'failed'` → 503 (retried twice, then stored as failed by `fail`). `tagOf` names a
 * job by its event's tag (from its Idempotency-Key).
 */
function recordingSinks(
  log: Log,
  events: Event[],
  answer: (job: ExportJob, tag: string) => { delayMs: number; status?: 'delivered' | 'failed' } = () => ({ delayMs: 1 }),
) {
  const tags = new Map<string, string>();
  for (const e of events) {
    for (const f of dataflows) {
      tags.set(idempotencyKey({ dataflowId: f.id, profileId: e.update.profileId, event: `event:${e.tag}` }), e.tag);
    }
  }
  const tagOf = (job: ExportJob): string => tags.get(job.idempotencyKey) ?? `${job.profileId}?`;
  const jobs: Record<string, ExportJob[]> = {};
  const sinks = new Map<string, ExportSink>();
  const sinkFor = (dataflowId: string): ExportSink => {
    let sink = sinks.get(dataflowId);
    if (sink) return sink;
    const inner = fakeSink((job) => {
      const { delayMs, status = 'delivered' } = answer(job, tagOf(job));
      return { delayMs, status: status === 'delivered' ? 200 : 503 };
    });
    sink = {
      ...inner,
      attempt: (job, cancellation, opts) => {
        const tag = tagOf(job);
        (jobs[dataflowId] ??= []).push(job);
        log.push(`send ${tag} ${dataflowId}`);
        return inner.attempt(job, cancellation, opts).then((r) => {
          log.push(`settle ${tag} ${dataflowId}`);
          return r;
        });
      },
      fail: (job, attempts, err) =>
        inner.fail(job, attempts, err).then((o) => {
          log.push(`settle ${tagOf(job)} ${dataflowId}`);
          return o;
        }),
    };
    sinks.set(dataflowId, sink);
    return sink;
  };
  return { jobs, sinkFor, tagOf };
}

/** An in-memory RejectedEventStore whose `put` takes `delayMs`. */
function rejectedStore(log: Log, delayMs = 0): RejectedEventStore & { records: RejectedEvent[] } {
  const records: RejectedEvent[] = [];
  return {
    records,
    put: async (r) => {
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      records.push(r);
      log.push(`rejected ${r.sourceKey}`);
    },
    list: () => Promise.resolve(records),
    close: () => Promise.resolve(),
  };
}

function options(log: Log, over: Partial<PipelineOptions> & Pick<PipelineOptions, 'sinkFor'>): PipelineOptions {
  return {
    dataflows,
    audiences,
    store: new MemorySnapshotStore(),
    rejected: rejectedStore(log),
    limiterFor: () => openLimiter,
    metrics: new Metrics(),
    logger: createLogger({ level: 'silent' }),
    concurrency: 16,
    maxEventBytes: 1_048_576,
    ...over,
  };
}

/** Every envelope out of the chain; `acked()` of them: the ones that settled with their exports (no fault). */
const run = (source: Observable<SourceMessage>, opts: PipelineOptions): Promise<SettledEnvelope[]> =>
  lastValueFrom(source.pipe(exportPipeline(opts), toArray()));
const acked = (all: SettledEnvelope[]): SettledEnvelope[] => all.filter((s) => s.fault === undefined);

const tagsOf = (jobs: ExportJob[] | undefined, tagOf: (j: ExportJob) => string): string[] => (jobs ?? []).map(tagOf);
const at = (log: Log, entry: string): number => {
  const i = log.indexOf(entry);
  if (i < 0) throw new Error(`not in the log: ${entry}`);
  return i;
};

describe('exportPipeline', () => {
  it('exports valid events per SPEC §3 and acks every message once', async () => {
    const log: Log = [];
    const events = [
      ev('e1', 'p-1', { ...joins('aud-1'), attributes: { person: { name: { firstName: 'John', lastName: 'Doe' } } } }),
      ev('e2', 'p-1', { attributes: { person: { gender: 'x' } } }), // sibling of a mapped path
      ev('e3', 'p-1', { attributes: { person: { name: { firstName: 'John' } } } }), // equal value: still a write
      ev('e4', 'p-2', { attributes: { person: { name: { firstName: 'Jane' } } } }), // in no mapped audience
      ev('e5', 'p-1', { identityMap: { ecid: [{ id: '1457' }] } }), // identity changed
      ev('e6', 'p-1', joins('aud-1', 'exited')), // exits
      ev('e7', 'p-3', { ...joins('aud-2'), attributes: { personalEmail: { address: 'x@y.z' } } }),
      ev('e8', 'p-3', { attributes: { person: { name: { firstName: 'Zed' } } } }), // unmapped for flow-2
    ];
    const msgs = messages(log, events);
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events);
    const settled = await run(from(msgs), options(log, { sinkFor }));

    expect(tagsOf(jobs['flow-1'], tagOf)).toEqual(['e1', 'e3', 'e5', 'e6']);
    expect(tagsOf(jobs['flow-2'], tagOf)).toEqual(['e7']);
    expect(jobs['flow-1'][0]).toEqual({
      dataflowId: 'flow-1',
      destinationId: 'dest-1',
      profileId: 'p-1',
      idempotencyKey: idempotencyKey({ dataflowId: 'flow-1', profileId: 'p-1', event: 'event:e1' }),
      eventTime: undefined,
      payload: {
        person: { name: { firstName: 'John' } },
        segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
        identityMap: {},
      },
    });
    expect(jobs['flow-1'][2].payload.identityMap).toEqual({ ecid: [{ id: '1457' }] });
    expect(jobs['flow-1'][3].payload.segmentMembership).toEqual({
      ups: { 'aud-1': { status: 'exited', lastQualificationTime: '2026-11-26T10:00:00Z' } },
    });
    expect(settled).toHaveLength(8);
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
  });

  it('rejects malformed events and acks them, without holding the valid ones up', async () => {
    const log: Log = [];
    const rejected = rejectedStore(log, 80);
    const events = [ev('ok1', 'p-1', joins('aud-1')), ev('ok2', 'p-2', joins('aud-1'))];
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events);
    const msgs = [
      logged(log, 'bad-json', '{"profileId":', 1),
      logged(log, 'ok1', JSON.stringify(events[0].update), 2),
      logged(log, 'no-id', '{"attributes":{}}', 3),
      logged(log, 'ok2', JSON.stringify(events[1].update), 4),
    ];
    const opts = options(log, { sinkFor, rejected });
    const settled = await run(from(msgs), opts);

    expect(acked(settled).map((s) => s.msg.key)).toEqual(['test:2', 'test:4']);
    expect(tagsOf(jobs['flow-1'], tagOf)).toEqual(['ok1', 'ok2']);
    expect(rejected.records.map((r) => [r.sourceKey, r.code])).toEqual([
      ['test:1', 'ERR_EVENT_JSON'],
      ['test:3', 'ERR_EVENT_SHAPE'],
    ]);
    // The valid ones were delivered and acked while the rejected ones were still being stored.
    expect(at(log, 'ack ok2')).toBeLessThan(at(log, 'rejected test:1'));
    expect(at(log, 'ack ok2')).toBeLessThan(at(log, 'rejected test:3'));
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
    expect(at(log, 'ack bad-json')).toBeGreaterThan(at(log, 'rejected test:1'));
    expect(opts.metrics.eventsRead).toBe(4);
    expect(opts.metrics.eventsRejected).toBe(2);
    expect(opts.metrics.inFlight).toBe(0);
  });

  it('acks a message only after every export it caused has settled', async () => {
    const log: Log = [];
    const events = [
      ev('e1', 'p-1', joins('aud-1')),
      ev('e2', 'p-2', { segmentMembership: { ups: { 'aud-1': { status: 'realized' }, 'aud-2': { status: 'existing' } } } }),
      ev('e3', 'p-3', { attributes: { unmapped: 1 } }), // no export: acked at once
    ];
    const msgs = messages(log, events);
    const { sinkFor } = recordingSinks(log, events, (job) => ({ delayMs: job.dataflowId === 'flow-1' ? 40 : 10 }));
    await run(from(msgs), options(log, { sinkFor }));

    expect(at(log, 'ack e1')).toBeGreaterThan(at(log, 'settle e1 flow-1'));
    expect(at(log, 'ack e2')).toBeGreaterThan(at(log, 'settle e2 flow-1'));
    expect(at(log, 'ack e2')).toBeGreaterThan(at(log, 'settle e2 flow-2'));
    // The two dataflows of e2 were sent in parallel.
    expect(at(log, 'send e2 flow-2')).toBeLessThan(at(log, 'settle e2 flow-1'));
    expect(at(log, 'ack e3')).toBeLessThan(at(log, 'settle e1 flow-1'));
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
    expect(log.filter((l) => l.startsWith('ack'))).toHaveLength(3);
  });

  it('keeps the order of one profile\'s exports while different profiles overlap', async () => {
    const log: Log = [];
    const events = [
      ev('a1', 'p-A', joins('aud-1')),
      ev('b1', 'p-B', joins('aud-1')),
      ev('a2', 'p-A', { attributes: { person: { name: { firstName: 'A' } } } }),
      ev('b2', 'p-B', { attributes: { person: { name: { firstName: 'B' } } } }),
      ev('a3', 'p-A', { attributes: { person: { name: { firstName: 'AA' } } } }),
    ];
    const delays: Record<string, number> = { a1: 80, b1: 10, a2: 5, b2: 5, a3: 1 };
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events, (_job, tag) => ({ delayMs: delays[tag] }));
    const msgs = messages(log, events);
    await run(from(msgs), options(log, { sinkFor }));

    const sent = tagsOf(jobs['flow-1'], tagOf);
    expect(sent.filter((t) => t.startsWith('a'))).toEqual(['a1', 'a2', 'a3']);
    expect(sent.filter((t) => t.startsWith('b'))).toEqual(['b1', 'b2']);
    // p-A's next export waits for the one before; p-B runs meanwhile.
    expect(at(log, 'send a2 flow-1')).toBeGreaterThan(at(log, 'settle a1 flow-1'));
    expect(at(log, 'send a3 flow-1')).toBeGreaterThan(at(log, 'settle a2 flow-1'));
    expect(at(log, 'send b1 flow-1')).toBeLessThan(at(log, 'settle a1 flow-1'));
    expect(at(log, 'settle b2 flow-1')).toBeLessThan(at(log, 'settle a1 flow-1'));
    expect(log.filter((l) => l.startsWith('ack'))).toEqual(['ack b1', 'ack b2', 'ack a1', 'ack a2', 'ack a3']);
  });

  it('retries a failing store step in place: the profile waits, keeps its order, the others go on', async () => {
    const log: Log = [];
    let failures = 2;
    class FlakyStore extends MemorySnapshotStore {
      override apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
        if (update.profileId === 'p-bad' && failures > 0) {
          failures--;
          return Promise.reject(Object.assign(new Error('redis down'), { code: 'ERR_STORE' }));
        }
        return super.apply(update, ctx);
      }
    }
    const events = [ev('x1', 'p-bad', joins('aud-1')), ev('ok', 'p-ok', joins('aud-1')), ev('x2', 'p-bad', { attributes: { person: { name: { firstName: 'X' } } } })];
    const msgs = messages(log, events);
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events);
    const opts = options(log, { sinkFor, store: new FlakyStore(), storeRetryMaxMs: 50 });
    const settled = await run(from(msgs), opts);

    // p-ok was not held up by p-bad's outage; p-bad's updates went out in order once it passed.
    expect(settled.map((s) => s.msg.key)).toEqual(['test:2', 'test:1', 'test:3']);
    expect(tagsOf(jobs['flow-1'], tagOf)).toEqual(['ok', 'x1', 'x2']);
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
    expect(opts.metrics.storeErrors).toBe(2);
    expect(opts.metrics.inFlight).toBe(0);
  });

  it('acks a delivered message even when the store cannot confirm it', async () => {
    const log: Log = [];
    class NoConfirmStore extends MemorySnapshotStore {
      override confirm(): Promise<void> {
        return Promise.reject(new Error('redis down'));
      }
    }
    const events = [ev('e1', 'p-1', joins('aud-1')), ev('e2', 'p-1', { attributes: { person: { name: { firstName: 'J' } } } })];
    const msgs = messages(log, events);
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events);
    const opts = options(log, { sinkFor, store: new NoConfirmStore() });
    await run(from(msgs), opts);

    expect(tagsOf(jobs['flow-1'], tagOf)).toEqual(['e1', 'e2']);
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
    expect(opts.metrics.inFlight).toBe(0);
  });

  it('exports backfill items through the same actors, and marks the backfills done', async () => {
    const log: Log = [];
    const store = new MemorySnapshotStore();
    const seed = async (profileId: string, audienceId: string, n: number) => {
      await store.apply({ profileId, ...joins(audienceId), attributes: { person: { name: { firstName: profileId } } } }, { key: `seed:${n}`, seq: n });
      await store.confirm(profileId, `seed:${n}`);
    };
    await seed('p-1', 'aud-1', 1);
    await seed('p-2', 'aud-1', 2);
    await seed('p-3', 'aud-2', 3);
    // Live updates alongside: one of a member (a mapped attribute), one of nobody's business.
    const events = [
      ev('live1', 'p-1', { attributes: { person: { name: { firstName: 'P1' } } } }),
      ev('live2', 'p-9', { attributes: { unmapped: true } }),
    ];
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events);
    const msgs = messages(log, events);
    const backfill$ = backfillSource({ store, dataflows });
    const opts = options(log, { sinkFor, store, backfill$ });
    const settled = await run(from(msgs), opts);

    expect(jobs['flow-1'].map((j) => j.profileId).sort()).toEqual(['p-1', 'p-1', 'p-2']);
    expect(jobs['flow-2'].map((j) => j.profileId)).toEqual(['p-3']);
    expect(tagsOf(jobs['flow-1'], tagOf).filter((t) => t.startsWith('live'))).toEqual(['live1']);
    const p1 = jobs['flow-1'].find((j) => j.profileId === 'p-1' && tagOf(j) !== 'live1');
    expect(p1).toEqual({
      dataflowId: 'flow-1',
      destinationId: 'dest-1',
      profileId: 'p-1',
      idempotencyKey: idempotencyKey({ dataflowId: 'flow-1', profileId: 'p-1', event: 'backfill:flow-1:aud-1:p-1' }),
      eventTime: undefined,
      payload: {
        person: { name: { firstName: expect.stringMatching(/^(p-1|P1)$/) } },
        segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
        identityMap: {},
      },
    });
    expect(settled.filter((s) => s.backfill)).toHaveLength(3);
    expect(await store.getBackfill(backfillId('flow-1', 'aud-1', 10))).toEqual({ done: true, cursor: '0', sent: 2 });
    expect(await store.getBackfill(backfillId('flow-2', 'aud-2', 20))).toEqual({ done: true, cursor: '0', sent: 1 });
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
    expect(opts.metrics.backfillItems).toBe(3);
    expect(opts.metrics.eventsRead).toBe(2);
    expect(opts.metrics.inFlight).toBe(0);
  });

  it('acks a backfill item of a profile no longer in the audience without exporting it', async () => {
    const log: Log = [];
    const store = new MemorySnapshotStore();
    const item = (seq: number, profileId: string): Envelope & { msg: FakeMessage } => ({
      msg: fakeMessage('', seq),
      update: { profileId },
      backfill: { dataflowId: 'flow-1', audienceId: 'aud-1' },
    });
    await store.apply({ profileId: 'p-in', ...joins('aud-1') }, { key: 's1', seq: 1 });
    await store.apply({ profileId: 'p-out', ...joins('aud-1', 'exited') }, { key: 's2', seq: 2 });
    const items = [item(1, 'p-in'), item(2, 'p-out'), item(3, 'p-unknown')];
    const { jobs, sinkFor } = recordingSinks(log, []);
    const opts = options(log, { sinkFor, store, backfill$: from(items) });
    const settled = await run(EMPTY, opts);

    expect(jobs['flow-1'].map((j) => j.profileId)).toEqual(['p-in']);
    // Different profiles: settled in any order.
    expect(Object.fromEntries(settled.map((s) => [s.update.profileId, s.jobs.length]))).toEqual({ 'p-in': 1, 'p-out': 0, 'p-unknown': 0 });
    for (const i of items) expect(i.msg.calls).toEqual(['ack']);
    // A backfill item only reads the snapshot.
    expect(await store.get('p-unknown')).toBeNull();
  });

  it('counts events read and rejected, in-flight messages, and exports delivered / failed per dataflow', async () => {
    const log: Log = [];
    const events = [
      ev('e1', 'p-1', { segmentMembership: { ups: { 'aud-1': { status: 'realized' }, 'aud-2': { status: 'realized' } } } }),
      ev('e2', 'p-2', joins('aud-1')),
      ev('e3', 'p-3', joins('aud-2')),
      ev('e4', 'p-1', { attributes: { person: { name: { firstName: 'x' } } } }),
    ];
    const metrics = new Metrics();
    const inFlightSeen: number[] = [];
    const { sinkFor } = recordingSinks(log, events, (job) => {
      inFlightSeen.push(metrics.inFlight);
      return { delayMs: 5, status: job.dataflowId === 'flow-2' ? 'failed' : 'delivered' };
    });
    const msgs = [...messages(log, events), logged(log, 'bad', 'not json', 99)];
    const settled = await run(from(msgs), options(log, { sinkFor, metrics }));

    expect(settled).toHaveLength(4);
    expect(metrics.eventsRead).toBe(5);
    expect(metrics.eventsRejected).toBe(1);
    expect(metrics.storeErrors).toBe(0);
    expect(Math.max(...inFlightSeen)).toBeGreaterThanOrEqual(2);
    expect(metrics.inFlight).toBe(0);
    expect(metrics.flow('flow-1')).toMatchObject({ delivered: 3, failed: 0, attempts: 3 });
    expect(metrics.flow('flow-2')).toMatchObject({ delivered: 0, failed: 2, attempts: 6 });
    expect(metrics.totals()).toEqual({ delivered: 3, failed: 2 });
    // Failed exports were stored by the sink: their messages are acked like the others.
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
  });

  it('naks a fenced message at once, without retrying the store step or exporting', async () => {
    const log: Log = [];
    let applies = 0;
    class FencedStore extends MemorySnapshotStore {
      override apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
        applies++;
        if (update.profileId === 'p-lost') return Promise.reject(new FencedError('lease lost'));
        return super.apply(update, ctx);
      }
    }
    const events = [ev('l1', 'p-lost', joins('aud-1')), ev('k1', 'p-kept', joins('aud-1'))];
    const msgs = messages(log, events);
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events);
    const opts = options(log, { sinkFor, store: new FencedStore(), storeRetryMaxMs: 10 });
    const settled = await run(from(msgs), opts);

    expect(applies).toBe(2);
    expect(acked(settled).map((s) => s.msg.key)).toEqual(['test:2']);
    expect(settled.find((s) => s.msg.key === 'test:1')?.fault).toMatchObject({ kind: 'unsettled', error: { code: 'ERR_FENCED' } });
    expect(tagsOf(jobs['flow-1'], tagOf)).toEqual(['k1']);
    expect(msgs[0].calls).toEqual(['nak:1000']);
    expect(msgs[1].calls).toEqual(['ack']);
    expect(opts.metrics.inFlight).toBe(0);
  });

  it('naks a message whose export cannot be settled (fenced, failed-request store down), and goes on with the others', async () => {
    const log: Log = [];
    const events = [
      ev('n1', 'p-1', { segmentMembership: { ups: { 'aud-1': { status: 'realized' }, 'aud-2': { status: 'realized' } } } }),
      ev('n2', 'p-2', { segmentMembership: { ups: { 'aud-1': { status: 'realized' }, 'aud-2': { status: 'realized' } } } }),
      ev('n3', 'p-1', { attributes: { person: { name: { firstName: 'x' } } } }),
    ];
    const msgs = messages(log, events);
    const ok = recordingSinks(log, events);
    // flow-2: p-1's export is fenced; p-2's fails for good and its record cannot be stored.
    const broken = fakeSink(
      (job) => (job.profileId === 'p-1' ? { error: new FencedError('lease lost') } : { status: 400 }),
      { failStore: () => new StoreError('failed-request store down') },
    );
    const sinkFor = (dataflowId: string): ExportSink => (dataflowId === 'flow-1' ? ok.sinkFor(dataflowId) : broken);
    const opts = options(log, { sinkFor });
    const settled = await run(from(msgs), opts);

    // n1 and n2 export to both flows: flow-2 could not settle, so they are nak'ed (their flow-1
    // exports were delivered: the redelivery sends them again, same Idempotency-Key); n3 settles.
    expect(msgs[0].calls).toEqual(['nak:1000']);
    expect(msgs[1].calls).toEqual(['nak:1000']);
    expect(msgs[2].calls).toEqual(['ack']);
    expect(acked(settled).map((s) => s.msg.key)).toEqual(['test:3']);
    expect(settled.find((s) => s.msg.key === 'test:1')?.fault).toMatchObject({ kind: 'unsettled', error: { code: 'ERR_FENCED' } });
    expect(settled.find((s) => s.msg.key === 'test:2')?.fault).toMatchObject({ kind: 'unsettled', error: { code: 'ERR_STORE' } });
    // n3 (same profile as n1) went out only after n1 had left the gate.
    expect(at(log, 'send n3 flow-1')).toBeGreaterThan(at(log, 'nak n1'));
    expect(opts.metrics.inFlight).toBe(0);
    expect(opts.metrics.storeErrors).toBe(2);
  });

  it('cancels sends in flight and backoff timers when unsubscribed, and acks nothing more', async () => {
    const log: Log = [];
    let applies = 0;
    class DownStore extends MemorySnapshotStore {
      override apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
        applies++;
        if (update.profileId === 'p-down') return Promise.reject(Object.assign(new Error('redis down'), { code: 'ERR_STORE' }));
        return super.apply(update, ctx);
      }
    }
    const events = [ev('s1', 'p-slow', joins('aud-1')), ev('d1', 'p-down', joins('aud-1'))];
    const msgs = messages(log, events);
    const sink = fakeSink(() => ({ delayMs: 60_000 }), { onAttempt: () => log.push('sending') });
    const sinkFor = (): ExportSink => sink;
    const opts = options(log, { sinkFor, store: new DownStore(), storeRetryMaxMs: 20 });
    const sub = from(msgs).pipe(exportPipeline(opts)).subscribe();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(log).toContain('sending');
    const appliesAtStop = applies;
    expect(appliesAtStop).toBeGreaterThanOrEqual(2);
    sub.unsubscribe();
    await new Promise((resolve) => setTimeout(resolve, 100));

    expect(sink.cancelled).toBe(1);
    // The failing profile's backoff stopped with the subscription.
    expect(applies).toBe(appliesAtStop);
    for (const m of msgs) expect(m.calls).toEqual([]);
  });

  it('rejects poison events (the merge throws EventRejectedError; a pure step throws a TypeError) and acks them; the others flow; maxInFlight 2 does not wedge', async () => {
    const log: Log = [];
    class PoisonStore extends MemorySnapshotStore {
      override async apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
        if (update.profileId === 'p-proto') throw new EventRejectedError('ERR_EVENT_SHAPE', 'attributes: "__proto__" is not allowed');
        const r = await super.apply(update, ctx);
        // A malformed result: detect meets a TypeError on this event's data.
        return update.profileId === 'p-bug' ? { ...r, after: null as unknown as ApplyResult['after'] } : r;
      }
    }
    const events = [
      ev('proto1', 'p-proto', joins('aud-1')),
      ev('bug1', 'p-bug', joins('aud-1')),
      ev('proto2', 'p-proto', joins('aud-1')),
      ev('ok1', 'p-1', joins('aud-1')),
      ev('bug2', 'p-bug', joins('aud-1')),
      ev('ok2', 'p-2', joins('aud-1')),
    ];
    const msgs = messages(log, events);
    const rejected = rejectedStore(log);
    const { jobs, sinkFor, tagOf } = recordingSinks(log, events);
    const opts = options(log, { sinkFor, rejected, store: new PoisonStore(), concurrency: 2 });
    const settled = await run(from(msgs), opts);

    expect(tagsOf(jobs['flow-1'], tagOf)).toEqual(['ok1', 'ok2']);
    expect(settled).toHaveLength(6);
    for (const m of msgs) expect(m.calls).toEqual(['ack']);
    expect(rejected.records.map((r) => [r.sourceKey, r.code])).toEqual([
      ['test:1', 'ERR_EVENT_SHAPE'],
      ['test:2', 'ERR_EVENT_SHAPE'],
      ['test:3', 'ERR_EVENT_SHAPE'],
      ['test:5', 'ERR_EVENT_SHAPE'],
    ]);
    expect(rejected.records[1]!.reason).toMatch(/^event: could not be processed \(detect: TypeError: /);
    expect(opts.metrics.eventsRejected).toBe(4);
    expect(opts.metrics.storeErrors).toBe(0);
    expect(opts.metrics.inFlight).toBe(0);
  });
});
