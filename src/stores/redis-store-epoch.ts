/**
 * The Redis snapshot store's epoch marker (issue 13, store loss): `<prefix>epoch`, written by
 * the first store that finds none. The store's read and compare-and-set scripts compare it
 * with the epoch this class read; when it is missing or changed (Redis restarted empty, a
 * FLUSHALL, a failover to an empty replica) the store is *lost*: every apply rejects with
 * `StoreLostError` (`ERR_STORE_LOST`) until an operator runs `http-destination pool
 * reset-state`, which writes a new marker that lost stores adopt.
 *
 * The pool's retry queues and delivered marks (`<prefix>rq:*`, src/stores/redis-retry-queue.ts)
 * live under the same prefix and are covered by the same marker: each of their calls checks it
 * in its own round trip or script (an emptied Redis would otherwise read as "nothing queued"
 * and "nothing delivered yet", letting older states through), through a `RedisStoreEpoch` of
 * their own (`verify`/`current`/`mismatch`), with the same lost / reset-state behaviour.
 */
import { redisCall } from './redis-call.js';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { StoreError, StoreLostError } from '../errors.js';

export const EPOCH_DEFAULTS = {
  keyPrefix: 'hd:',
  /** While the store is lost, how often `current()` looks whether an operator re-initialised it. */
  lostRecheckMs: 1_000,
} as const;

export { StoreLostError };

/**
 * Values of the epoch marker: `init:<hex>` written by the first store that found none,
 * `reset:<hex>` by `pool reset-state`, `lost:<ISO time>` by a store that found it gone or
 * changed (so that a worker started later does not initialise a fresh epoch over the loss).
 */
const EPOCH_INIT = 'init:';
const EPOCH_RESET = 'reset:';
const EPOCH_LOST = 'lost:';

/** KEYS[1] the marker, ARGV[1] a new `init:` value: sets it when absent; returns the value. */
const EPOCH_INIT_LUA = `local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]`;

/**
 * KEYS[1] the marker, ARGV[1] the epoch this store held, ARGV[2] a `lost:` value: marks the
 * store lost unless the marker still holds ARGV[1] or is an operator's `reset:` value; returns
 * the marker's value.
 */
const EPOCH_LOST_LUA = `local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or (v and string.sub(v, 1, ${EPOCH_RESET.length}) == '${EPOCH_RESET}') then return v end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]`;

/**
 * `http-destination pool reset-state`: writes a new `reset:` epoch marker, so the workers of
 * a lost store resume (over what the store holds now). Returns the marker it replaced (null:
 * none). The operator action of the store-loss procedure (README, Operations).
 */
export async function resetStoreEpoch(redis: Redis, keyPrefix: string = EPOCH_DEFAULTS.keyPrefix): Promise<{ previous: string | null; epoch: string }> {
  const epoch = EPOCH_RESET + randomBytes(8).toString('hex');
  const previous = await redis.set(epochKey(keyPrefix), epoch, 'GET');
  return { previous, epoch };
}

export function epochKey(keyPrefix: string): string {
  return `${keyPrefix}epoch`;
}

interface EpochScripts {
  hdEpochInit(key: string, value: string): Promise<string>;
  hdEpochLost(key: string, held: string, lost: string): Promise<string>;
}

export interface RedisStoreEpochOptions {
  redis: Redis;
  keyPrefix: string;
  /** Called once per loss, with the error every apply rejects with from then on. @default ignore */
  onLost?: (err: StoreLostError) => void;
  /** Called when a lost store adopts an operator's new marker. @default ignore */
  onRestored?: () => void;
}

const noop = (): void => {};

/** The epoch state of one `RedisSnapshotStore` (one key prefix). */
export class RedisStoreEpoch {
  /** The marker's key, `<prefix>epoch`. */
  readonly key: string;
  private readonly redis: Redis;
  private readonly scripts: EpochScripts;
  private readonly onLost: (err: StoreLostError) => void;
  private readonly onRestored: () => void;
  /** The marker's value this store works under (null: not read yet, or found lost at start). */
  private epoch: string | null = null;
  /** Reading (or first writing) the marker, once, before the first apply. */
  private epochReady: Promise<void> | null = null;
  /** Set while the store is lost: every apply rejects with it. */
  private lostError: StoreLostError | null = null;
  /** When the lost store last looked for an operator's reset. */
  private lostCheckedAt = 0;

  constructor(options: RedisStoreEpochOptions) {
    this.redis = options.redis;
    this.key = epochKey(options.keyPrefix);
    this.onLost = options.onLost ?? noop;
    this.onRestored = options.onRestored ?? noop;
    this.redis.defineCommand('hdEpochInit', { numberOfKeys: 1, lua: EPOCH_INIT_LUA });
    this.redis.defineCommand('hdEpochLost', { numberOfKeys: 1, lua: EPOCH_LOST_LUA });
    this.scripts = this.redis as unknown as EpochScripts;
  }

  /** The error every apply rejects with while the store is lost, else null. */
  get lost(): StoreLostError | null {
    return this.lostError;
  }

  /** Compares the marker with the epoch this store works under (one round trip); rejects with `StoreLostError` on a loss. */
  async verify(): Promise<void> {
    const epoch = await this.current();
    const now = await this.call('epoch', () => this.redis.get(this.key));
    if (now !== epoch) await this.mismatch(epoch);
  }

  /**
   * The epoch this store works under: read (or, on a store never initialised, written as
   * `init:…`) before the first apply. Rejects with `StoreLostError` while the store is lost,
   * looking at most every `lostRecheckMs` whether an operator ran `pool reset-state`.
   */
  async current(): Promise<string> {
    if (this.lostError) {
      const now = Date.now();
      if (now - this.lostCheckedAt < EPOCH_DEFAULTS.lostRecheckMs) throw this.lostError;
      this.lostCheckedAt = now;
      const value = await this.call('epoch', () => this.redis.get(this.key));
      if (!this.isOperatorReset(value)) throw this.lostError;
      this.restore(value);
    }
    if (this.epoch === null) {
      const ready = (this.epochReady ??= this.read());
      try {
        await ready;
      } catch (err) {
        if (this.epochReady === ready) this.epochReady = null; // try again on the next call
        throw err;
      }
      if (this.lostError) throw this.lostError;
    }
    if (this.epoch === null) throw new StoreError('redis snapshot store: the epoch marker could not be read');
    return this.epoch;
  }

  private async read(): Promise<void> {
    const value = await this.call('epoch', () =>
      this.scripts.hdEpochInit(this.key, EPOCH_INIT + randomBytes(8).toString('hex')),
    );
    if (value.startsWith(EPOCH_LOST)) {
      this.markLost(`the store was found lost (${value}) and not re-initialised since`);
      return;
    }
    this.epoch = value;
  }

  /** A value written by `pool reset-state` that this store has not adopted yet. */
  private isOperatorReset(value: string | null): value is string {
    return value !== null && value.startsWith(EPOCH_RESET) && value !== this.epoch;
  }

  /** Adopts an operator's new epoch: the store works again, over what Redis holds now. */
  private restore(value: string): void {
    this.epoch = value;
    this.lostError = null;
    this.onRestored();
  }

  /**
   * The marker did not hold `epoch`. An operator's reset is adopted (and the call retried by
   * its caller, as after any store error); anything else marks the store lost, in Redis too.
   * Always throws.
   */
  async mismatch(epoch: string): Promise<never> {
    const value = await this.call('epoch', () =>
      this.scripts.hdEpochLost(this.key, epoch, `${EPOCH_LOST}${new Date().toISOString()}`),
    );
    if (value === epoch) throw new StoreError('redis snapshot store: the epoch marker changed and changed back; retrying');
    if (this.isOperatorReset(value)) {
      this.restore(value);
      throw new StoreError('redis snapshot store: the store was re-initialised (pool reset-state); retrying');
    }
    throw this.markLost(`the epoch marker ${this.key} is missing or changed (Redis lost its data)`);
  }

  /** Enters the lost state (once: the callback and its log line come once) and returns its error. */
  private markLost(why: string): StoreLostError {
    if (this.lostError) return this.lostError;
    this.lostCheckedAt = Date.now();
    this.lostError = new StoreLostError(
      `redis snapshot store: ${why}; nothing is applied or exported until an operator runs ` +
        '`http-destination pool reset-state` (README, Operations: store loss)',
    );
    this.onLost(this.lostError);
    return this.lostError;
  }

  /** Runs one Redis call (see `redisCall`). */
  private call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    return redisCall('redis snapshot store', op, fn);
  }
}
