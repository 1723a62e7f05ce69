/**
 * Backfill state of the Redis snapshot store (SPEC §8): per backfill its progress (a hash,
 * `<prefix>backfills`, field = backfill id, value = `BackfillState` JSON) and its frozen
 * member list (`<prefix>backfill:<id>:members`: `""` then the audience's members when it
 * began, read by index, deleted with the write of its `done` state).
 */
import type { Redis } from 'ioredis';
import { FencedError, StoreError } from '../errors.js';
import type { BackfillBegin, BackfillState } from './types.js';

/** Members per SSCAN step (and per RPUSH) of the script freezing a backfill's members. */
export const FREEZE_STEP = 1_000;

/**
 * Begins a backfill (SPEC §8), atomically: KEYS[1] the backfill states hash, KEYS[2] the
 * backfill's frozen members (a list), KEYS[3] the audience set; ARGV[1] the backfill id,
 * ARGV[2] members per step. A state that is done, or whose frozen list is there, is returned
 * as is (`resume`). Otherwise the audience's members are copied into the list, after one
 * empty-string element that marks the list as present even for an empty audience, and the
 * state `{ done: false, cursor: "0", sent }` is written (`start`, or `restart` with the
 * old `sent` when a state without its list was found). Returns [state JSON, phase].
 * A list, not a set copy: its index cursor means the same after a server restart, which an
 * SSCAN cursor does not (the hash seed changes). The copy is made by SSCAN steps, not one
 * SMEMBERS, so the script's memory stays bounded by a step for any audience size.
 */
export const BACKFILL_BEGIN_LUA = `local raw = redis.call('HGET', KEYS[1], ARGV[1])
local sent = 0
if raw then
  local s = cjson.decode(raw)
  if s.done or redis.call('EXISTS', KEYS[2]) == 1 then return {raw, 'resume'} end
  sent = tonumber(s.sent) or 0
end
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '')
local step = tonumber(ARGV[2])
local cursor = '0'
repeat
  local page = redis.call('SSCAN', KEYS[3], cursor, 'COUNT', step)
  cursor = page[1]
  local ids = page[2]
  for i = 1, #ids, step do redis.call('RPUSH', KEYS[2], unpack(ids, i, math.min(i + step - 1, #ids))) end
until cursor == '0'
local state = '{"done":false,"cursor":"0","sent":' .. string.format('%d', sent) .. '}'
redis.call('HSET', KEYS[1], ARGV[1], state)
return {state, raw and 'restart' or 'start'}`;

/**
 * One page of a backfill's frozen members: KEYS[1] the list, ARGV[1..2] the LRANGE bounds.
 * Returns [list length, ids], or nil when the list is gone (its marker element makes a
 * present list never empty).
 */
export const BACKFILL_SCAN_LUA = `local n = redis.call('LLEN', KEYS[1])
if n == 0 then return false end
return {n, redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])}`;

/**
 * A checkpoint of the elected backfiller, fenced: KEYS[1] the states hash, KEYS[2] the frozen
 * list, KEYS[3] the backfiller lock; ARGV[1] backfill id, ARGV[2] state JSON, ARGV[3] the lock
 * value the backfiller holds, ARGV[4] '1' when the state is done (the frozen list is dropped
 * with it). Writes only while the lock holds that value: 1 written, 0 fenced.
 */
export const BACKFILL_CHECKPOINT_LUA = `if redis.call('GET', KEYS[3]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] == '1' then redis.call('UNLINK', KEYS[2]) end
return 1`;

interface BackfillScripts {
  hdBackfillCheckpoint(states: string, frozen: string, lock: string, id: string, state: string, lockValue: string, done: string): Promise<number>;
  hdBackfillBegin(states: string, frozen: string, audience: string, id: string, step: number): Promise<[state: string, phase: BackfillBegin['phase']]>;
  hdBackfillScan(frozen: string, start: number, stop: number): Promise<[length: number, ids: string[]] | null>;
}

export interface RedisBackfillStateOptions {
  redis: Redis;
  keyPrefix: string;
  /** Runs one Redis call, turning a failure into a `StoreError`. */
  call: <T>(op: string, fn: () => Promise<T>) => Promise<T>;
  /** The key of an audience's member set. */
  audienceKey: (audienceId: string) => string;
  /** Members per step of the freeze script. @default FREEZE_STEP */
  freezeStep?: number;
}

/** The backfill part of `RedisSnapshotStore` (which checks the store's epoch before writes). */
export class RedisBackfillState {
  private readonly redis: Redis;
  private readonly scripts: BackfillScripts;
  private readonly keyPrefix: string;
  private readonly call: RedisBackfillStateOptions['call'];
  private readonly audienceKey: (audienceId: string) => string;
  private readonly freezeStep: number;

  constructor(options: RedisBackfillStateOptions) {
    this.redis = options.redis;
    this.keyPrefix = options.keyPrefix;
    this.call = options.call;
    this.audienceKey = options.audienceKey;
    this.freezeStep = options.freezeStep ?? FREEZE_STEP;
    this.redis.defineCommand('hdBackfillBegin', { numberOfKeys: 3, lua: BACKFILL_BEGIN_LUA });
    this.redis.defineCommand('hdBackfillScan', { numberOfKeys: 1, lua: BACKFILL_SCAN_LUA });
    this.redis.defineCommand('hdBackfillCheckpoint', { numberOfKeys: 3, lua: BACKFILL_CHECKPOINT_LUA });
    // defineCommand adds methods ioredis can only type through module augmentation.
    this.scripts = this.redis as unknown as BackfillScripts;
  }

  /**
   * One script (see `BACKFILL_BEGIN_LUA`). The copy blocks the server while it runs: about
   * 1–2 µs per member (0.1–0.25 s for 100,000, 1.3–1.8 s for 1,000,000 on a test machine),
   * once per backfill; the list takes about 40 bytes per member until the backfill is done.
   */
  async begin(id: string, audienceId: string): Promise<BackfillBegin> {
    const [raw, phase] = await this.call('backfill', () =>
      this.scripts.hdBackfillBegin(this.backfillsKey(), this.frozenKey(id), this.audienceKey(audienceId), id, this.freezeStep),
    );
    let state: BackfillState;
    try {
      state = JSON.parse(raw) as BackfillState;
    } catch (err) {
      throw new StoreError(`redis snapshot store: unreadable record for backfill ${id}`, { cause: err });
    }
    return { state, phase };
  }

  async get(id: string): Promise<BackfillState | null> {
    const raw = await this.call('backfill', () => this.redis.hget(this.backfillsKey(), id));
    return raw === null ? null : (JSON.parse(raw) as BackfillState);
  }

  async set(id: string, state: BackfillState): Promise<void> {
    const json = JSON.stringify(state);
    if (!state.done) {
      await this.call('backfill', () => this.redis.hset(this.backfillsKey(), id, json));
      return;
    }
    // Done and copy gone together: never a done state whose copy lingers, nor the reverse.
    // UNLINK frees a large copy off the server's main thread.
    await this.call('backfill', async () => {
      const replies = await this.redis.multi().hset(this.backfillsKey(), id, json).unlink(this.frozenKey(id)).exec();
      const failed = replies?.find(([err]) => err)?.[0];
      if (!replies || failed) throw failed ?? new Error('transaction aborted');
    });
  }

  /**
   * A checkpoint written only while the lock `fence.key` holds `fence.value` (the elected
   * backfiller's turn, worker/backfill-lock.ts); `FencedError` otherwise, and nothing written.
   */
  async setFenced(id: string, state: BackfillState, fence: { key: string; value: string }): Promise<void> {
    const written = await this.call('backfill', () =>
      this.scripts.hdBackfillCheckpoint(this.backfillsKey(), this.frozenKey(id), fence.key, id, JSON.stringify(state), fence.value, state.done ? '1' : '0'),
    );
    if (written !== 1) throw new FencedError(`backfill ${id}: the backfiller lock is not held any more; checkpoint not written`);
  }

  /** Every backfill's state (for `pool status`). */
  async all(): Promise<Record<string, BackfillState>> {
    const raw = await this.call('backfill', () => this.redis.hgetall(this.backfillsKey()));
    const out: Record<string, BackfillState> = {};
    for (const [id, json] of Object.entries(raw)) {
      try {
        out[id] = JSON.parse(json) as BackfillState;
      } catch {
        /* an unreadable record is left out of the report */
      }
    }
    return out;
  }

  /** A page of the frozen list of backfill `id`; the cursor is the list index of the next member. */
  async scanFrozen(id: string, options: { cursor: string; count: number }): Promise<{ ids: string[]; cursor: string; total: number }> {
    // Index 0 is the marker. A cursor this method did not make (none should reach it) reads
    // from the start: members may be sent twice, none is skipped.
    const at = Number(options.cursor);
    const from = Number.isSafeInteger(at) && at > 1 ? at : 1;
    const count = Math.max(1, Math.floor(options.count));
    const reply = await this.call('members', () => this.scripts.hdBackfillScan(this.frozenKey(id), from, from + count - 1));
    if (!reply) throw new StoreError(`redis snapshot store: the frozen members of backfill ${id} are gone`);
    const [length, ids] = reply;
    const next = from + ids.length;
    return { ids, cursor: next >= length ? '0' : String(next), total: length - 1 };
  }

  /** The hash of every backfill's state. */
  backfillsKey(): string {
    return `${this.keyPrefix}backfills`;
  }

  /** The frozen member list of one backfill. */
  frozenKey(backfillId: string): string {
    return `${this.keyPrefix}backfill:${backfillId}:members`;
  }
}
