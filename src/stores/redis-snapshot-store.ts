/**
 * The Redis snapshot store: profile snapshots and audience membership indexes in Redis, for a
 * pool of workers. Same semantics as `MemorySnapshotStore` (the contract suite in
 * test/stores runs against both).
 */
import { Redis } from 'ioredis';
import { isIn } from '../domain/diff.js';
import { applyUpdate } from '../domain/merge.js';
import type { ProfileSnapshot, ProfileUpdate } from '../domain/types.js';
import { FencedError, StoreError } from '../errors.js';
import { MAX_PENDING_PER_PROFILE } from './memory-snapshot-store.js';
import type { ApplyContext, ApplyResult, BackfillState, SnapshotStore } from './types.js';

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
   * Called with connection errors of the client (ioredis reconnects by itself; the calls made
   * meanwhile reject with `StoreError`). Messages carry no credentials. @default ignore them
   */
  onConnectionError?: (err: Error) => void;
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

/** Hash fields of a profile record. */
const FIELD_SNAPSHOT = 's';
const FIELD_VERSION = 'v';
const FIELD_WATERMARK = 'w';
const REPLAY_PREFIX = 'r:';

/**
 * Reads what `apply` needs in one round trip: snapshot, version and the replay record of this
 * message key. KEYS[1] profile hash; ARGV[1] replay field.
 */
export const READ_LUA = `return redis.call('HMGET', KEYS[1], '${FIELD_SNAPSHOT}', '${FIELD_VERSION}', '${FIELD_WATERMARK}', ARGV[1])`;

/**
 * Compare-and-set on the version: writes the new snapshot, version and replay record, moves
 * the profile in/out of audience sets, and drops the oldest replay records beyond the bound —
 * or does nothing and returns 0 when the version is not the expected one.
 * KEYS[1] profile hash, KEYS[2..] audience sets (the first ARGV[7] of them gain the profile,
 * the others lose it). ARGV: expected version ('0' when absent), new version, snapshot JSON,
 * replay field, replay record (it starts with {"v":<version>), profile id, number of
 * audiences entered, most replay records kept, watermark ('' for none), fence key and fence
 * value ('' for none: then the write happens only while GET fence key = fence value, else -1).
 *
 * Dropping a replay record means that message, if it is redelivered after
 * `maxPendingPerProfile` later applications of the same profile all went unconfirmed, is
 * merged again instead of replayed (its owed exports may then look like "no change"). The
 * pipeline confirms long before that; the bound keeps a stuck profile's record from growing
 * without end. The trimming runs here, next to the data, because it reads every record.
 */
export const CAS_LUA = `
if ARGV[10] ~= '' and redis.call('GET', ARGV[10]) ~= ARGV[11] then return -1 end
local v = redis.call('HGET', KEYS[1], '${FIELD_VERSION}')
if (v or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], '${FIELD_SNAPSHOT}', ARGV[3], '${FIELD_VERSION}', ARGV[2], ARGV[4], ARGV[5])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], '${FIELD_WATERMARK}', ARGV[9]) end
local entered = tonumber(ARGV[7])
for i = 2, #KEYS do
  if i - 1 <= entered then redis.call('SADD', KEYS[i], ARGV[6]) else redis.call('SREM', KEYS[i], ARGV[6]) end
end
local base = 2 + redis.call('HEXISTS', KEYS[1], '${FIELD_WATERMARK}')
local extra = redis.call('HLEN', KEYS[1]) - base - tonumber(ARGV[8])
if extra > 0 then
  local all = redis.call('HGETALL', KEYS[1])
  local replays = {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, ${REPLAY_PREFIX.length}) == '${REPLAY_PREFIX}' then
      replays[#replays + 1] = { all[i], tonumber(string.match(all[i + 1], '^{"v":(%d+)')) or 0 }
    end
  end
  table.sort(replays, function(a, b) return a[2] < b[2] end)
  for i = 1, extra do redis.call('HDEL', KEYS[1], replays[i][1]) end
end
return 1
`;

type ReadReply = [snapshot: string | null, version: string | null, watermark: string | null, replay: string | null];

/** The scripts registered with `defineCommand` (sent as EVALSHA, EVAL on NOSCRIPT). */
interface ScriptCommands {
  hdSnapshotRead(key: string, replayField: string): Promise<ReadReply>;
  hdSnapshotCas(numKeys: number, ...keysAndArgs: string[]): Promise<number>;
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
 *
 * `apply` reads the record in one round trip (a small read script), merges, then writes with a
 * compare-and-set script on `v`; on a conflict it reads again (at most `maxConflictRetries`
 * times, then `SnapshotConflictError`). Calls of one store on the same profile run in call
 * order; calls on different profiles share round trips through ioredis auto-pipelining.
 * Scripts go as EVALSHA (loaded once, reloaded by ioredis after a server restart).
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
  private readonly ownsClient: boolean;
  private readonly onError: (err: Error) => void;
  private readonly keyPrefix: string;
  private readonly maxConflictRetries: number;
  private readonly maxPending: number;
  /** profile id → the end of the chain of this store's calls on it (call order per profile). */
  private readonly tails = new Map<string, Promise<void>>();

  constructor(options: RedisSnapshotStoreOptions) {
    const d = REDIS_SNAPSHOT_STORE_DEFAULTS;
    this.keyPrefix = options.keyPrefix ?? d.keyPrefix;
    this.maxConflictRetries = options.maxConflictRetries ?? d.maxConflictRetries;
    this.maxPending = Math.max(1, options.maxPendingPerProfile ?? d.maxPendingPerProfile);
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
    this.redis.defineCommand('hdSnapshotRead', { numberOfKeys: 1, lua: READ_LUA });
    this.redis.defineCommand('hdSnapshotCas', { lua: CAS_LUA });
    // defineCommand adds methods ioredis can only type through module augmentation.
    this.scripts = this.redis as unknown as ScriptCommands;
  }

  apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
    return this.inOrder(update.profileId, () => this.applyNow(update, ctx));
  }

  async confirm(profileId: string, key: string): Promise<void> {
    await this.call('confirm', () => this.redis.hdel(this.profileKey(profileId), REPLAY_PREFIX + key));
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

  async scanMembers(audienceId: string, options: { cursor: string; count: number }): Promise<{ ids: string[]; cursor: string }> {
    const [cursor, ids] = await this.call('members', () =>
      this.redis.sscan(this.audienceKey(audienceId), options.cursor, 'COUNT', Math.max(1, Math.floor(options.count))),
    );
    return { ids, cursor };
  }

  /** Backfill states live in one hash, `<prefix>backfills`, field = backfill id. */
  async getBackfill(id: string): Promise<BackfillState | null> {
    const raw = await this.call('backfill', () => this.redis.hget(`${this.keyPrefix}backfills`, id));
    return raw === null ? null : (JSON.parse(raw) as BackfillState);
  }

  async setBackfill(id: string, state: BackfillState): Promise<void> {
    await this.call('backfill', () => this.redis.hset(`${this.keyPrefix}backfills`, id, JSON.stringify(state)));
  }

  async close(): Promise<void> {
    await Promise.all([...this.tails.values()]);
    if (!this.ownsClient) {
      this.redis.off('error', this.onError);
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
    for (let attempt = 1; attempt <= this.maxConflictRetries + 1; attempt++) {
      const [raw, version, wm, replay] = await this.call('apply', () => this.scripts.hdSnapshotRead(key, replayField));
      const w = wm === null ? undefined : Number(wm);
      const current = raw === null ? null : this.parse<ProfileSnapshot>(raw, profileId);
      if (replay !== null) {
        const record = this.parse<ReplayRecord>(replay, profileId);
        const overtaken = ctx.watermark !== undefined && w !== undefined && ctx.watermark < w;
        const latest = overtaken && current ? current : undefined;
        return { update, before: record.b, after: applyUpdate(record.b, update), replayed: true, latest };
      }
      if (current && ctx.watermark !== undefined && w !== undefined && ctx.watermark <= w) {
        return { update, before: current, after: current, replayed: true, stale: true };
      }
      const before = current;
      const after = applyUpdate(before, update);
      const nextVersion = (version === null ? 0 : Number(version)) + 1;
      const { entered, exited } = membershipChanges(before, after);
      const keys = [key, ...entered.map((a) => this.audienceKey(a)), ...exited.map((a) => this.audienceKey(a))];
      const written = await this.call('apply', () =>
        this.scripts.hdSnapshotCas(
          keys.length,
          ...keys,
          version ?? '0',
          String(nextVersion),
          JSON.stringify(after),
          replayField,
          // The before snapshot goes in as the stored JSON text: no second stringify.
          `{"v":${nextVersion},"b":${raw ?? 'null'}}`,
          profileId,
          String(entered.length),
          String(this.maxPending),
          ctx.watermark === undefined ? '' : String(ctx.watermark),
          ctx.fence?.key ?? '',
          ctx.fence?.value ?? '',
        ),
      );
      if (written === -1) {
        throw new FencedError(`snapshot write for profile ${profileId} refused: this worker no longer holds the partition's lease`);
      }
      if (written === 1) return { update, before, after, replayed: false };
    }
    throw new SnapshotConflictError(profileId, this.maxConflictRetries + 1);
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
    const was = isIn(before?.memberships[id]);
    const is = isIn(after.memberships[id]);
    if (was !== is) (is ? entered : exited).push(id);
  }
  return { entered, exited };
}
