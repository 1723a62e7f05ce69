/**
 * The options of the Redis snapshot store (redis-snapshot-store.ts), their defaults, and the
 * error of an `apply` that kept losing the compare-and-set race.
 */
import type { Redis } from 'ioredis';
import { DEFAULTS } from '../config/schema.js';
import { StoreError } from '../errors.js';
import { MAX_PENDING_PER_PROFILE } from './memory-snapshot-store.js';
import { EPOCH_DEFAULTS, type StoreLostError } from './redis-store-epoch.js';

/** Every default of the Redis snapshot store, in one place. */
export const REDIS_SNAPSHOT_STORE_DEFAULTS = {
  keyPrefix: 'hd:',
  /** Compare-and-set attempts after the first one before `apply` gives up. */
  maxConflictRetries: 32,
  /** Unconfirmed applications kept per profile (same bound as the memory store). */
  maxPendingPerProfile: MAX_PENDING_PER_PROFILE,
  /** A command with no reply after this long fails (a hung or unreachable server). */
  commandTimeoutMs: 5_000,
  /** Longest pause between two reconnection attempts of a client the store created. */
  reconnectMaxDelayMs: 1_000,
  /** Profile ids per batch of `members`. */
  batchSize: 500,
  /** Members per SSCAN step (and per RPUSH) of the script freezing a backfill's members. */
  freezeStep: 1_000,
  /** Profiles whose last known snapshot and version the store keeps (0: none). */
  cacheSize: 10_000,
  /** Most replay records one confirm script deletes (confirms of one tick beyond go in more scripts). */
  confirmBatch: 512,
  /** Largest snapshot (JSON, UTF-8 bytes); the update that would pass it is rejected. */
  maxSnapshotBytes: DEFAULTS.maxSnapshotBytes,
  /** While the store is lost, how often `apply` looks whether an operator re-initialised it. */
  lostRecheckMs: EPOCH_DEFAULTS.lostRecheckMs,
} as const;

export interface RedisSnapshotStoreOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`). Required unless `redis` is given. */
  url?: string;
  /** Prefix of every key the store writes. @default 'hd:' */
  keyPrefix?: string;
  /**
   * A client to use instead of creating one from `url` (it is not closed by `close()`). Give it
   * `enableAutoPipelining: true` and a small `maxRetriesPerRequest` for the behaviour described
   * below. @default a client created from `url`
   */
  redis?: Redis;
  /** Compare-and-set retries when another writer changed the profile meanwhile. @default 32 */
  maxConflictRetries?: number;
  /** Unconfirmed applications kept per profile; the oldest is dropped beyond. @default 64 */
  maxPendingPerProfile?: number;
  /** Command timeout of a client the store creates. @default 5000 */
  commandTimeoutMs?: number;
  /**
   * Profiles whose snapshot (JSON and parsed) and version this store last read or wrote are
   * kept, least recently applied dropped first: `apply` on one of them tries the
   * compare-and-set directly, without reading first. The version compare-and-set still guards
   * against other writers (a wrong guess costs what a read would have). About 3 KB per
   * profile with 1.2 KB snapshots (~30 MB at the default). `0` turns the cache off. @default 10000
   */
  cacheSize?: number;
  /**
   * Called with connection errors of the client (ioredis reconnects by itself; the calls made
   * meanwhile reject with `StoreError`). Messages carry no credentials. @default ignore them
   */
  onConnectionError?: (err: Error) => void;
  /**
   * Largest snapshot (JSON, UTF-8 bytes): `apply` of an update that would pass it rejects with
   * `EventRejectedError` `ERR_SNAPSHOT_TOO_LARGE` and writes nothing. @default 1048576
   */
  maxSnapshotBytes?: number;
  /**
   * Called once when the store finds its epoch marker missing or changed (Redis lost its data):
   * from then on `apply` rejects with `StoreLostError` until `pool reset-state`. Log it as an
   * error. @default ignore
   */
  onStoreLost?: (err: StoreLostError) => void;
  /** Called once when a lost store finds the marker re-initialised by `pool reset-state`. @default ignore */
  onStoreRestored?: () => void;
}

/** `apply` kept losing the compare-and-set race to other writers of the same profile. */
export class SnapshotConflictError extends StoreError {
  readonly profileId: string;
  readonly attempts: number;
  constructor(profileId: string, attempts: number) {
    super(`snapshot of profile ${profileId} kept changing under apply (${attempts} attempts)`);
    this.profileId = profileId;
    this.attempts = attempts;
  }
}
