/**
 * The pool coordinator: membership, partition ownership and leases of a pool of identical
 * workers, kept in Redis. See `createPoolCoordinator` for the algorithm and the key layout.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { asyncScheduler, Observable, Subject, type SchedulerLike, type Subscription } from 'rxjs';
import { ConfigError, HttpDestinationError, StoreError } from '../errors.js';

/** Every default of the pool coordinator, in one place. */
export const POOL_DEFAULTS = {
  keyPrefix: 'hd:',
  pool: 'default',
  /** Lifetime of a partition lease and of a membership heartbeat. */
  leaseMs: 5_000,
  /** Ticks per lease (`tickMs = leaseMs / ticksPerLease` unless given). */
  ticksPerLease: 5,
  /** Members whose heartbeat expired longer ago than this are removed from the member set. */
  memberRetentionMs: 60_000,
} as const;

/** What happens to this worker's ownership of a partition. */
export type OwnershipEvent =
  /** This worker now holds the partition's lease: start consuming it; fence writes with `epoch`. */
  | { type: 'acquired'; partition: number; epoch: number }
  /**
   * A rebalance wants the partition elsewhere: stop fetching it, finish what is in flight, ack,
   * then call `release(partition)`. The lease keeps being renewed until then.
   */
  | { type: 'revoke'; partition: number; epoch: number }
  /**
   * The lease could not be renewed (it expired — the process was paused, Redis was unreachable
   * for too long — or another worker holds it now): stop at once. Writes with `epoch` are
   * refused by the fenced stores anyway.
   */
  | { type: 'lost'; partition: number; epoch: number };

/** The partition count given to a worker differs from the one the pool was created with. */
export class PoolConfigError extends HttpDestinationError {
  declare readonly code: 'ERR_POOL_PARTITIONS';
  readonly pool: string;
  /** The count recorded in Redis by the pool's first worker. */
  readonly recorded: number;
  /** The count this worker was configured with. */
  readonly configured: number;
  constructor(pool: string, recorded: number, configured: number) {
    super(
      'ERR_POOL_PARTITIONS',
      `pool "${pool}" has ${recorded} partitions but this worker is configured with ${configured}: ` +
        `the partition count of a pool cannot change while it runs. To change it, stop every worker ` +
        `of the pool, run \`http-destination pool reset-partitions\`, then start the workers with ` +
        `the new count.`,
    );
    this.pool = pool;
    this.recorded = recorded;
    this.configured = configured;
  }
}

export interface PoolCoordinatorOptions {
  /**
   * The client to use (not closed by `close()`). Give it a `commandTimeout` well under `leaseMs`
   * and a small `maxRetriesPerRequest`, so a tick never waits long on an unreachable server.
   */
  redis: Redis;
  /** Prefix of every key. @default 'hd:' */
  keyPrefix?: string;
  /** Pool name (e.g. the durable consumer name); keys live under `<keyPrefix>pool:<pool>:`. @default 'default' */
  pool?: string;
  /**
   * This worker's id, unique per process (e.g. `${hostname}-${pid}-${random}`): two processes
   * with the same id would share leases and defeat fencing.
   */
  workerId: string;
  /** Number of partitions of the pool; must be the same on every worker. */
  partitions: number;
  /** Lifetime of a lease and of a heartbeat. @default 5000 */
  leaseMs?: number;
  /** Interval of heartbeats, renewals and acquisitions; less than `leaseMs / 2`. @default leaseMs / 5 */
  tickMs?: number;
  /**
   * Called with every error the coordinator survives: failed ticks (`StoreError`), a partition
   * count changed under a running pool (`PoolConfigError`), connection errors of the client.
   * @default ignore them
   */
  onError?: (err: Error) => void;
  /** Scheduler of the tick timer. @default asyncScheduler */
  scheduler?: SchedulerLike;
}

export interface PoolWorkerStatus {
  id: string;
  /** The heartbeat has not expired. */
  live: boolean;
  /** Milliseconds since the worker's last heartbeat (Redis clock); absent when unknown. */
  lastSeenMs?: number;
  /** Partitions whose lease it holds, ascending. */
  partitions: number[];
}

export interface PoolPartitionStatus {
  partition: number;
  /** Worker holding the lease, if any. */
  owner?: string;
  /** Epoch of that lease. */
  epoch?: number;
  /** Milliseconds left on that lease. */
  ttlMs?: number;
  /** Worker the assignment over the live workers gives it to (differs from `owner` while it moves). */
  desiredOwner?: string;
}

export interface PoolStatus {
  pool: string;
  /** Redis time of the reading, ms since the epoch. */
  nowMs: number;
  /** Partition count recorded for the pool, if any. */
  recordedPartitions?: number;
  workers: PoolWorkerStatus[];
  partitions: PoolPartitionStatus[];
}

export interface PoolCoordinator {
  readonly workerId: string;
  readonly partitions: number;
  /** Hot: ownership changes of this worker. Completes on `close()`; never errors. */
  readonly ownership$: Observable<OwnershipEvent>;
  /** Checks/records the partition count (`PoolConfigError` on a mismatch), joins, starts ticking. */
  start(): Promise<void>;
  /**
   * Gives a partition up: forgets it at once and deletes its lease if it is still ours
   * (compare-and-delete). A no-op for a partition not held. Rejects with `StoreError` when
   * Redis could not be told; the lease then expires within `leaseMs`.
   */
  release(partition: number): Promise<void>;
  /** The pool as Redis sees it (see `readPoolStatus`). */
  status(): Promise<PoolStatus>;
  /**
   * Raises the partition's epoch counter to at least `atLeast`, so the next lease taken on it
   * has a greater epoch. For a counter found behind what the partition's consumers were named
   * after (Redis lost its data while NATS kept them). Rejects with `StoreError`.
   */
  raiseEpoch(partition: number, atLeast: number): Promise<void>;
  /** Redis key of a partition's lease. */
  leaseKey(partition: number): string;
  /** Epoch of the lease this worker holds on the partition, or undefined. */
  currentEpoch(partition: number): number | undefined;
  /**
   * What a fenced write checks in its own script: `GET key == value` means the lease taken at
   * `epoch` is still this worker's.
   */
  fenceArgs(partition: number, epoch: number): { key: string; value: string };
  /** Partitions held now, ascending. */
  held(): Array<{ partition: number; epoch: number; revoking: boolean }>;
  /**
   * Whether this worker may still act for the partition under this epoch, by its own clock:
   * the lease is held and its last renewal is recent enough that it cannot have expired yet.
   * Synchronous and exact even right after the process was paused (before any tick ran), so
   * side effects (an HTTP export) can be fenced as the store fences writes.
   */
  holds(partition: number, epoch: number): boolean;
  /**
   * Stops ticking, releases every held lease (emitting 'lost' for each), leaves the membership
   * (so the others rebalance at once) and completes `ownership$`. Errors go to `onError`.
   */
  close(): Promise<void>;
}

/** The key layout of a pool. */
export interface PoolKeys {
  /** `<prefix>pool:<pool>:` */
  base: string;
  /** Sorted set: member = worker id, score = heartbeat expiry (ms, Redis clock). */
  workers: string;
  /** Hash: worker id → last heartbeat (ms, Redis clock). */
  heartbeats: string;
  /** String: the partition count of the pool. */
  partitions: string;
  /** String `<workerId>:<epoch>` with an expiry of `leaseMs`. */
  lease(partition: number): string;
  /** Integer: the last epoch handed out for the partition (INCR; never reset). */
  epoch(partition: number): string;
}

export function poolKeys(options: { keyPrefix?: string; pool?: string } = {}): PoolKeys {
  const base = `${options.keyPrefix ?? POOL_DEFAULTS.keyPrefix}pool:${options.pool ?? POOL_DEFAULTS.pool}:`;
  return {
    base,
    workers: `${base}workers`,
    heartbeats: `${base}heartbeats`,
    partitions: `${base}partitions`,
    lease: (p) => `${base}lease:${p}`,
    epoch: (p) => `${base}epoch:${p}`,
  };
}

/** The value of a lease: `<workerId>:<epoch>`. */
export function leaseValue(workerId: string, epoch: number): string {
  return `${workerId}:${epoch}`;
}

/** Splits a lease value at its last ':' (worker ids may contain ':'). */
export function parseLeaseValue(value: string): { owner: string; epoch: number } | undefined {
  const i = value.lastIndexOf(':');
  const epoch = Number(value.slice(i + 1));
  if (i < 0 || !Number.isSafeInteger(epoch)) return undefined;
  return { owner: value.slice(0, i), epoch };
}

/** Redis time in ms, in a script (TIME is allowed before writes since effects replication). */
const NOW_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * Heartbeat. KEYS: workers, heartbeats, partitions. ARGV: worker id, member ttl, retention,
 * partition count. Refreshes the member's expiry, drops members dead for longer than the
 * retention, records the partition count if it is missing; returns {now, recorded count, live ids}.
 */
const HEARTBEAT_LUA = `${NOW_LUA}
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f', now))
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - tonumber(ARGV[3])))
for i = 1, #dead do
  redis.call('ZREM', KEYS[1], dead[i])
  redis.call('HDEL', KEYS[2], dead[i])
end
local recorded = redis.call('GET', KEYS[3])
if not recorded then
  redis.call('SET', KEYS[3], ARGV[4])
  recorded = ARGV[4]
end
return { string.format('%.0f', now), recorded, redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%.0f', now), '+inf') }
`;

/** KEYS[1] partitions; ARGV[1] count. Records the count if missing; returns the recorded one. */
const RECORD_PARTITIONS_LUA = `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return v
`;

/** KEYS: lease, epoch counter. ARGV: worker id, lease ms. Returns the new epoch, or 0 when taken. */
const ACQUIRE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local e = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. e, 'PX', ARGV[2])
return e
`;

/** KEYS[1] lease; ARGV: value, lease ms. Compare-and-PEXPIRE: 1 renewed, 0 not ours any more. */
const RENEW_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

/** KEYS[1] lease; ARGV[1] value. Compare-and-delete: 1 deleted, 0 not ours. */
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** KEYS[1] epoch counter; ARGV[1] least value. Raises the counter to it; 1 raised, 0 already there. */
const RAISE_EPOCH_LUA = `
local e = tonumber(redis.call('GET', KEYS[1]) or '0')
if e < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
`;

/** KEYS: workers, heartbeats; ARGV[1] worker id. Leaves the membership. */
const LEAVE_LUA = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`;

type HeartbeatReply = [now: string, recorded: string, live: string[]];

interface PoolScripts {
  hdPoolHeartbeat(workers: string, heartbeats: string, partitions: string, id: string, ttl: number, retention: number, count: number): Promise<HeartbeatReply>;
  hdPoolRecordPartitions(partitions: string, count: number): Promise<string>;
  hdPoolAcquire(lease: string, epoch: string, id: string, leaseMs: number): Promise<number>;
  hdPoolRenew(lease: string, value: string, leaseMs: number): Promise<number>;
  hdPoolRelease(lease: string, value: string): Promise<number>;
  hdPoolLeave(workers: string, heartbeats: string, id: string): Promise<number>;
  hdPoolRaiseEpoch(epoch: string, atLeast: number): Promise<number>;
}

/** Registers the scripts on a client (idempotent) and returns it typed with them. */
function scriptsOf(redis: Redis): PoolScripts {
  const r = redis as unknown as Partial<PoolScripts>;
  if (typeof r.hdPoolHeartbeat !== 'function') {
    redis.defineCommand('hdPoolHeartbeat', { numberOfKeys: 3, lua: HEARTBEAT_LUA });
    redis.defineCommand('hdPoolRecordPartitions', { numberOfKeys: 1, lua: RECORD_PARTITIONS_LUA });
    redis.defineCommand('hdPoolAcquire', { numberOfKeys: 2, lua: ACQUIRE_LUA });
    redis.defineCommand('hdPoolRenew', { numberOfKeys: 1, lua: RENEW_LUA });
    redis.defineCommand('hdPoolRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
    redis.defineCommand('hdPoolLeave', { numberOfKeys: 2, lua: LEAVE_LUA });
    redis.defineCommand('hdPoolRaiseEpoch', { numberOfKeys: 1, lua: RAISE_EPOCH_LUA });
  }
  // defineCommand adds methods ioredis can only type through module augmentation.
  return redis as unknown as PoolScripts;
}

/** Weight of (worker, partition) for rendezvous hashing: the first 48 bits of sha1(`${id}:${p}`). */
export function rendezvousWeight(workerId: string, partition: number): number {
  return createHash('sha1').update(`${workerId}:${partition}`).digest().readUIntBE(0, 6);
}

/**
 * The desired owner of every partition among `workers`: bounded-load rendezvous hashing.
 * Every (worker, partition) pair gets a weight (`rendezvousWeight`); the pairs are taken from
 * the heaviest down (ties: worker id, then partition), and a pair assigns its partition to its
 * worker when the partition is still free and the worker is under its share — ⌊P/N⌋ partitions,
 * ⌊P/N⌋+1 for the first P mod N workers to reach ⌊P/N⌋. So every worker gets ⌊P/N⌋ or ⌊P/N⌋+1
 * partitions, and a join or a leave moves little more than the share of the worker that came
 * or went (plain rendezvous hashing moves the minimum but is badly unbalanced at 16 partitions).
 * Pure and deterministic: every worker seeing the same live set computes the same assignment.
 * Returns `owner[partition]` (undefined only when `workers` is empty).
 */
export function assignPartitions(
  workers: readonly string[],
  partitions: number,
  weight: (workerId: string, partition: number) => number = rendezvousWeight,
): Array<string | undefined> {
  const ids = [...new Set(workers)].sort();
  const owner = new Array<string | undefined>(partitions).fill(undefined);
  if (ids.length === 0) return owner;
  const pairs: Array<{ w: number; id: string; p: number }> = [];
  for (const id of ids) for (let p = 0; p < partitions; p++) pairs.push({ w: weight(id, p), id, p });
  pairs.sort((a, b) => b.w - a.w || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) || a.p - b.p);
  const base = Math.floor(partitions / ids.length);
  let extras = partitions % ids.length;
  const load = new Map<string, number>();
  let left = partitions;
  for (const { id, p } of pairs) {
    if (left === 0) break;
    if (owner[p] !== undefined) continue;
    const l = load.get(id) ?? 0;
    if (l >= base) {
      if (l > base || extras === 0) continue;
      extras--;
    }
    owner[p] = id;
    load.set(id, l + 1);
    left--;
  }
  return owner;
}

/** Reads the pool from Redis: members, owners, lease epochs and ttls. Needs no membership. */
export async function readPoolStatus(options: {
  redis: Redis;
  keyPrefix?: string;
  pool?: string;
  /** Partitions to list when the pool has none recorded. @default the recorded count, else 0 */
  partitions?: number;
}): Promise<PoolStatus> {
  const { redis } = options;
  const pool = options.pool ?? POOL_DEFAULTS.pool;
  const keys = poolKeys({ keyPrefix: options.keyPrefix, pool });
  try {
    const recordedRaw = await redis.get(keys.partitions);
    const recorded = recordedRaw === null ? undefined : Number(recordedRaw);
    const count = recorded ?? options.partitions ?? 0;
    const multi = redis.multi().time().zrange(keys.workers, 0, -1, 'WITHSCORES').hgetall(keys.heartbeats);
    for (let p = 0; p < count; p++) multi.get(keys.lease(p)).pttl(keys.lease(p));
    const replies = await multi.exec();
    if (!replies) throw new Error('transaction aborted');
    const values = replies.map(([err, value]) => {
      if (err) throw err;
      return value;
    });
    const [time, members, beats] = values as [[string, string], string[], Record<string, string>];
    const nowMs = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
    const workers = new Map<string, PoolWorkerStatus>();
    const live: string[] = [];
    for (let i = 0; i < members.length; i += 2) {
      const id = members[i];
      const isLive = Number(members[i + 1]) > nowMs;
      if (isLive) live.push(id);
      const beat = beats[id];
      workers.set(id, { id, live: isLive, ...(beat !== undefined && { lastSeenMs: Math.max(0, nowMs - Number(beat)) }), partitions: [] });
    }
    const desired = assignPartitions(live, count);
    const partitions: PoolPartitionStatus[] = [];
    for (let p = 0; p < count; p++) {
      const value = values[3 + 2 * p] as string | null;
      const ttl = values[4 + 2 * p] as number;
      const entry: PoolPartitionStatus = { partition: p };
      const lease = value === null ? undefined : parseLeaseValue(value);
      if (lease) {
        entry.owner = lease.owner;
        entry.epoch = lease.epoch;
        if (ttl >= 0) entry.ttlMs = ttl;
        let worker = workers.get(lease.owner);
        if (!worker) {
          const beat = beats[lease.owner];
          worker = { id: lease.owner, live: false, ...(beat !== undefined && { lastSeenMs: Math.max(0, nowMs - Number(beat)) }), partitions: [] };
          workers.set(lease.owner, worker);
        }
        worker.partitions.push(p);
      }
      if (desired[p] !== undefined) entry.desiredOwner = desired[p];
      partitions.push(entry);
    }
    return {
      pool,
      nowMs,
      ...(recorded !== undefined && { recordedPartitions: recorded }),
      workers: [...workers.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
      partitions,
    };
  } catch (err) {
    throw storeError('status', err);
  }
}

function storeError(op: string, err: unknown): StoreError {
  if (err instanceof StoreError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new StoreError(`pool coordinator: ${op} failed: ${reason}`, { cause: err });
}

const noop = (): void => {};

/** A lease this worker holds. */
interface Lease {
  partition: number;
  epoch: number;
  value: string;
  /** performance.now() after which the lease is no longer trusted locally. */
  validUntil: number;
  revoking: boolean;
  /** Set when it stopped being held: released by the worker, lost, or closed. */
  dropped?: 'released' | 'lost' | 'closed';
}

/**
 * Creates the coordinator of one worker of a pool: it keeps the worker in the pool's
 * membership and tells it, through `ownership$`, which partitions it owns.
 *
 * Algorithm, every `tickMs` (timers through `scheduler`; none left after `close()`):
 * 1. Leases whose last successful renewal was sent more than `leaseMs - tickMs` ago (Redis
 *    unreachable, or the process was paused) are 'lost' at once, before Redis expires them.
 * 2. Unless the previous tick is still waiting on Redis, in one round trip: every held lease is
 *    renewed (Lua compare-and-PEXPIRE on `<workerId>:<epoch>`; not ours any more → 'lost'),
 *    then the heartbeat: `ZADD workers <Redis TIME + leaseMs> <workerId>` — the score is an
 *    expiry from Redis's clock, never the local one, so a paused or skewed host cannot fake
 *    liveness — which returns the live workers (score > now). The heartbeat goes after the
 *    renewals, so a crashed worker leaves the live set no earlier than its leases expire.
 * 3. The desired owner of every partition is `assignPartitions(live workers)`, bounded-load
 *    rendezvous hashing (the same everywhere, so a join or a leave moves few partitions).
 * 4. Each partition desired here and not held: acquire (Lua: only if the lease key is absent,
 *    `INCR epoch:<p>`, `SET lease:<p> <workerId>:<epoch> PX leaseMs`) → 'acquired'.
 *    Each held partition desired elsewhere: 'revoke', once. The coordinator never releases it
 *    itself: it keeps renewing it until the worker, drained, calls `release(partition)`; then the
 *    desired owner acquires it on its next tick.
 * A crashed owner's leases expire after at most `leaseMs`, and so does its heartbeat; the
 * desired owners take its partitions within `leaseMs + tickMs`. A closing worker releases its
 * leases and leaves the membership, so the others take over on their next tick.
 *
 * Key layout (`poolKeys`), with `hd:` and pool `orders`:
 * - `hd:pool:orders:workers` — sorted set, member = worker id, score = heartbeat expiry (ms, Redis time);
 * - `hd:pool:orders:heartbeats` — hash, worker id → last heartbeat (ms, Redis time);
 * - `hd:pool:orders:partitions` — the partition count, written by the first worker;
 * - `hd:pool:orders:lease:<p>` — `<workerId>:<epoch>`, expiring after `leaseMs`;
 * - `hd:pool:orders:epoch:<p>` — the last epoch handed out (never reset, so epochs only grow).
 *
 * Fencing: a write that must come from the partition's owner checks, in the same script as the
 * write, that `GET <lease key>` equals `<workerId>:<epoch>` (`fenceArgs(partition, epoch)`).
 * A worker that lost its lease — even one that does not know it yet — can then write no more:
 * the key expired, or holds another worker's value, or a later epoch.
 *
 * Throws `ConfigError` at once for options out of range (no partitions, `tickMs >= leaseMs / 2`…).
 *
 * @example
 * const pool = createPoolCoordinator({ redis, pool: 'orders', workerId: `${hostname()}-${pid}`, partitions: 16 });
 * pool.ownership$.subscribe((e) => {
 *   if (e.type === 'acquired') startConsuming(e.partition, e.epoch);
 *   if (e.type === 'revoke') void drain(e.partition).then(() => pool.release(e.partition));
 *   if (e.type === 'lost') stopAtOnce(e.partition);
 * });
 * await pool.start(); // PoolConfigError (ERR_POOL_PARTITIONS) when the count differs
 * // in the store's script: if redis.call('GET', KEYS[n]) ~= ARGV[m] then return -1 end
 * const { key, value } = pool.fenceArgs(partition, epoch);
 * // …
 * await pool.close();
 */
export function createPoolCoordinator(options: PoolCoordinatorOptions): PoolCoordinator {
  const { redis, workerId, partitions } = options;
  const pool = options.pool ?? POOL_DEFAULTS.pool;
  const keyPrefix = options.keyPrefix ?? POOL_DEFAULTS.keyPrefix;
  const leaseMs = options.leaseMs ?? POOL_DEFAULTS.leaseMs;
  const tickMs = options.tickMs ?? Math.max(1, Math.floor(leaseMs / POOL_DEFAULTS.ticksPerLease));
  const scheduler = options.scheduler ?? asyncScheduler;
  const onError = options.onError ?? noop;
  const retentionMs = Math.max(POOL_DEFAULTS.memberRetentionMs, 10 * leaseMs);

  if (!workerId) throw new ConfigError('workerId', 'a worker id is required');
  if (!Number.isSafeInteger(partitions) || partitions < 1) throw new ConfigError('partitions', `must be a positive integer, got ${partitions}`);
  if (!Number.isSafeInteger(leaseMs) || leaseMs < 10) throw new ConfigError('leaseMs', `must be an integer of at least 10, got ${leaseMs}`);
  if (!(tickMs > 0) || tickMs * 2 >= leaseMs) throw new ConfigError('tickMs', `must be positive and less than leaseMs / 2 (${leaseMs / 2}), got ${tickMs}`);

  const keys = poolKeys({ keyPrefix, pool });
  const scripts = scriptsOf(redis);
  const events = new Subject<OwnershipEvent>();
  const leases = new Map<number, Lease>();
  const acquiring = new Set<number>();
  let state: 'new' | 'starting' | 'running' | 'closed' = 'new';
  let timer: Subscription | undefined;
  let inFlight: Promise<void> | undefined;
  let mismatchReported = false;
  /** The assignment of the last live set seen (recomputed only when the live set changes). */
  let lastLive: { key: string; desired: Array<string | undefined> } = { key: '', desired: [] };

  redis.on('error', onError);

  const report = (op: string, err: unknown): void => {
    try {
      onError(storeError(op, err));
    } catch {
      // a throwing error callback must not stop the coordinator
    }
  };

  const emit = (list: OwnershipEvent[]): void => {
    for (const e of list) if (!events.closed) events.next(e);
  };

  /** Drops a lease locally; returns its 'lost' event. */
  const drop = (lease: Lease, why: 'lost' | 'closed'): OwnershipEvent => {
    lease.dropped = why;
    if (leases.get(lease.partition) === lease) leases.delete(lease.partition);
    return { type: 'lost', partition: lease.partition, epoch: lease.epoch };
  };

  /** Best effort: deletes a lease Redis may still hold for us although we dropped it. */
  const forget = (partition: number, value: string): void => {
    scripts.hdPoolRelease(keys.lease(partition), value).catch((err: unknown) => report('release', err));
  };

  const expireLocally = (): void => {
    const now = performance.now();
    const lost: OwnershipEvent[] = [];
    for (const lease of [...leases.values()]) if (now > lease.validUntil) lost.push(drop(lease, 'lost'));
    emit(lost);
  };

  const tick = async (): Promise<void> => {
    const sentAt = performance.now();
    const held = [...leases.values()];
    const renewals = held.map((lease) => scripts.hdPoolRenew(keys.lease(lease.partition), lease.value, leaseMs));
    const heartbeat = scripts.hdPoolHeartbeat(keys.workers, keys.heartbeats, keys.partitions, workerId, leaseMs, retentionMs, partitions);
    const [renewed, beat] = await Promise.all([Promise.allSettled(renewals), heartbeat.then((r) => ({ ok: true as const, r }), (err: unknown) => ({ ok: false as const, err }))]);

    const out: OwnershipEvent[] = [];
    let renewError: unknown;
    renewed.forEach((result, i) => {
      const lease = held[i];
      if (result.status === 'rejected') {
        renewError ??= result.reason;
        return;
      }
      if (lease.dropped) {
        // Renewed after we dropped it (lost locally, or closed): do not leave it held in Redis.
        if (result.value === 1 && lease.dropped !== 'released') forget(lease.partition, lease.value);
        return;
      }
      if (result.value === 1) lease.validUntil = Math.max(lease.validUntil, sentAt + leaseMs - tickMs);
      else out.push(drop(lease, 'lost'));
    });
    if (renewError !== undefined) report('renew', renewError);
    if (!beat.ok) {
      report('heartbeat', beat.err);
      emit(out);
      return;
    }
    if (state === 'closed') {
      emit(out);
      return;
    }
    const [, recordedRaw, live] = beat.r;
    const recorded = Number(recordedRaw);
    if (recorded !== partitions) {
      // Someone reset the pool to another count under us: keep what is held, take nothing new.
      if (!mismatchReported) {
        mismatchReported = true;
        try {
          onError(new PoolConfigError(pool, recorded, partitions));
        } catch {
          // ignore
        }
      }
      emit(out);
      return;
    }
    mismatchReported = false;
    const liveKey = [...live].sort().join('\n');
    if (liveKey !== lastLive.key) lastLive = { key: liveKey, desired: assignPartitions(live, partitions) };
    const { desired } = lastLive;
    const wanted: number[] = [];
    for (let p = 0; p < partitions; p++) {
      const lease = leases.get(p);
      if (desired[p] === workerId) {
        if (!lease && !acquiring.has(p)) wanted.push(p);
      } else if (lease && !lease.revoking) {
        lease.revoking = true;
        out.push({ type: 'revoke', partition: p, epoch: lease.epoch });
      }
    }
    emit(out);
    if (wanted.length === 0) return;
    for (const p of wanted) acquiring.add(p);
    const acquireAt = performance.now();
    const results = await Promise.allSettled(wanted.map((p) => scripts.hdPoolAcquire(keys.lease(p), keys.epoch(p), workerId, leaseMs)));
    const acquired: OwnershipEvent[] = [];
    let acquireError: unknown;
    results.forEach((result, i) => {
      const p = wanted[i];
      acquiring.delete(p);
      if (result.status === 'rejected') {
        acquireError ??= result.reason;
        return;
      }
      const epoch = Number(result.value);
      if (epoch <= 0) return;
      const value = leaseValue(workerId, epoch);
      if (state === 'closed') {
        forget(p, value);
        return;
      }
      leases.set(p, { partition: p, epoch, value, validUntil: acquireAt + leaseMs - tickMs, revoking: false });
      acquired.push({ type: 'acquired', partition: p, epoch });
    });
    if (acquireError !== undefined) report('acquire', acquireError);
    emit(acquired);
  };

  const runTick = (): void => {
    if (inFlight || state !== 'running') return;
    inFlight = tick()
      .catch((err: unknown) => report('tick', err))
      .finally(() => {
        inFlight = undefined;
      });
  };

  const fire = (): void => {
    timer = undefined;
    if (state !== 'running') return;
    expireLocally();
    runTick();
    timer = scheduler.schedule(fire, tickMs);
  };

  return {
    workerId,
    partitions,
    ownership$: events.asObservable(),

    async start(): Promise<void> {
      if (state !== 'new') throw new StoreError(`pool coordinator: start() called more than once, or after close() (worker ${workerId})`);
      state = 'starting';
      try {
        const recorded = Number(await scripts.hdPoolRecordPartitions(keys.partitions, partitions));
        if (recorded !== partitions) throw new PoolConfigError(pool, recorded, partitions);
        // Join at once; partitions are taken from the first tick on, so workers starting
        // together see each other before any of them acquires.
        await scripts.hdPoolHeartbeat(keys.workers, keys.heartbeats, keys.partitions, workerId, leaseMs, retentionMs, partitions);
      } catch (err) {
        state = 'new';
        if (err instanceof PoolConfigError) throw err;
        throw storeError('start', err);
      }
      if ((state as string) === 'closed') {
        // close() ran meanwhile and may have left before this heartbeat landed: leave again.
        await scripts.hdPoolLeave(keys.workers, keys.heartbeats, workerId).catch((err: unknown) => report('close', err));
        return;
      }
      state = 'running';
      timer = scheduler.schedule(fire, tickMs);
    },

    async release(partition: number): Promise<void> {
      const lease = leases.get(partition);
      if (!lease) return;
      lease.dropped = 'released';
      leases.delete(partition);
      try {
        await scripts.hdPoolRelease(keys.lease(partition), lease.value);
      } catch (err) {
        throw storeError('release', err);
      }
    },

    status(): Promise<PoolStatus> {
      return readPoolStatus({ redis, keyPrefix, pool, partitions });
    },

    async raiseEpoch(partition: number, atLeast: number): Promise<void> {
      try {
        await scripts.hdPoolRaiseEpoch(keys.epoch(partition), atLeast);
      } catch (err) {
        throw storeError('raise epoch', err);
      }
    },

    leaseKey: (partition) => keys.lease(partition),

    currentEpoch: (partition) => leases.get(partition)?.epoch,

    fenceArgs: (partition, epoch) => ({ key: keys.lease(partition), value: leaseValue(workerId, epoch) }),

    holds: (partition, epoch) => {
      const lease = leases.get(partition);
      return lease !== undefined && lease.epoch === epoch && performance.now() <= lease.validUntil;
    },

    held: () =>
      [...leases.values()]
        .map(({ partition, epoch, revoking }) => ({ partition, epoch, revoking }))
        .sort((a, b) => a.partition - b.partition),

    async close(): Promise<void> {
      if (state === 'closed') return;
      const wasJoined = state !== 'new';
      state = 'closed';
      timer?.unsubscribe();
      timer = undefined;
      // A tick waiting on Redis finishes on its own; acquisitions it brings back are released.
      if (inFlight) {
        let giveUp: NodeJS.Timeout | undefined;
        await Promise.race([inFlight, new Promise<void>((resolve) => (giveUp = setTimeout(resolve, leaseMs)))]);
        clearTimeout(giveUp);
      }
      const held = [...leases.values()];
      const lost = held.map((lease) => drop(lease, 'closed'));
      const results = await Promise.allSettled([
        ...held.map((lease) => scripts.hdPoolRelease(keys.lease(lease.partition), lease.value)),
        ...(wasJoined ? [scripts.hdPoolLeave(keys.workers, keys.heartbeats, workerId)] : []),
      ]);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) report('close', failed.reason);
      emit(lost);
      events.complete();
      redis.off('error', onError);
    },
  };
}
