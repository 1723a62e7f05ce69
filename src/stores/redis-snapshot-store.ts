/**
 * The Redis snapshot store: profile snapshots and audience membership indexes in Redis, for a
 * pool of workers. Same semantics as `MemorySnapshotStore` (the contract suite in
 * test/stores runs against both).
 */
import { Redis } from 'ioredis';
import { DEFAULTS } from '../config/schema.js';
import { isIn, membershipOf } from '../domain/diff.js';
import { mergeChecked } from '../domain/merge-checked.js';
import type { ProfileSnapshot, ProfileUpdate } from '../domain/types.js';
import { FencedError, StoreError } from '../errors.js';
import { MAX_PENDING_PER_PROFILE } from './memory-snapshot-store.js';
import { EPOCH_DEFAULTS, RedisStoreEpoch, type StoreLostError } from './redis-store-epoch.js';
import type { ApplyContext, ApplyResult, BackfillBegin, BackfillState, SnapshotStore } from './types.js';
import { RedisBackfillState } from './redis-backfill-state.js';
import { CAS_LUA, CONFIRM_LUA, FIELD_SNAPSHOT, FIELD_VERSION, FIELD_WATERMARK, READ_LUA, REPLAY_PREFIX, type ReadReply, type ScriptCommands } from './redis-snapshot-scripts.js';

export { StoreLostError, resetStoreEpoch } from './redis-store-epoch.js';
export { CAS_LUA, CONFIRM_LUA, READ_LUA } from './redis-snapshot-scripts.js';

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


/**
 * What `apply` merges into: a profile's snapshot as stored (`raw`, its JSON text, goes into
 * the replay record as is), parsed, and its version (null: no record yet). Also a cache entry:
 * the parsed snapshot is shared with callers, which is safe because `applyUpdate` and the
 * pipeline never mutate a snapshot (the memory store shares its snapshots the same way).
 */
interface Known {
  raw: string | null;
  snapshot: ProfileSnapshot | null;
  version: string | null;
}

/** Confirms collected during one tick, deleted by one script (per `confirmBatch` of them). */
interface ConfirmBatch {
  /** Profile ids with a confirm in the batch (an `apply` on one of them sends the batch first). */
  profiles: Set<string>;
  keys: string[];
  fields: string[];
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

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
  /**
   * profile id → its snapshot and version as this store last read or wrote them, in recency
   * order (a Map iterates in insertion order: the first entry is the least recently used).
   * Only a guess: the compare-and-set on the version decides.
   */
  private readonly known = new Map<string, Known>();
  private readonly cacheSize: number;
  private readonly forgetAll = (): void => this.known.clear();
  /** Confirms of this tick not sent yet. */
  private confirms: ConfirmBatch | null = null;
  /** Confirm scripts sent and not answered yet (`close` waits for them). */
  private readonly confirming = new Set<Promise<void>>();
  private readonly maxSnapshotBytes: number;
  /** The epoch marker (store loss): read before the first apply, checked in every apply's scripts. */
  private readonly epoch: RedisStoreEpoch;

  constructor(options: RedisSnapshotStoreOptions) {
    const d = REDIS_SNAPSHOT_STORE_DEFAULTS;
    this.keyPrefix = options.keyPrefix ?? d.keyPrefix;
    this.maxConflictRetries = options.maxConflictRetries ?? d.maxConflictRetries;
    this.maxPending = Math.max(1, options.maxPendingPerProfile ?? d.maxPendingPerProfile);
    this.cacheSize = Math.max(0, Math.floor(options.cacheSize ?? d.cacheSize));
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
    this.backfills = new RedisBackfillState({
      redis: this.redis,
      keyPrefix: this.keyPrefix,
      call: (op, fn) => this.call(op, fn),
      audienceKey: (id) => this.audienceKey(id),
      freezeStep: d.freezeStep,
    });
    this.epoch = new RedisStoreEpoch({
      redis: this.redis,
      keyPrefix: this.keyPrefix,
      onLost: options.onStoreLost,
      // Guesses made under the old epoch mean nothing under the new one.
      onRestored: () => {
        this.known.clear();
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
    let batch = this.confirms;
    if (!batch) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      const fresh: ConfirmBatch = { profiles: new Set(), keys: [], fields: [], done, resolve, reject };
      batch = this.confirms = fresh;
      setImmediate(() => this.flushConfirms(fresh));
    }
    batch.profiles.add(profileId);
    batch.keys.push(this.profileKey(profileId));
    batch.fields.push(REPLAY_PREFIX + key);
    const done = batch.done;
    if (batch.keys.length >= REDIS_SNAPSHOT_STORE_DEFAULTS.confirmBatch) this.flushConfirms(batch);
    return done;
  }

  async get(profileId: string): Promise<ProfileSnapshot | null> {
    const raw = await this.call('get', () => this.redis.hget(this.profileKey(profileId), FIELD_SNAPSHOT));
    return raw === null ? null : this.parse<ProfileSnapshot>(raw, profileId);
  }

  /**
   * Iterates the audience set with SSCAN. An id SSCAN returns twice (it may, when the set is
   * resized during the scan) is yielded once; that costs a set of the ids seen so far.
   */
  async *members(audienceId: string, batchSize: number = REDIS_SNAPSHOT_STORE_DEFAULTS.batchSize): AsyncIterable<string[]> {
    const size = Math.max(1, Math.floor(batchSize));
    const key = this.audienceKey(audienceId);
    const seen = new Set<string>();
    let batch: string[] = [];
    let cursor = '0';
    do {
      const [next, ids] = await this.call('members', () => this.redis.sscan(key, cursor, 'COUNT', size));
      cursor = next;
      for (const id of ids) {
        if (seen.has(id)) continue;
        seen.add(id);
        batch.push(id);
        if (batch.length >= size) {
          yield batch;
          batch = [];
        }
      }
    } while (cursor !== '0');
    if (batch.length > 0) yield batch;
  }

  async scanMembers(audienceId: string, options: { cursor: string; count: number; frozenAs?: string }): Promise<{ ids: string[]; cursor: string; total?: number }> {
    if (options.frozenAs !== undefined) return this.backfills.scanFrozen(options.frozenAs, options);
    const [cursor, ids] = await this.call('members', () =>
      this.redis.sscan(this.audienceKey(audienceId), options.cursor, 'COUNT', Math.max(1, Math.floor(options.count))),
    );
    return { ids, cursor };
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
    if (this.confirms) this.flushConfirms(this.confirms);
    await Promise.all([...this.confirming]);
    this.known.clear();
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
    if (this.confirms?.profiles.has(profileId)) this.flushConfirms(this.confirms);
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
          this.remember(profileId, { raw: json, snapshot: after, version: String(nextVersion) });
          return { update, before, after, replayed: false };
        }
        if (reply === -1) {
          this.known.delete(profileId);
          throw new FencedError(`snapshot write for profile ${profileId} refused: this worker no longer holds the partition's lease`);
        }
        if (reply === -2) {
          this.known.clear();
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
      this.known.delete(profileId);
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
    this.remember(profileId, state);
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

  /** Makes `state` the profile's cached guess, the most recently used; drops the least recent beyond the bound. */
  private remember(profileId: string, state: Known): void {
    if (this.cacheSize === 0) return;
    this.known.delete(profileId);
    this.known.set(profileId, state);
    if (this.known.size > this.cacheSize) this.known.delete(this.known.keys().next().value as string);
  }

  /** Sends `batch` (once): one script deleting every replay record it holds. */
  private flushConfirms(batch: ConfirmBatch): void {
    if (this.confirms !== batch) return; // sent already (it was full, or `close`)
    this.confirms = null;
    const sent = this.call('confirm', () => this.scripts.hdSnapshotConfirm(batch.keys.length, ...batch.keys, ...batch.fields)).then(
      () => batch.resolve(),
      (err: unknown) => batch.reject(err),
    );
    this.confirming.add(sent);
    void sent.then(() => this.confirming.delete(sent));
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

  /** Runs one Redis call; any failure becomes a `StoreError` with the cause attached. */
  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StoreError) throw err;
      const reason = err instanceof Error ? err.message : String(err);
      throw new StoreError(`redis snapshot store: ${op} failed: ${reason}`, { cause: err });
    }
  }

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

/** Audiences the profile entered / exited between two snapshots (as the memory store indexes them). */
function membershipChanges(
  before: ProfileSnapshot | null,
  after: ProfileSnapshot,
): { entered: string[]; exited: string[] } {
  const entered: string[] = [];
  const exited: string[] = [];
  if (before?.memberships === after.memberships) return { entered, exited };
  for (const id of Object.keys(after.memberships)) {
    const was = isIn(membershipOf(before, id));
    const is = isIn(membershipOf(after, id));
    if (was !== is) (is ? entered : exited).push(id);
  }
  return { entered, exited };
}
