/**
 * The backfiller's turn (pool mode): one Redis lock per pool, `<prefix>pool:<pool>:backfiller`,
 * holding `<workerId>:<token>` with an expiry of `leaseMs`, the token drawn from a counter that
 * only grows (`…:backfiller:epoch`). The holder renews it every `leaseMs / 3`; a holder that
 * dies stops renewing, the lock expires and another worker takes it (with a greater token).
 * Every checkpoint of the holder is written by a script that checks the lock still holds its
 * value (the fence): a paused holder that lost its turn writes nothing more.
 */
import type { Redis } from 'ioredis';
import { StoreError } from '../errors.js';
import type { BackfillState } from '../stores/types.js';
import { scriptsOf } from './pool-scripts.js';
import { leaseValue, parseLeaseValue, poolKeys } from './pool-types.js';

/** A turn of the backfiller: held until released or lost. */
export interface BackfillTurn {
  /** `<workerId>:<token>`. */
  readonly value: string;
  /** False once a renewal found the lock gone or taken (or it was released). */
  holds(): boolean;
  /** Writes a checkpoint only while the turn holds (`FencedError` otherwise). */
  checkpoint(id: string, state: BackfillState): Promise<void>;
  /** Gives the turn up (compare-and-delete) and stops renewing. */
  release(): Promise<void>;
}

/** Who may walk the backfills and publish their items. */
export interface BackfillLock {
  /** Takes the turn when it is free; undefined when another worker holds it. */
  acquire(): Promise<BackfillTurn | undefined>;
  /** The current holder (for logs and `pool status`). */
  holder(): Promise<{ owner: string; token: number } | undefined>;
}

/** The keys of a pool's backfiller lock. */
export function backfillLockKeys(options: { keyPrefix?: string; pool?: string }): { lock: string; epoch: string } {
  const base = poolKeys(options).base;
  return { lock: `${base}backfiller`, epoch: `${base}backfiller:epoch` };
}

/**
 * The Redis lock of a pool's backfiller. `checkpoint` is the store's fenced write
 * (`RedisSnapshotStore.setBackfillFenced`).
 *
 * @example
 * const turn = await lock.acquire();
 * if (turn) try { await walk(turn.checkpoint) } finally { await turn.release() }
 */
export function redisBackfillLock(options: {
  redis: Redis;
  keyPrefix?: string;
  pool?: string;
  workerId: string;
  leaseMs: number;
  checkpoint: (id: string, state: BackfillState, fence: { key: string; value: string }) => Promise<void>;
  /** Called when a renewal finds the turn lost. */
  onLost?: () => void;
}): BackfillLock {
  const keys = backfillLockKeys(options);
  const scripts = scriptsOf(options.redis);
  const wrap = async <T>(op: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw new StoreError(`backfiller lock: ${op} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  };
  return {
    async acquire() {
      const token = await wrap('acquire', () => scripts.hdPoolAcquire(keys.lock, keys.epoch, options.workerId, options.leaseMs));
      if (!token) return undefined;
      const value = leaseValue(options.workerId, Number(token));
      let held = true;
      const timer = setInterval(() => {
        scripts.hdPoolRenew(keys.lock, value, options.leaseMs).then(
          (ok) => {
            if (ok === 1 || !held) return;
            held = false;
            clearInterval(timer);
            options.onLost?.();
          },
          () => {
            /* Redis unreachable: the next renewal tries again; the lock may expire meanwhile */
          },
        );
      }, Math.max(50, Math.floor(options.leaseMs / 3)));
      timer.unref();
      return {
        value,
        holds: () => held,
        checkpoint: (id, state) => options.checkpoint(id, state, { key: keys.lock, value }),
        release: async () => {
          held = false;
          clearInterval(timer);
          await scripts.hdPoolRelease(keys.lock, value).catch(() => undefined);
        },
      };
    },
    async holder() {
      const v = await wrap('read', () => options.redis.get(keys.lock));
      const parsed = v === null ? undefined : parseLeaseValue(v);
      return parsed && { owner: parsed.owner, token: parsed.epoch };
    },
  };
}

/**
 * The lock of a lone worker (JetStream source without Redis: one worker per durable
 * consumer): always free to this process, checkpoints unfenced.
 */
export function localBackfillLock(checkpoint: (id: string, state: BackfillState) => Promise<void>, workerId = 'this-worker'): BackfillLock {
  return {
    async acquire() {
      let held = true;
      return { value: `${workerId}:1`, holds: () => held, checkpoint, release: async () => void (held = false) };
    },
    async holder() {
      return undefined;
    },
  };
}
