/**
 * `pool status`: reads the pool from Redis (members, owners, lease epochs and ttls) without
 * joining it.
 */
import type { Redis } from 'ioredis';
import { StoreError } from '../errors.js';
import { assignPartitions } from '../domain/assignment.js';
import { parseLeaseValue, poolKeys, POOL_DEFAULTS, type PoolPartitionStatus, type PoolStatus, type PoolWorkerStatus } from '../worker/pool-types.js';

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

/** One backfill as `pool status` shows it. */
export interface BackfillStatus {
  id: string;
  dataflowId: string;
  audienceId: string;
  /** Items published to the stream (checkpointed). */
  published: number;
  /** Members frozen when it began, once known. */
  total?: number;
  done: boolean;
  /** Not begun yet (no worker with this mapping has started). */
  pending?: boolean;
}

/**
 * The backfills of the config's mappings (progress from `<prefix>backfills`) and the holder of
 * the pool's backfiller lock (`<prefix>pool:<pool>:backfiller`), if any.
 */
export async function readBackfillStatus(options: {
  redis: Redis;
  keyPrefix: string;
  pool: string;
  dataflows: ReadonlyArray<{ id: string; audiences: ReadonlyArray<{ id: string; mappingCreatedAt?: number }> }>;
}): Promise<{ backfills: BackfillStatus[]; backfiller?: { owner: string; token: number } }> {
  const { redis, keyPrefix } = options;
  try {
    const [states, lock] = await Promise.all([
      redis.hgetall(`${keyPrefix}backfills`),
      redis.get(`${poolKeys({ keyPrefix, pool: options.pool }).base}backfiller`),
    ]);
    const backfills: BackfillStatus[] = [];
    for (const flow of options.dataflows) {
      for (const m of flow.audiences) {
        const id = `${flow.id}|${m.id}|${m.mappingCreatedAt ?? 0}`;
        const raw = states[id];
        let state: { done?: boolean; sent?: number; total?: number } | undefined;
        try {
          state = raw === undefined ? undefined : (JSON.parse(raw) as typeof state);
        } catch {
          state = undefined;
        }
        backfills.push({
          id,
          dataflowId: flow.id,
          audienceId: m.id,
          published: state?.sent ?? 0,
          ...(state?.total !== undefined && { total: state.total }),
          done: state?.done === true,
          ...(state === undefined && { pending: true }),
        });
      }
    }
    const holder = lock === null ? undefined : parseLeaseValue(lock);
    return { backfills, ...(holder && { backfiller: { owner: holder.owner, token: holder.epoch } }) };
  } catch (err) {
    throw storeError('backfill status', err);
  }
}
