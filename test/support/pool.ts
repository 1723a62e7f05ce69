/**
 * Test support for the worker-pool tests (test/pool): a pool config (JetStream source with
 * partitions and short leases, Redis store), worker processes that know their pool id and
 * parse their own logs, a live publisher that keeps updates flowing at a given rate, a
 * workload whose every update writes an increasing `bench.seq`, the ORDER check run over
 * every export the receiver got, and readers of the pool's state in Redis.
 *
 * Builds on test/support/backbone.ts (servers, receiver, CLI runner, oracle).
 *
 * @example
 * const bb = await startBackbone();
 * const rx = await startRecordingReceiver();
 * const s = poolFlow({ bb, rx, name: 'fo' });
 * await s.prime();
 * const workers = [s.start(), s.start(), s.start()];
 * const pub = startPublisher({ bb, setup: s, events, perSecond: 400 });
 * // … kill one, wait …
 * expect(orderViolations(rx.requests, s.path)).toEqual([]);
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { readdirSync, readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { Redis } from 'ioredis';
import { partitionOf, partitionSubject } from '../../src/domain/partition.js';
import type { Audience, DataflowRules, ProfileUpdate } from '../../src/domain/types.js';
import { ensureStream } from '../../src/streams/jetstream.js';
import { assignPartitions, parseLeaseValue, poolKeys } from '../../src/worker/pool.js';
import { listPartitionConsumers, type PartitionConsumer } from '../../src/worker/pool-source.js';
import {
  AUD_1,
  backboneConfig,
  consumerState,
  interleave,
  prng,
  readSnapshots,
  rulesOf,
  runOnce,
  settleWhenIdle,
  sleep,
  spawnCli,
  type Backbone,
  type CliProcess,
  type Oracle,
  type Recorded,
  type RecordingReceiver,
} from './backbone.js';

/** The pool settings every pool test uses: failover within seconds. */
export const POOL = {
  partitions: 16,
  /** `source.leaseMs` */
  leaseMs: 1_500,
  /** The coordinator's tick: leaseMs / 5. */
  tickMs: 300,
  /** `source.ackWaitMs` */
  ackWaitMs: 2_000,
  /** Small retry delays of the destination. */
  retry: { minDelayMs: 20, maxDelayMs: 100 },
} as const;

// ------------------------------------------------------------------------------------------
// Workers

/** One JSON log line of a worker (pino). */
export interface LogLine {
  level: number;
  time: number;
  msg: string;
  [field: string]: unknown;
}

export interface PoolWorker extends CliProcess {
  /** Label for messages (`w1`, `w2`, …). */
  name: string;
  pid: number;
  /** Does a pool worker id (`<host>-<pid>-<random>`) belong to this process? */
  owns(workerId: string | undefined): boolean;
  /** Its log lines so far (JSON lines of stderr; other lines are skipped). */
  logs(): LogLine[];
}

function asPoolWorker(p: CliProcess, name: string): PoolWorker {
  const pid = p.child.pid ?? -1;
  const marker = `-${pid}-`;
  return Object.assign(p, {
    name,
    pid,
    owns: (id: string | undefined) => id !== undefined && id.includes(marker),
    logs: () => parseLogs(p.stderr),
  });
}

export function parseLogs(stderr: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut by the 200 kB tail, or not ours
    }
  }
  return out;
}

/** The pool-related and warning lines of each worker's log (the last ones), for failure messages. */
export function poolLogs(workers: readonly PoolWorker[], last = 12): string {
  return workers
    .map((w) => {
      const lines = w
        .logs()
        .filter((l) => l.level >= 40 || l.msg.startsWith('pool:') || l.msg === 'worker started')
        .slice(-last)
        .map((l) => `  ${new Date(l.time).toISOString().slice(17, 23)} ${l.msg}${l.partition !== undefined ? ` p${String(l.partition)}` : ''}${l.code ? ` ${String(l.code)}` : ''}`);
      const other = w.stderr
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('{'))
        .slice(-4)
        .map((l) => `  ${l.slice(0, 300)}`);
      const exit = w.running ? '' : `, exited ${w.child.exitCode ?? w.child.signalCode}`;
      return `\n${w.name} (pid ${w.pid}${exit}):\n${[...lines, ...other].join('\n')}`;
    })
    .join('');
}

/** The worker a pool worker id belongs to, by pid. */
export function workerOf(workers: readonly PoolWorker[], id: string | undefined): PoolWorker | undefined {
  return workers.find((w) => w.owns(id));
}

// ------------------------------------------------------------------------------------------
// The setup

export interface PoolSetup {
  cfg: string;
  config: Record<string, unknown>;
  rules: DataflowRules;
  /** With `secondFlow`: the rules of `flow-2`. */
  rules2?: DataflowRules;
  audiences: Audience[];
  /** Receiver path of the destination. */
  path: string;
  /** With `secondFlow`: receiver path of `flow-2`'s destination. */
  path2?: string;
  stream: string;
  subject: string;
  durable: string;
  /** Redis key prefix (`<name>:`); the pool's keys are `<prefix>pool:<durable>:…`. */
  prefix: string;
  /** Redis key of a partition's lease. */
  leaseKey(partition: number): string;
  /** Starts `run --config cfg` (no --once) as worker `w<n>`. */
  start(): PoolWorker;
  /** `run --once` on the empty stream: backfill marked done, partition count recorded. */
  prime(): Promise<void>;
}

/**
 * One destination (`rx.url/<name>`) and one dataflow `flow-1` mapping `aud-1` with
 * `bench.pid` and `bench.seq`, on its own stream, durable and Redis prefix, in pool mode
 * (`source.partitions` 16, `leaseMs` 1500, `ackWaitMs` 2000), logging at info.
 */
export function poolFlow(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  name: string;
  rateLimit?: number;
  /** `source.ackWaitMs`. @default POOL.ackWaitMs (2000) */
  ackWaitMs?: number;
  worker?: object;
  /** Destination extras (e.g. `connections`). */
  destination?: object;
  /**
   * A second dataflow `flow-2` with its own rate limit, mapping `aud-2` (same attributes) to
   * `rx.url/<name>-2`: updates entering `aud-2` export to it only.
   */
  secondFlow?: { rateLimit: number };
}): PoolSetup {
  const aud2: Audience = { ...AUD_1, id: 'aud-2', name: 'Audience two' };
  const audiences = o.secondFlow ? [AUD_1, aud2] : [AUD_1];
  const dest = { id: 'dest-1', endpoint: `${o.rx.url}/${o.name}`, retry: POOL.retry, ...(o.destination ?? {}) };
  const flow = {
    id: 'flow-1',
    destination: 'dest-1',
    audiences: [{ id: 'aud-1', mappingCreatedAt: 10, mappingUpdatedAt: 11 }],
    attributes: ['bench.pid', 'bench.seq'],
    ...(o.rateLimit !== undefined ? { rateLimit: o.rateLimit } : {}),
  };
  const dest2 = { ...dest, id: 'dest-2', endpoint: `${o.rx.url}/${o.name}-2` };
  const flow2 = { ...flow, id: 'flow-2', destination: 'dest-2', audiences: [{ id: 'aud-2', mappingCreatedAt: 10, mappingUpdatedAt: 11 }], rateLimit: o.secondFlow?.rateLimit };
  const config = backboneConfig({
    bb: o.bb,
    name: o.name,
    audiences,
    destinations: o.secondFlow ? [dest, dest2] : [dest],
    dataflows: o.secondFlow ? [flow, flow2] : [flow],
    ackWaitMs: o.ackWaitMs ?? POOL.ackWaitMs,
    worker: { drainTimeoutMs: 5_000, ...(o.worker ?? {}) },
    logLevel: 'info',
  });
  const source = config.source as Record<string, unknown>;
  Object.assign(source, { partitions: POOL.partitions, leaseMs: POOL.leaseMs });
  const cfg = o.bb.writeFile(`${o.name}.json`, config);
  const prefix = `${o.name}:`;
  const durable = source.durable as string;
  const keys = poolKeys({ keyPrefix: prefix, pool: durable });
  let started = 0;
  return {
    cfg,
    config,
    rules: rulesOf(flow, dest),
    ...(o.secondFlow ? { rules2: rulesOf(flow2, dest2), path2: `/${o.name}-2` } : {}),
    audiences,
    path: `/${o.name}`,
    stream: source.stream as string,
    subject: source.subject as string,
    durable,
    prefix,
    leaseKey: (p) => keys.lease(p),
    start: () => asPoolWorker(spawnCli(['run', '--config', cfg]), `w${++started}`),
    async prime() {
      // The stream first, as `publish` makes it (`<subject>` and `<subject>.>`): a stream
      // that pool workers create covers only `<subject>.<n>` subjects, and `publish` then
      // fails (see the stream test in ownership.test.ts).
      await createStream(o.bb, source.stream as string, source.subject as string);
      const r = await runOnce(cfg);
      if (r.eventsRead !== 0 || r.delivered !== 0) throw new Error(`prime: expected an empty run, got ${JSON.stringify(r)}`);
    },
  };
}

/** Creates the stream as `publish` does: covering `subject` and `subject.>`. */
export async function createStream(bb: Backbone, stream: string, subject: string): Promise<string[]> {
  const nc = await connect({ servers: bb.nats.url, timeout: 5_000 });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await ensureStream({ jsm, stream, subject });
    return info.config.subjects ?? [];
  } finally {
    await nc.close();
  }
}

/** The subjects a stream covers. */
export async function streamSubjects(bb: Backbone, stream: string): Promise<string[]> {
  const nc = await connect({ servers: bb.nats.url, timeout: 5_000 });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(stream)).config.subjects ?? [];
  } finally {
    await nc.close();
  }
}

// ------------------------------------------------------------------------------------------
// The workload

/**
 * `profiles` profiles with `perProfile` updates each, interleaved at random (each profile's
 * order kept). Update j of a profile writes `bench.seq = j + 1` and `trail.e<j>`; the first one
 * also writes `bench.pid` (the profile id, so every export body names its profile) and enters
 * `aud-1`.
 * So every update exports once, and the `bench.seq` of a profile's exports must never go down.
 */
export function seqWorkload(o: {
  profiles: number;
  perProfile: number;
  prefix: string;
  seed: number;
  /** The audience the first update enters. @default 'aud-1' */
  audience?: string;
}): ProfileUpdate[] {
  const lists: ProfileUpdate[][] = [];
  for (let p = 0; p < o.profiles; p++) {
    const profileId = `${o.prefix}-${p}`;
    const list: ProfileUpdate[] = [];
    for (let j = 0; j < o.perProfile; j++) {
      const u: ProfileUpdate = { profileId, eventId: `${profileId}-e${j}`, timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, j)).toISOString() };
      // `trail.e<j>` is not mapped: it only leaves a mark in the snapshot, so a final
      // snapshot missing one shows an update that was never merged.
      if (j === 0) {
        u.attributes = { bench: { pid: profileId, seq: 1 }, trail: { e0: 1 } };
        u.segmentMembership = { ups: { [o.audience ?? 'aud-1']: { status: 'realized', lastQualificationTime: '2026-01-01T00:00:00Z' } } };
      } else {
        u.attributes = { bench: { seq: j + 1 }, trail: { [`e${j}`]: 1 } };
      }
      list.push(u);
    }
    lists.push(list);
  }
  return interleave(lists, prng(o.seed));
}

/** A seed from `HD_POOL_SEED` or the clock, printed by the tests so a failure can be replayed. */
export const seedOf = (salt: number): number => Number(process.env.HD_POOL_SEED ?? (Date.now() + salt) % 1_000_000);

/**
 * Profiles whose snapshot in Redis differs from the clean run's final snapshot (an update
 * never merged, or merged out of order), each with the `trail` marks it lacks.
 */
export async function divergedSnapshots(bb: Backbone, setup: PoolSetup, expected: Oracle): Promise<string[]> {
  const ids = [...expected.snapshots.keys()];
  const got = await readSnapshots(bb.redis.url, setup.prefix, ids);
  const out: string[] = [];
  for (const id of ids) {
    const want = expected.snapshots.get(id);
    const have = got.get(id);
    if (isDeepStrictEqual(have, want)) continue;
    const trail = (x: unknown) => Object.keys((x as { attributes?: { trail?: object } } | null | undefined)?.attributes?.trail ?? {});
    const lacks = trail(want).filter((k) => !trail(have).includes(k));
    out.push(`${id}${lacks.length ? ` lacks ${lacks.join(',')}` : ''}`);
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// The ORDER check

export interface OrderViolation {
  path: string;
  profileId: string;
  /** Arrival index of the offending request. */
  index: number;
  seq: number;
  /** The highest `bench.seq` received before it for the same (dataflow, profile). */
  newest: number;
  at: number;
  key: string;
}

/**
 * Goes through every request the receiver got, in arrival order (answered or not: what
 * reached the endpoint counts), and reports each export whose `bench.seq` is lower than one
 * the same (dataflow = receiver path, profile = `bench.pid`) received before. Duplicates of
 * the newest are fine. A request without a readable `bench.pid`/`bench.seq` is a violation too.
 */
export function orderViolations(requests: readonly Recorded[], path?: string): OrderViolation[] {
  const newest = new Map<string, number>();
  const out: OrderViolation[] = [];
  for (const r of [...requests].sort((a, b) => a.index - b.index)) {
    if (path !== undefined && r.path !== path) continue;
    const bench = (r.body as { bench?: { pid?: unknown; seq?: unknown } } | undefined)?.bench;
    const pid = typeof bench?.pid === 'string' ? bench.pid : '?';
    const seq = typeof bench?.seq === 'number' ? bench.seq : -1;
    const k = `${r.path}\u0000${pid}`;
    const before = newest.get(k) ?? 0;
    if (seq < before || pid === '?' || seq < 0) out.push({ path: r.path, profileId: pid, index: r.index, seq, newest: before, at: r.at, key: r.key });
    if (seq > before) newest.set(k, seq);
  }
  return out;
}

/** A readable account of the first violations, with the profile's arrival history. */
export function explainViolations(requests: readonly Recorded[], v: readonly OrderViolation[], t0: number): string {
  return v
    .slice(0, 3)
    .map((x) => {
      const history = requests
        .filter((r) => r.path === x.path && (r.body as { bench?: { pid?: string } } | undefined)?.bench?.pid === x.profileId)
        .map((r) => `${r.index === x.index ? '>' : ' '}+${r.at - t0}ms seq=${(r.body as { bench: { seq: number } }).bench.seq} ${r.key}`);
      return `\n${x.profileId}: seq ${x.seq} after ${x.newest}; its exports in arrival order:\n  ${history.join('\n  ')}`;
    })
    .join('');
}

/**
 * Why exports are missing: per missing key, its event, partition, stream sequence (when the
 * publisher knows it) and the arrival history of that profile.
 */
export function explainMissing(
  missing: readonly string[],
  expected: Oracle,
  events: readonly ProfileUpdate[],
  requests: readonly Recorded[],
  t0: number,
  seqOf?: Map<string, number>,
): string {
  const eventOfKey = new Map(expected.exports.map((e, i) => [e.key, events[i]]));
  return missing
    .slice(0, 4)
    .map((k) => {
      const e = eventOfKey.get(k);
      const pid = e?.profileId ?? '?';
      const history = requests
        .filter((r) => (r.body as { bench?: { pid?: string } } | undefined)?.bench?.pid === pid)
        .map((r) => `+${r.at - t0}ms seq=${(r.body as { bench: { seq: number } }).bench.seq}`);
      const seq = e?.eventId !== undefined ? seqOf?.get(e.eventId) : undefined;
      return `\n${e?.eventId} (partition ${partitionOf(pid, POOL.partitions)}${seq !== undefined ? `, stream seq ${seq}` : ''}): ${pid}'s exports: ${history.join(', ')}`;
    })
    .join('');
}

// ------------------------------------------------------------------------------------------
// Publishing while the pool runs

export interface Publisher {
  /** Events published (acknowledged by JetStream) so far. */
  published(): number;
  /** Stream sequence of each published event, by eventId. */
  seqOf: Map<string, number>;
  /** Resolves when every event is published, or after `stop()`. */
  done: Promise<void>;
  /** The events published so far: a prefix of the list, in order. */
  events(): ProfileUpdate[];
  /** Stops publishing (at a step boundary); resolves with the events published. */
  stop(): Promise<ProfileUpdate[]>;
}

/**
 * Publishes `events` in order to `<subject>.<fnv1a32(profileId) mod partitions>` (the
 * product's own `partitionSubject`, as `publish` does) at about `perSecond`, over one
 * connection, with publish acks (creates the stream when missing). Give it more events than
 * a test needs and `stop()` it when the test's choreography is over: updates then flow for
 * as long as the test takes, however fast or slow the machine, and the oracle is computed
 * over the published prefix.
 */
export function startPublisher(o: { bb: Backbone; setup: PoolSetup; events: readonly ProfileUpdate[]; perSecond: number }): Publisher {
  const seqOf = new Map<string, number>();
  let count = 0;
  let stopped = false;
  const stepMs = 50;
  const perStep = Math.max(1, Math.round((o.perSecond * stepMs) / 1000));
  const done = (async () => {
    const nc = await connect({ servers: o.bb.nats.url, timeout: 5_000 });
    try {
      const jsm = await jetstreamManager(nc);
      await ensureStream({ jsm, stream: o.setup.stream, subject: o.setup.subject });
      const js = jetstream(nc);
      const started = Date.now();
      for (let i = 0; i < o.events.length && !stopped; i += perStep) {
        const slice = o.events.slice(i, i + perStep);
        // One connection: the server stores them in call order.
        const acks = slice.map((e) =>
          js.publish(partitionSubject(o.setup.subject, e.profileId, POOL.partitions), JSON.stringify(e), { msgID: e.eventId }),
        );
        const got = await Promise.all(acks);
        got.forEach((a, j) => seqOf.set(slice[j].eventId as string, a.seq));
        count += slice.length;
        const due = started + ((i + perStep) / perStep) * stepMs;
        if (due > Date.now()) await sleep(due - Date.now());
      }
    } finally {
      await nc.close();
    }
  })();
  return {
    published: () => count,
    seqOf,
    done,
    events: () => o.events.slice(0, count),
    stop: async () => {
      stopped = true;
      await done;
      return o.events.slice(0, count);
    },
  };
}

/** The partitions the profiles of `events` fall in (to check a workload spreads over all). */
export function partitionsOf(events: readonly ProfileUpdate[]): Set<number> {
  return new Set(events.map((e) => partitionOf(e.profileId, POOL.partitions)));
}

// ------------------------------------------------------------------------------------------
// The pool in Redis

export interface LeaseSample {
  /** Redis time, ms. */
  now: number;
  /** Local time, ms. */
  at: number;
  /** Per partition: the lease's owner and epoch, or undefined when nobody holds it. */
  leases: Array<{ owner: string; epoch: number } | undefined>;
  /** Workers whose heartbeat has not expired. */
  live: string[];
}

/** Reads the pool's state directly from Redis (leases, live members) in one round trip. */
export class PoolProbe {
  private readonly redis: Redis;
  constructor(
    url: string,
    private readonly setup: PoolSetup,
  ) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 1 });
    this.redis.on('error', () => {});
  }

  async sample(): Promise<LeaseSample> {
    const keys = poolKeys({ keyPrefix: this.setup.prefix, pool: this.setup.durable });
    const leaseKeys = Array.from({ length: POOL.partitions }, (_, p) => keys.lease(p));
    const r = (await this.redis.multi().time().mget(...leaseKeys).zrange(keys.workers, 0, -1, 'WITHSCORES').exec()) ?? [];
    for (const [err] of r) if (err) throw err;
    const [sec, usec] = r[0][1] as [string, string];
    const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    const values = r[1][1] as Array<string | null>;
    const z = r[2][1] as string[];
    const live: string[] = [];
    for (let i = 0; i < z.length; i += 2) if (Number(z[i + 1]) > now) live.push(z[i]);
    return { now, at: Date.now(), leases: values.map((v) => (v === null ? undefined : parseLeaseValue(v))), live };
  }

  /** Profile hash fields `s` (parsed), `v`, `w` for each id. */
  async profiles(ids: readonly string[]): Promise<Map<string, { s: unknown; v: number | null; w: number | null }>> {
    const pipe = this.redis.pipeline();
    for (const id of ids) pipe.hmget(`${this.setup.prefix}p:${id}`, 's', 'v', 'w');
    const replies = (await pipe.exec()) ?? [];
    const out = new Map<string, { s: unknown; v: number | null; w: number | null }>();
    ids.forEach((id, i) => {
      const [err, row] = replies[i] ?? [null, null];
      if (err) throw err;
      const [s, v, w] = row as Array<string | null>;
      out.set(id, { s: s === null ? null : (JSON.parse(s) as unknown), v: v === null ? null : Number(v), w: w === null ? null : Number(w) });
    });
    return out;
  }

  /** Polls until `pred(sample)` holds; returns that sample (throws with the last one after `timeoutMs`). */
  async waitFor(
    pred: (s: LeaseSample) => boolean,
    timeoutMs: number,
    what: string,
    options: { everyMs?: number; workers?: readonly PoolWorker[] } = {},
  ): Promise<LeaseSample> {
    const deadline = Date.now() + timeoutMs;
    let last: LeaseSample | undefined;
    for (;;) {
      last = await this.sample();
      if (pred(last)) return last;
      if (Date.now() > deadline) {
        const owners = last.leases.map((l, p) => `${p}:${(options.workers && workerOf(options.workers, l?.owner)?.name) ?? l?.owner ?? '-'}`).join(' ');
        const live = last.live.map((id) => (options.workers && workerOf(options.workers, id)?.name) ?? id).join(',');
        throw new Error(`pool: timed out after ${timeoutMs} ms waiting for ${what}; leases ${owners}; live ${live}${options.workers ? poolLogs(options.workers) : ''}`);
      }
      await sleep(options.everyMs ?? 25);
    }
  }

  close(): void {
    this.redis.disconnect();
  }
}

/** Partitions whose lease `worker` holds in a sample. */
export function ownedBy(sample: LeaseSample, worker: PoolWorker): number[] {
  return sample.leases.flatMap((l, p) => (l && worker.owns(l.owner) ? [p] : []));
}

/**
 * Every partition leased, each to one of `workers` (and to a live member). Returns why not, or ''.
 */
export function fullyOwnedBy(sample: LeaseSample, workers: readonly PoolWorker[]): string {
  for (let p = 0; p < sample.leases.length; p++) {
    const l = sample.leases[p];
    if (!l) return `partition ${p} has no lease`;
    if (!workerOf(workers, l.owner)) return `partition ${p} is held by ${l.owner}, not one of ${workers.map((w) => w.name).join(', ')}`;
    if (!sample.live.includes(l.owner)) return `partition ${p} is held by ${l.owner}, which is not live`;
  }
  return '';
}

/**
 * The pool has settled: the live members are exactly `workers` and every partition's lease is
 * held by the owner the assignment over them gives it (no move in progress).
 */
export function settledOn(sample: LeaseSample, workers: readonly PoolWorker[]): boolean {
  if (sample.live.length !== workers.length || !workers.every((w) => sample.live.some((id) => w.owns(id)))) return false;
  const desired = assignPartitions(sample.live, POOL.partitions);
  return sample.leases.every((l, p) => l !== undefined && l.owner === desired[p]);
}

/**
 * Watches lease samples for the invariants of single ownership: per partition, an epoch is
 * only ever held by one owner and epochs never go back.
 */
export class LeaseWatch {
  /** `${partition}:${epoch}` → owner */
  readonly owners = new Map<string, string>();
  readonly lastEpoch = new Map<number, number>();
  readonly problems: string[] = [];
  samples = 0;

  add(s: LeaseSample): void {
    this.samples++;
    s.leases.forEach((l, p) => {
      if (!l) return;
      const k = `${p}:${l.epoch}`;
      const prev = this.owners.get(k);
      if (prev !== undefined && prev !== l.owner) this.problems.push(`partition ${p} epoch ${l.epoch}: owned by ${prev} and by ${l.owner}`);
      this.owners.set(k, l.owner);
      const last = this.lastEpoch.get(p) ?? 0;
      if (l.epoch < last) this.problems.push(`partition ${p}: epoch went back from ${last} to ${l.epoch}`);
      this.lastEpoch.set(p, Math.max(last, l.epoch));
    });
  }
}

/** Samples leases every `everyMs` until stopped; returns the watch. */
export function watchLeases(probe: PoolProbe, everyMs = 25): { watch: LeaseWatch; stop(): Promise<void> } {
  const watch = new LeaseWatch();
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        watch.add(await probe.sample());
      } catch (err) {
        watch.problems.push(`sample failed: ${(err as Error).message}`);
      }
      await sleep(everyMs);
    }
  })();
  return {
    watch,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

// ------------------------------------------------------------------------------------------
// Ownership as the workers saw it (their logs)

export interface Tenure {
  worker: string;
  partition: number;
  epoch: number;
  from: number;
  /** Released or lost (log time), or undefined while still held. */
  to?: number;
}

/**
 * Each worker's tenures of each partition, from its logs: `pool: partition acquired` opens one,
 * `pool: partition released` or `… lease lost …` closes it. The process's end closes the rest
 * (at `endOf(worker)`, when given).
 */
export function tenures(workers: readonly PoolWorker[], endOf: (w: PoolWorker) => number | undefined = () => undefined): Tenure[] {
  const out: Tenure[] = [];
  for (const w of workers) {
    const open = new Map<number, Tenure>();
    for (const l of w.logs()) {
      const p = typeof l.partition === 'number' ? l.partition : undefined;
      if (p === undefined) continue;
      if (l.msg === 'pool: partition acquired') {
        const t: Tenure = { worker: w.name, partition: p, epoch: Number(l.epoch), from: l.time };
        open.set(p, t);
        out.push(t);
      } else if (l.msg === 'pool: partition released' || l.msg.startsWith('pool: partition lease lost')) {
        const t = open.get(p);
        if (t) t.to = l.time;
        open.delete(p);
      }
    }
    const end = endOf(w);
    if (end !== undefined) for (const t of open.values()) t.to = end;
  }
  return out;
}

/** Pairs of tenures of one partition by two workers that overlap in time. */
export function overlappingTenures(list: readonly Tenure[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < list.length; i++) {
    for (let j = i + 1; j < list.length; j++) {
      const a = list[i];
      const b = list[j];
      if (a.partition !== b.partition || a.worker === b.worker) continue;
      const aEnd = a.to ?? Infinity;
      const bEnd = b.to ?? Infinity;
      if (a.from < bEnd && b.from < aEnd) {
        out.push(`partition ${a.partition}: ${a.worker} (epoch ${a.epoch}, ${a.from}–${a.to ?? 'end'}) and ${b.worker} (epoch ${b.epoch}, ${b.from}–${b.to ?? 'end'})`);
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Waiting for the end of the work

/**
 * Waits until `done()` holds, or every partition's consumer is idle (nothing pending, nothing
 * unacked) and no request arrived for `quietMs`, or `timeoutMs` passed. Never throws.
 */
export async function settlePool(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  setup: PoolSetup;
  done: () => boolean;
  quietMs?: number;
  timeoutMs: number;
}): Promise<void> {
  await settleWhenIdle({ ...o, idle: () => poolIdle(o.bb, o.setup) });
}

/**
 * Every consumer of each partition (`<durable>-p<n>-e<epoch>`), the current one (latest
 * epoch) first; an empty list for a partition never taken.
 */
export async function partitionConsumers(bb: Backbone, setup: PoolSetup): Promise<PartitionConsumer[][]> {
  const nc = await connect({ servers: bb.nats.url, timeout: 5_000 });
  try {
    return await listPartitionConsumers(await jetstreamManager(nc), setup.stream, setup.durable, POOL.partitions);
  } finally {
    await nc.close();
  }
}

/** True when every partition's current consumer has nothing pending and nothing unacked. */
export async function poolIdle(bb: Backbone, setup: PoolSetup): Promise<boolean> {
  const all = await partitionConsumers(bb, setup).catch(() => null);
  return all !== null && all.every((list) => list.length > 0 && list[0].info.num_pending === 0 && list[0].info.num_ack_pending === 0);
}

/** `p<n>=<num_redelivered>` of each partition's consumers with redeliveries (for failure logs). */
export async function redeliveries(bb: Backbone, setup: PoolSetup): Promise<string> {
  const out: string[] = [];
  for (let p = 0; p < POOL.partitions; p++) {
    const st = await consumerState(bb.nats.url, setup.stream, `${setup.durable}-p${p}`).catch(() => null);
    if (st && st.redelivered > 0) out.push(`p${p}=${st.redelivered}`);
  }
  return out.join(' ') || 'none';
}

/**
 * The pid of the redis-server listening on `port`, from /proc (its command line, or the
 * process title redis-server sets, `redis-server 127.0.0.1:<port>`), to stall it with
 * SIGSTOP / SIGCONT.
 */
export function redisServerPid(port: number): number {
  const names = new RegExp(`redis-server.*(--port ${port}|:${port})(\\s|$)`);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
    } catch {
      continue;
    }
    if (names.test(cmdline)) return Number(entry);
  }
  throw new Error(`no redis-server process listening on port ${port}`);
}

/** SIGTERMs a worker and waits for its exit; returns the exit code (or the signal). */
export async function stopGracefully(w: PoolWorker, timeoutMs = 20_000): Promise<number | string> {
  w.kill('SIGTERM');
  const timer = setTimeout(() => w.kill('SIGKILL'), timeoutMs);
  try {
    const r = await w.exited;
    return r.code ?? r.signal ?? 'unknown';
  } finally {
    clearTimeout(timer);
  }
}

/** The summary a worker logs when it stops (`worker stopped`, info). */
export function stoppedSummary(
  w: PoolWorker,
): { delivered: number; eventsRead: number; dataflows?: Record<string, { delivered: number; failed: number }> } | undefined {
  const line = w.logs().find((l) => l.msg === 'worker stopped');
  return line?.summary as { delivered: number; eventsRead: number; dataflows?: Record<string, { delivered: number; failed: number }> } | undefined;
}
