/**
 * The pool's vocabulary: defaults, options and status types of the coordinator, its Redis key
 * layout and lease values (pool.ts runs them).
 */
import type { Redis } from 'ioredis';
import type { Observable, SchedulerLike } from 'rxjs';
import { HttpDestinationError } from '../errors.js';

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
