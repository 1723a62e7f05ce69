/**
 * Raw ceilings, each run as a child process (`fork`, IPC) so it has a core to itself the way
 * the worker does: `process.argv[2]` is the JSON of a `CeilingTask`; the result is sent to the
 * parent as one message.
 *
 * - `undici`: a bare POST loop (same undici Agent settings as the transport, same
 *   concurrency as the destination's pool) with the bench's real export bodies and headers.
 * - `jetstream`: a bare consume-and-ack loop on a durable pull consumer with the worker's
 *   batch size and max_ack_pending.
 * - `redis`: the snapshot store's Redis round trips without the TypeScript around them: per
 *   update the read script, the compare-and-set script (with watermark and lease fence, as in
 *   pool mode), and the confirm HDEL (the same Lua, auto-pipelined, the worker's concurrency).
 * - `store`: `RedisSnapshotStore.apply` + `confirm` per update (JSON parse, merge, scripts):
 *   the store layer alone.
 */
import { CAS_LUA, CONFIRM_LUA, READ_LUA } from '../src/stores/redis-snapshot-store.js';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { Agent } from 'undici';
import { decideExports, exitedAudiences } from '../src/domain/diff.js';
import { idempotencyKey } from '../src/domain/keys.js';
import { applyUpdate } from '../src/domain/merge.js';
import { buildPayload, preparePayloadRules } from '../src/domain/payload.js';
import type { ProfileSnapshot, ProfileUpdate } from '../src/domain/types.js';
import { USER_AGENT } from '../src/sinks/http/request.js';
import { RedisSnapshotStore } from '../src/stores/redis-snapshot-store.js';
import { benchAudiences, BENCH_TOKEN, dataflowRules } from './config.js';
import { EventGenerator, stamp } from './events.js';

export type CeilingTask =
  | { kind: 'undici'; url: string; connections: number; seconds: number; flows: number; bodies: number }
  | { kind: 'jetstream'; servers: string; stream: string; subject: string; durable: string; count: number; batchSize: number; maxAckPending: number }
  | { kind: 'redis'; url: string; keyPrefix: string; count: number; profiles: number; concurrency: number }
  | { kind: 'store'; url: string; keyPrefix: string; count: number; profiles: number; concurrency: number };

export interface CeilingResult {
  kind: CeilingTask['kind'];
  /** Operations per second: requests, messages, or updates. */
  perSecond: number;
  ops: number;
  ms: number;
  /** CPU ms this process used while measuring. */
  cpuMs: number;
  note?: string;
}

function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Real export bodies and Idempotency-Keys: the bench's updates merged and built as the pipeline does. */
function exportBodies(n: number, flows: number): Array<{ body: string; key: string }> {
  const rules = dataflowRules(flows);
  const payloadRules = new Map(rules.map((r) => [r.id, preparePayloadRules(r, benchAudiences)]));
  const gen = new EventGenerator({ profiles: Math.max(1, Math.floor(n / 4)), prefix: 'ceil-http', seed: 7 });
  const snaps = new Map<string, ProfileSnapshot>();
  const out: Array<{ body: string; key: string }> = [];
  while (out.length < n) {
    const update = JSON.parse(stamp(gen.next().event, Date.now())) as ProfileUpdate;
    const before = snaps.get(update.profileId) ?? null;
    const after = applyUpdate(before, update);
    snaps.set(update.profileId, after);
    const applied = { update, before, after };
    const exited = exitedAudiences(applied);
    for (const d of decideExports(applied, rules)) {
      out.push({
        body: JSON.stringify(buildPayload(applied, payloadRules.get(d.dataflowId)!, exited)),
        key: idempotencyKey({ dataflowId: d.dataflowId, profileId: update.profileId, event: `event:${update.eventId}` }),
      });
    }
  }
  return out;
}

async function undiciCeiling(t: Extract<CeilingTask, { kind: 'undici' }>): Promise<CeilingResult> {
  const bodies = exportBodies(t.bodies, t.flows);
  const u = new URL(t.url);
  const agent = new Agent({
    connections: t.connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 120_000,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  let next = 0;
  let counting = false;
  let ops = 0;
  let stop = false;
  const one = async () => {
    while (!stop) {
      const b = bodies[next++ % bodies.length];
      const res = await agent.request({
        origin: u.origin,
        path: u.pathname,
        method: 'POST',
        headers: {
          'user-agent': USER_AGENT,
          'x-tenant': 'bench',
          'content-type': 'application/json',
          'idempotency-key': b.key,
          authorization: `Bearer ${BENCH_TOKEN}`,
        },
        body: b.body,
      });
      for await (const _ of res.body) {
        /* drain */
      }
      if (res.statusCode !== 200) throw new Error(`receiver answered ${res.statusCode}`);
      if (counting) ops++;
    }
  };
  const loops = Array.from({ length: t.connections }, one);
  // One second of warm-up (connections opened, JIT), then the measured window.
  await new Promise((r) => setTimeout(r, 1_000));
  counting = true;
  const c0 = cpuNow();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, t.seconds * 1_000));
  counting = false;
  const ms = performance.now() - t0;
  const cpuMs = cpuNow() - c0;
  stop = true;
  await Promise.all(loops);
  await agent.close();
  return { kind: 'undici', perSecond: (ops / ms) * 1000, ops, ms, cpuMs, note: `${t.connections} connections, ${bodies.length} distinct bodies` };
}

async function jetstreamCeiling(t: Extract<CeilingTask, { kind: 'jetstream' }>): Promise<CeilingResult> {
  const nc = await connect({ servers: t.servers, name: 'bench:ceiling' });
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add(t.stream, {
    durable_name: t.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: t.subject,
    max_ack_pending: t.maxAckPending,
  });
  const consumer = await jetstream(nc).consumers.get(t.stream, t.durable);
  let n = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const c0 = cpuNow();
  const t0 = performance.now();
  const msgs = await consumer.consume({
    max_messages: t.batchSize,
    callback: (m) => {
      m.ack();
      if (++n === t.count) done();
    },
  });
  await finished;
  const ms = performance.now() - t0;
  const cpuMs = cpuNow() - c0;
  await msgs.close();
  await nc.flush();
  await nc.close();
  return { kind: 'jetstream', perSecond: (n / ms) * 1000, ops: n, ms, cpuMs, note: `batch ${t.batchSize}, max_ack_pending ${t.maxAckPending}` };
}

// The store's own scripts (read, compare-and-set with the watermark and the lease fence,
// batched confirm), used the way the store uses them.

interface Scripts {
  benchRead(key: string, field: string, epochKey: string, epoch: string): Promise<[string | null, string | null, string | null, string | null]>;
  /** 1 when written; otherwise what the read script answers (the guess was wrong). */
  benchCas(numKeys: number, ...args: string[]): Promise<number | (string | null)[]>;
  benchConfirm(numKeys: number, ...args: string[]): Promise<number>;
}

/** Lanes that never share a profile: lane l takes updates l, l+C, …; profile = i mod P, P a multiple of C. */
async function lanes(count: number, concurrency: number, work: (i: number) => Promise<void>): Promise<void> {
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      for (let i = lane; i < count; i += concurrency) await work(i);
    }),
  );
}

async function redisCeiling(t: Extract<CeilingTask, { kind: 'redis' }>): Promise<CeilingResult> {
  const redis = new Redis(t.url, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
  redis.defineCommand('benchRead', { numberOfKeys: 1, lua: READ_LUA });
  redis.defineCommand('benchCas', { lua: CAS_LUA });
  redis.defineCommand('benchConfirm', { lua: CONFIRM_LUA });
  const s = redis as unknown as Scripts;
  // A snapshot of the size the pipeline stores (a merged bench profile, ~1.3 KB).
  const gen = new EventGenerator({ profiles: 1, prefix: 'ceil-redis' });
  let snap: ProfileSnapshot | null = null;
  for (let i = 0; i < 8; i++) snap = applyUpdate(snap, JSON.parse(stamp(gen.next().event, Date.now())) as ProfileUpdate);
  const snapshot = JSON.stringify(snap);
  const profiles = Math.max(t.concurrency, Math.ceil(t.profiles / t.concurrency) * t.concurrency);
  const audKey = `${t.keyPrefix}a:aud-1`;
  // Pool mode: every write is fenced by its partition's lease.
  const leaseKey = `${t.keyPrefix}pool:bench:lease:0`;
  await redis.set(leaseKey, 'bench-worker:1');
  // As the store: every script first checks the epoch marker (store-loss detection).
  const epochKey = `${t.keyPrefix}epoch`;
  const epoch = 'init:bench';
  await redis.set(epochKey, epoch);
  // As the store: the version this client last wrote is its guess (no read on a hit); the
  // confirms of one event-loop turn go out as one script call.
  const versions = new Map<string, number>();
  let confirmKeys: string[] = [];
  let confirmFields: string[] = [];
  let confirmWaiters: (() => void)[] = [];
  const confirm = (key: string, field: string): Promise<void> =>
    new Promise((resolve, reject) => {
      if (confirmKeys.length === 0) {
        setImmediate(() => {
          const keys = confirmKeys;
          const fields = confirmFields;
          const waiters = confirmWaiters;
          confirmKeys = [];
          confirmFields = [];
          confirmWaiters = [];
          s.benchConfirm(keys.length, ...keys, ...fields).then(() => {
            for (const w of waiters) w();
          }, reject);
        });
      }
      confirmKeys.push(key);
      confirmFields.push(field);
      confirmWaiters.push(resolve);
    });
  let reads = 0;
  const c0 = cpuNow();
  const t0 = performance.now();
  await lanes(t.count, t.concurrency, async (i) => {
    const id = `p${i % profiles}`;
    const key = `${t.keyPrefix}p:${id}`;
    const field = `r:js:BENCH:${i + 1}`;
    let version: string | null;
    let raw: string | null = null;
    const cached = versions.get(id);
    if (cached === undefined) {
      reads++;
      [raw, version] = await s.benchRead(key, field, epochKey, epoch);
    } else {
      version = String(cached);
      raw = snapshot;
    }
    const next = (version === null ? 0 : Number(version)) + 1;
    const keys = version === null ? [key, audKey] : [key];
    const ok = await s.benchCas(
      keys.length,
      ...keys,
      version ?? '0',
      String(next),
      snapshot,
      field,
      `{"v":${next},"b":${raw ?? 'null'}}`,
      id,
      String(keys.length - 1),
      '64',
      String(i + 1),
      leaseKey,
      'bench-worker:1',
      epochKey,
      epoch,
    );
    if (ok !== 1) throw new Error('unexpected CAS conflict');
    versions.set(id, next);
    await confirm(key, field);
  });
  const ms = performance.now() - t0;
  const cpuMs = cpuNow() - c0;
  await redis.quit();
  const trips = (reads + t.count) / t.count;
  return {
    kind: 'redis',
    perSecond: (t.count / ms) * 1000,
    ops: t.count,
    ms,
    cpuMs,
    note: `${trips.toFixed(2)} script calls/update + 1 confirm call per tick, concurrency ${t.concurrency}`,
  };
}

async function storeCeiling(t: Extract<CeilingTask, { kind: 'store' }>): Promise<CeilingResult> {
  const gen = new EventGenerator({ profiles: t.profiles, prefix: 'ceil-store', seed: 11 });
  const raw: string[] = [];
  for (let i = 0; i < t.count; i++) raw.push(stamp(gen.next().event, Date.now()));
  const store = new RedisSnapshotStore({ url: t.url, keyPrefix: t.keyPrefix });
  await store.get('warm-up');
  // As in pool mode: a watermark per message (increasing per profile in call order, which is
  // the store's apply order) and the partition lease as the fence of every write.
  const fence = { key: `${t.keyPrefix}pool:bench:lease:0`, value: 'bench-worker:1' };
  const admin = new Redis(t.url);
  await admin.set(fence.key, fence.value);
  await admin.quit();
  const marks = new Map<string, number>();
  const c0 = cpuNow();
  const t0 = performance.now();
  await lanes(t.count, t.concurrency, async (i) => {
    const update = JSON.parse(raw[i]) as ProfileUpdate;
    const key = `js:BENCH:${i + 1}`;
    const watermark = (marks.get(update.profileId) ?? 0) + 1;
    marks.set(update.profileId, watermark);
    await store.apply(update, { key, seq: i + 1, watermark, fence });
    await store.confirm(update.profileId, key);
  });
  const ms = performance.now() - t0;
  const cpuMs = cpuNow() - c0;
  await store.close();
  return { kind: 'store', perSecond: (t.count / ms) * 1000, ops: t.count, ms, cpuMs, note: `apply+confirm, concurrency ${t.concurrency}` };
}

async function main(): Promise<void> {
  const task = JSON.parse(process.argv[2]) as CeilingTask;
  let result: CeilingResult;
  switch (task.kind) {
    case 'undici':
      result = await undiciCeiling(task);
      break;
    case 'jetstream':
      result = await jetstreamCeiling(task);
      break;
    case 'redis':
      result = await redisCeiling(task);
      break;
    case 'store':
      result = await storeCeiling(task);
      break;
  }
  process.send?.({ result });
  process.disconnect?.();
}

if (process.send) {
  main().catch((err: unknown) => {
    process.send?.({ error: err instanceof Error ? err.stack ?? err.message : String(err) });
    process.exit(1);
  });
}
