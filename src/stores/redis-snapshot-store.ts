/**
 * The Redis snapshot store: profile snapshots and audience membership indexes in Redis, for a
 * pool of workers. Same semantics as `MemorySnapshotStore` (the contract suite in
 * test/stores runs against both).
 */
import { redisCall } from './redis-call.js';
import { Redis } from 'ioredis';
import { membershipChanges } from '../domain/diff.js';
import { mergeChecked } from '../domain/merge-checked.js';
import type { ProfileSnapshot, ProfileUpdate } from '../domain/types.js';
import { FencedError, StoreError } from '../errors.js';
import { RedisBackfillState } from './redis-backfill-state.js';
import { audienceMembers, scanAudience } from './redis-audience-members.js';
import { ConfirmBatcher } from './redis-confirm-batch.js';
import { REDIS_SNAPSHOT_STORE_DEFAULTS, SnapshotConflictError, type RedisSnapshotStoreOptions } from './redis-snapshot-options.js';
import { SnapshotCache, type Known } from './redis-snapshot-cache.js';
import { CAS_LUA, CONFIRM_LUA, FIELD_SNAPSHOT, READ_LUA, REPLAY_PREFIX, type ReadReply, type ScriptCommands } from './redis-snapshot-scripts.js';
import { RedisStoreEpoch, type StoreLostError } from './redis-store-epoch.js';
import type { ApplyContext, ApplyResult, BackfillBegin, BackfillState, SnapshotStore } from './types.js';

export { StoreLostError, resetStoreEpoch } from './redis-store-epoch.js';
export { CAS_LUA, CONFIRM_LUA, READ_LUA } from './redis-snapshot-scripts.js';
export { REDIS_SNAPSHOT_STORE_DEFAULTS, SnapshotConflictError, type RedisSnapshotStoreOptions } from './redis-snapshot-options.js';

/** A stored replay record: the version this application produced and the snapshot before it. */
interface ReplayRecord {
  v: number;
  b: ProfileSnapshot | null;
}

const noop = (): void => {};

/**
 * `SnapshotStore` on Redis: the merge runs in TypeScript (`applyUpdate`, the one merge of the
 * project) and the write is an optimistic compare-and-set, so two workers touching the same
 * profile never lose an update.
 *
 * Record layout (with the default prefix `hd:`):
 * - `hd:p:<profileId>` — a hash: `s` the snapshot JSON, `v` its version (incremented by every
 *   application), and one `r:<message key>` per unconfirmed application holding
 *   `{"v":<version it produced>,"b":<snapshot before it>}` — at most `maxPendingPerProfile`
 *   of them, the oldest (lowest `v`) dropped beyond. The state right after that
 *   application is not stored: `applyUpdate` is pure, so it is `applyUpdate(b, update)` again,
 *   even when later updates were applied since.
 * - `hd:a:<audienceId>` — a set of the profile ids currently *in* the audience (realized or
 *   existing), changed in the same script as the snapshot.
 * - `hd:epoch` — the epoch marker (`init:<hex>`, `reset:<hex>` or `lost:<time>`): the read and
 *   compare-and-set scripts check it first, so nothing is read as "no change" from, or written
 *   into, a store that lost its data (`StoreLostError`, `ERR_STORE_LOST`, until `pool reset-state`).
 * - `hd:backfills` — a hash: field = backfill id, value = its `BackfillState` JSON.
 * - `hd:backfill:<backfill id>:members` — a list: `""` then the audience's members when the
 *   backfill began (`beginBackfill`, same script as its first state), read by index
 *   (`scanMembers` with `frozenAs`), deleted with the write of its `done` state.
 *
 * `apply` merges into the snapshot this store last read or wrote for the profile when it still
 * has it (`cacheSize`), else reads the record first (a small read script); then it writes with
 * a compare-and-set script on `v`. When the version is not the expected one (another writer,
 * or a cached guess gone stale), or the message turns out to be a redelivery, that script
 * answers with the record as the read would have, and `apply` decides again from it: at most
 * `maxConflictRetries` lost compare-and-sets after the first one, then `SnapshotConflictError`.
 * So a cached profile costs one round trip, an uncached one two. Calls of one store on the same
 * profile run in call order; calls on different profiles share round trips through ioredis
 * auto-pipelining. Scripts go as EVALSHA (loaded once, reloaded by ioredis after a server
 * restart).
 *
 * `confirm` calls of one event-loop turn are deleted together by one script (one round trip
 * for all profiles); each call resolves once that script has run, so "forget the replay
 * record, then ack" holds as with one `HDEL` per call.
 *
 * While Redis is unreachable, calls reject with `StoreError` (code `ERR_STORE`) within about a
 * second or two (`maxRetriesPerRequest: 1`, `commandTimeoutMs`), and work again once the client
 * has reconnected, which it does by itself. A call that failed after its write reached Redis
 * is harmless: applying the same message key again returns the first application.
 *
 * Not for Redis Cluster: a script touches the profile hash and audience sets of other slots.
 *
 * @example
 * const store = new RedisSnapshotStore({ url: 'redis://127.0.0.1:6379' });
 * const { before, after, replayed } = await store.apply(update, { key: 'js:PROFILES:42', seq: 42 });
 * // … exports delivered or stored as failed …
 * await store.confirm(update.profileId, 'js:PROFILES:42');
 * for await (const ids of store.members('aud-1', 500)) backfill(ids);
 */
export class RedisSnapshotStore implements SnapshotStore {
  private readonly redis: Redis;
  private readonly scripts: ScriptCommands;
  private readonly backfills: RedisBackfillState;
  private readonly ownsClient: boolean;
  private readonly onError: (err: Error) => void;
  private readonly keyPrefix: string;
  private readonly maxConflictRetries: number;
  private readonly maxPending: number;
  /** profile id → the end of the chain of this store's calls on it (call order per profile). */
  private readonly tails = new Map<string, Promise<void>>();
  /** profile id → its snapshot and version as this store last read or wrote them (a guess). */
  private readonly known: SnapshotCache;
  private readonly forgetAll = (): void => this.known.forgetAll();
  private readonly confirms: ConfirmBatcher;
  private readonly maxSnapshotBytes: number;
  /** The epoch marker (store loss): read before the first apply, checked in every apply's scripts. */
  private readonly epoch: RedisStoreEpoch;

  constructor(options: RedisSnapshotStoreOptions) {
    const d = REDIS_SNAPSHOT_STORE_DEFAULTS;
    this.keyPrefix = options.keyPrefix ?? d.keyPrefix;
    this.maxConflictRetries = options.maxConflictRetries ?? d.maxConflictRetries;
    this.maxPending = Math.max(1, options.maxPendingPerProfile ?? d.maxPendingPerProfile);
    this.known = new SnapshotCache(Math.max(0, Math.floor(options.cacheSize ?? d.cacheSize)));
    this.maxSnapshotBytes = options.maxSnapshotBytes ?? d.maxSnapshotBytes;
    if (options.redis) {
      this.redis = options.redis;
      this.ownsClient = false;
    } else {
      if (!options.url) throw new StoreError('redis snapshot store: a url or a client is required');
      this.redis = new Redis(options.url, {
        enableAutoPipelining: true,
        maxRetriesPerRequest: 1,
        commandTimeout: options.commandTimeoutMs ?? d.commandTimeoutMs,
        retryStrategy: (times) => Math.min(times * 50, d.reconnectMaxDelayMs),
      });
      this.ownsClient = true;
    }
    // Without a listener ioredis prints every connection error itself.
    this.onError = options.onConnectionError ?? noop;
    this.redis.on('error', this.onError);
    // A lost connection may mean a restarted server that lost data: versions could then be
    // reached again with other contents, so no guess made before is trusted after.
    this.redis.on('close', this.forgetAll);
    this.redis.defineCommand('hdSnapshotRead', { numberOfKeys: 1, lua: READ_LUA });
    this.redis.defineCommand('hdSnapshotCas', { lua: CAS_LUA });
    this.redis.defineCommand('hdSnapshotConfirm', { lua: CONFIRM_LUA });
    // defineCommand adds methods ioredis can only type through module augmentation.
    this.scripts = this.redis as unknown as ScriptCommands;
    this.confirms = new ConfirmBatcher({
      max: d.confirmBatch,
      send: (keys, fields) => this.call('confirm', () => this.scripts.hdSnapshotConfirm(keys.length, ...keys, ...fields)),
    });
    this.backfills = new RedisBackfillState({
      redis: this.redis,
      keyPrefix: this.keyPrefix,
      call: this.call,
      audienceKey: (id) => this.audienceKey(id),
      freezeStep: d.freezeStep,
    });
    this.epoch = new RedisStoreEpoch({
      redis: this.redis,
      keyPrefix: this.keyPrefix,
      onLost: options.onStoreLost,
      // Guesses made under the old epoch mean nothing under the new one.
      onRestored: () => {
        this.known.forgetAll();
        options.onStoreRestored?.();
      },
    });
  }

  apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
    return this.inOrder(update.profileId, () => this.applyNow(update, ctx));
  }

  /**
   * The store-loss state (issue 13): the `StoreLostError` every `apply` rejects with while the
   * epoch marker is missing or changed, else null. For readiness checks and operators.
   */
  get lost(): StoreLostError | null {
    return this.epoch.lost;
  }

  /**
   * Compares the epoch marker with the one this store works under (one round trip); rejects
   * with `StoreLostError` when the store lost its data. `apply` checks it in its scripts
   * already; this is for steps that write outside them (backfill state) and periodic checks.
   */
  verifyEpoch(): Promise<void> {
    return this.epoch.verify();
  }

  /**
   * Resolves once the replay record is deleted, together with every other confirm of the same
   * event-loop turn (one script); rejects with `StoreError` when that script fails.
   */
  confirm(profileId: string, key: string): Promise<void> {
    return this.confirms.add(profileId, this.profileKey(profileId), REPLAY_PREFIX + key);
  }

  async get(profileId: string): Promise<ProfileSnapshot | null> {
    const raw = await this.call('get', () => this.redis.hget(this.profileKey(profileId), FIELD_SNAPSHOT));
    return raw === null ? null : this.parse<ProfileSnapshot>(raw, profileId);
  }

  /** Iterates the audience set with SSCAN (see `audienceMembers`). */
  members(audienceId: string, batchSize: number = REDIS_SNAPSHOT_STORE_DEFAULTS.batchSize): AsyncIterable<string[]> {
    return audienceMembers(this.redis, this.call, this.audienceKey(audienceId), batchSize);
  }

  async scanMembers(audienceId: string, options: { cursor: string; count: number; frozenAs?: string }): Promise<{ ids: string[]; cursor: string; total?: number }> {
    if (options.frozenAs !== undefined) return this.backfills.scanFrozen(options.frozenAs, options);
    return scanAudience(this.redis, this.call, this.audienceKey(audienceId), options.cursor, options.count);
  }

  /** See `RedisBackfillState.begin` (one script; the store's epoch is checked first). */
  async beginBackfill(id: string, audienceId: string): Promise<BackfillBegin> {
    // A lost store would freeze an empty audience and mark the backfill done: refuse instead.
    await this.verifyEpoch();
    return this.backfills.begin(id, audienceId);
  }

  getBackfill(id: string): Promise<BackfillState | null> {
    return this.backfills.get(id);
  }

  async setBackfill(id: string, state: BackfillState): Promise<void> {
    await this.verifyEpoch();
    await this.backfills.set(id, state);
  }

  /**
   * The elected backfiller's checkpoint: written only while its lock holds `fence.value`
   * (`FencedError` otherwise). See `RedisBackfillState.setFenced`.
   */
  async setBackfillFenced(id: string, state: BackfillState, fence: { key: string; value: string }): Promise<void> {
    await this.verifyEpoch();
    await this.backfills.setFenced(id, state, fence);
  }

  /** Every backfill's state, by id (for `pool status`). */
  listBackfills(): Promise<Record<string, BackfillState>> {
    return this.backfills.all();
  }

  async close(): Promise<void> {
    await Promise.all([...this.tails.values()]);
    await this.confirms.settled();
    this.known.forgetAll();
    if (!this.ownsClient) {
      this.redis.off('error', this.onError);
      this.redis.off('close', this.forgetAll);
      return;
    }
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }

  private async applyNow(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
    const { profileId } = update;
    const key = this.profileKey(profileId);
    const replayField = REPLAY_PREFIX + ctx.key;
    // A confirm of this profile called earlier must take effect first, as if it had been sent
    // at once: commands leave in order on the one connection.
    this.confirms.flushFor(profileId);
    const epoch = await this.epoch.current();
    const eKey = this.epoch.key;
    try {
      // A cached guess is one free try: it does not count as a lost compare-and-set.
      let state = this.known.get(profileId);
      let guessed = state !== undefined;
      if (!state) {
        const read = await this.call('apply', () => this.scripts.hdSnapshotRead(key, replayField, eKey, epoch));
        if (read === -2) await this.epoch.mismatch(epoch);
        if (typeof read === 'number') throw new StoreError(`redis snapshot store: unexpected reply ${read} to read`);
        const decided = this.decide(update, ctx, read);
        if ('result' in decided) return decided.result;
        state = decided;
      }
      for (let lost = 0; ; ) {
        const { raw, snapshot: before, version } = state;
        // Rejects (EventRejectedError) an update the merge cannot take or past the size limit:
        // nothing is written.
        const merged = mergeChecked(before, update, { maxSnapshotBytes: this.maxSnapshotBytes });
        const after = merged.after;
        const nextVersion = (version === null ? 0 : Number(version)) + 1;
        const json = merged.json ?? JSON.stringify(after);
        const { entered, exited } = membershipChanges(before, after);
        const keys = [key, ...entered.map((a) => this.audienceKey(a)), ...exited.map((a) => this.audienceKey(a))];
        const reply = await this.call('apply', () =>
          this.scripts.hdSnapshotCas(
            keys.length,
            ...keys,
            version ?? '0',
            String(nextVersion),
            json,
            replayField,
            // The before snapshot goes in as the stored JSON text: no second stringify.
            `{"v":${nextVersion},"b":${raw ?? 'null'}}`,
            profileId,
            String(entered.length),
            String(this.maxPending),
            ctx.watermark === undefined ? '' : String(ctx.watermark),
            ctx.fence?.key ?? '',
            ctx.fence?.value ?? '',
            eKey,
            epoch,
          ),
        );
        if (reply === 1) {
          this.known.remember(profileId, { raw: json, snapshot: after, version: String(nextVersion) });
          return { update, before, after, replayed: false };
        }
        if (reply === -1) {
          this.known.forget(profileId);
          throw new FencedError(`snapshot write for profile ${profileId} refused: this worker no longer holds the partition's lease`);
        }
        if (reply === -2) {
          this.known.forgetAll();
          await this.epoch.mismatch(epoch);
        }
        if (typeof reply === 'number') throw new StoreError(`redis snapshot store: unexpected reply ${reply} to apply`);
        const decided = this.decide(update, ctx, reply);
        if ('result' in decided) return decided.result;
        state = decided;
        if (guessed) guessed = false;
        else {
          if (++lost > this.maxConflictRetries) throw new SnapshotConflictError(profileId, lost);
          // Another writer is active on this profile (only during a handover in a pool): back
          // off a random few ms, growing, so two writers cannot keep colliding in lockstep —
          // the one with work queued finishes it, then this one goes through. (The next CAS
          // answers with the current state if this one went stale meanwhile: no extra read.)
          await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, 2 ** lost)));
        }
      }
    } catch (err) {
      // The write may have landed (a timeout) or another writer won: guess nothing.
      this.known.forget(profileId);
      throw err;
    }
  }

  /**
   * From a record as `READ_LUA` returns it: the result of a replay or a settled redelivery, or
   * the state to merge into. What was read becomes the cached guess either way.
   */
  private decide(update: ProfileUpdate, ctx: ApplyContext, reply: ReadReply): { result: ApplyResult } | Known {
    const [raw, version, wm, replay] = reply;
    const profileId = update.profileId;
    const current = raw === null ? null : this.parse<ProfileSnapshot>(raw, profileId);
    const state: Known = { raw, snapshot: current, version };
    this.known.remember(profileId, state);
    const w = wm === null ? undefined : Number(wm);
    if (replay !== null) {
      const record = this.parse<ReplayRecord>(replay, profileId);
      const overtaken = ctx.watermark !== undefined && w !== undefined && ctx.watermark < w;
      const latest = overtaken && current ? current : undefined;
      // No size limit here: this result was written (and checked) at its first application.
      return { result: { update, before: record.b, after: mergeChecked(record.b, update).after, replayed: true, latest } };
    }
    if (current && ctx.watermark !== undefined && w !== undefined && ctx.watermark <= w) {
      return { result: { update, before: current, after: current, replayed: true, stale: true } };
    }
    return state;
  }

  /** Runs `task` after every earlier call of this store on the same profile has settled. */
  private inOrder<T>(profileId: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(profileId);
    const run = previous ? previous.then(task) : task();
    const tail = run.then(noop, noop);
    this.tails.set(profileId, tail);
    void tail.then(() => {
      if (this.tails.get(profileId) === tail) this.tails.delete(profileId);
    });
    return run;
  }

  /** Runs one Redis call (see `redisCall`). */
  private readonly call = <T>(op: string, fn: () => Promise<T>): Promise<T> => redisCall('redis snapshot store', op, fn);

  private parse<T>(raw: string, where: string): T {
    try {
      return JSON.parse(raw) as T;
    } catch (err) {
      throw new StoreError(`redis snapshot store: unreadable record for ${where}`, { cause: err });
    }
  }

  private profileKey(profileId: string): string {
    return `${this.keyPrefix}p:${profileId}`;
  }

  private audienceKey(audienceId: string): string {
    return `${this.keyPrefix}a:${audienceId}`;
  }
}
