/**
 * The embedded default's durable snapshot store (`store.kind: local`): profiles, audience
 * memberships, backfill progress and the file source's read positions in an LMDB
 * environment on this host (src/stores/local-env.ts). Same semantics as the memory and
 * Redis stores (the contract suite in test/stores runs against all three).
 *
 * Writes are asynchronous LMDB puts, staged and issued together once per commit window
 * (`Turn`, 50 ms): they land in one transaction (lmdb-js batches them), so a worker with
 * hundreds of messages in flight commits once per window, not once per message or turn. A store holding the run lock
 * also keeps recently used profiles decoded (`TextBoundCache`). The read-modify-write of a profile is synchronous
 * (read the entry, merge, queue the write), so calls on one profile land in call order; an
 * overlay of written-but-not-yet-committed entries gives every read its own earlier writes.
 */
import { DEFAULTS } from '../config/schema.js';
import { mergeChecked } from '../domain/merge-checked.js';
import { isIn } from '../domain/diff.js';
import { FencedError, StoreError } from '../errors.js';
import type { ProfileSnapshot, ProfileUpdate } from '../domain/types.js';
import type { FilePosition, FilePositionStore } from '../streams/file.js';
import { openLocalEnv, type LocalEnv } from './local-env.js';
import { acquireRunLock, type RunLock } from './local-lock.js';
import { MAX_PENDING_PER_PROFILE } from './memory-snapshot-store.js';
import type { ApplyContext, ApplyResult, BackfillBegin, BackfillState, SnapshotStore } from './types.js';
import { entryCodec, replayCodec, type Entry, type Replay } from './local-snapshot-codec.js';
import { Overlaid, TextBoundCache, Turn } from './local-overlay.js';

/** Frozen members of a backfill: a header record, then one record per member by index. */
interface FrozenHeader {
  count: number;
}

const SEP = '\u0000';
/** Sorts after every key that starts with `<prefix>\0`. */
const rangeEnd = (prefix: string): string => `${prefix}\u0001`;
const replayKey = (profileId: string, key: string): string => `${profileId}${SEP}${key}`;
const frozenKey = (id: string, n: number): string => `${id}${SEP}${String(n).padStart(12, '0')}`;

export interface LocalSnapshotStoreOptions {
  /** The store's folder (created 0700 when missing; its files 0600). */
  path: string;
  /**
   * Take the store's run lock (`run`): a second process asking for it fails with
   * `StoreLockedError` naming the path. Commands that only read or replay leave it.
   * @default false
   */
  exclusive?: boolean;
  /**
   * Largest snapshot a profile may reach (UTF-8 bytes of its JSON): an update that would pass it
   * is rejected (`EventRejectedError` `ERR_SNAPSHOT_TOO_LARGE`) and changes nothing.
   * @default DEFAULTS.maxSnapshotBytes (1 MiB)
   */
  maxSnapshotBytes?: number;
  /**
   * The writes of this long are committed together (`Turn`): one LMDB transaction per window,
   * and a message applied and confirmed within it writes no replay record. 0: one per
   * event-loop iteration. Nothing waits for a commit but the file source's position write.
   * @default LOCAL_STORE_DEFAULTS.commitWindowMs (50)
   */
  commitWindowMs?: number;
  /**
   * A store with the run lock keeps decoded profiles, at most this many characters of their
   * JSON text (`TextBoundCache`; 0: none).
   * @default LOCAL_STORE_DEFAULTS.profileCacheBytes (4 MiB)
   */
  profileCacheBytes?: number;
}

/** Defaults of the local snapshot store. */
export const LOCAL_STORE_DEFAULTS = {
  commitWindowMs: 50,
  /**
   * Small on purpose: the decoded profiles are many small objects the garbage collector marks
   * at every full collection. At 64 MiB (~20,000 bench profiles, ~100 MB of heap) each one
   * stalled the pipeline for as long as its marking took, 100–250 ms on two cores, and the
   * embedded-steady p99 after warm-up was 114–184 ms; at 0 it was 44–59 ms, with no CPU per
   * export measurably lost (bench/README.md, 6 Dec). Bursts of updates to one profile are
   * served from the writes not yet committed anyway; this keeps a few seconds' worth more.
   */
  profileCacheBytes: 4 * 1024 * 1024,
} as const;

/**
 * `SnapshotStore` (and the file source's `FilePositionStore`) on LMDB.
 *
 * @example
 * const store = await LocalSnapshotStore.open({ path: 'http-destination.state', exclusive: true });
 * const { before, after } = await store.apply(update, { key: 'file:events.jsonl:1', seq: 1 });
 * await store.close();
 */
export class LocalSnapshotStore implements SnapshotStore, FilePositionStore {
  private readonly profiles: Overlaid<Entry>;
  private readonly replays: Overlaid<Replay>;
  private readonly backfills: Overlaid<BackfillState>;
  private readonly frozen: Overlaid<FrozenHeader | string>;
  private readonly positions: Overlaid<FilePosition>;
  private readonly members_: Overlaid<number>;
  private readonly turn: Turn;
  private closed = false;
  /** The first write that failed: every later call fails with it. */
  private failure?: StoreError;
  /** The promise of the window `track` watches already. */
  private tracked?: Promise<unknown>;

  private constructor(
    private readonly env: LocalEnv,
    private readonly lock: RunLock | undefined,
    private readonly maxSnapshotBytes: number,
    commitWindowMs: number,
    profileCacheBytes: number,
  ) {
    this.turn = new Turn(commitWindowMs);
    const cache = lock && profileCacheBytes > 0 ? new TextBoundCache<Entry>(profileCacheBytes) : undefined;
    this.profiles = new Overlaid(env.db('profiles', 'string'), this.turn, entryCodec, cache);
    this.replays = new Overlaid(env.db('replays', 'string'), this.turn, replayCodec);
    this.backfills = new Overlaid(env.db('backfills'), this.turn);
    this.frozen = new Overlaid(env.db('frozen'), this.turn);
    this.positions = new Overlaid(env.db('positions'), this.turn);
    this.members_ = new Overlaid(env.db('members'), this.turn);
  }

  /** Opens the store at `options.path` (see `LocalSnapshotStoreOptions`). */
  static async open(options: LocalSnapshotStoreOptions): Promise<LocalSnapshotStore> {
    const env = openLocalEnv(options.path);
    let lock: RunLock | undefined;
    try {
      if (options.exclusive) lock = await acquireRunLock(env.path);
    } catch (err) {
      await env.release();
      throw err;
    }
    return new LocalSnapshotStore(
      env,
      lock,
      options.maxSnapshotBytes ?? DEFAULTS.maxSnapshotBytes,
      options.commitWindowMs ?? LOCAL_STORE_DEFAULTS.commitWindowMs,
      options.profileCacheBytes ?? LOCAL_STORE_DEFAULTS.profileCacheBytes,
    );
  }

  /** The store's folder. */
  get path(): string {
    return this.env.path;
  }

  async apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
    this.assertOpen();
    const id = update.profileId;
    const entry = this.profiles.get(id);
    const first = entry?.keys?.includes(ctx.key) ? this.replays.get(replayKey(id, ctx.key)) : undefined;
    const w = entry?.watermark;
    const overtaken = ctx.watermark !== undefined && w !== undefined && ctx.watermark < w;
    if (entry && first) {
      return { update, before: first.before, after: first.after, replayed: true, latest: overtaken ? entry.snapshot : undefined };
    }
    if (entry && ctx.watermark !== undefined && w !== undefined && ctx.watermark <= w) {
      return { update, before: entry.snapshot, after: entry.snapshot, replayed: true, stale: true };
    }
    if (ctx.fence) throw new FencedError('the local store has no leases: pool mode needs store.kind: redis');
    const before = entry ? entry.snapshot : null;
    // The guarded merge: a throw of the pure merge, or a snapshot past its limit, rejects the event.
    const { after, json } = mergeChecked(before, update, { maxSnapshotBytes: this.maxSnapshotBytes });
    const keys = (entry?.keys ?? []).filter((k) => k !== ctx.key);
    // A replay record exists only for a key in this list (the invariant `fresh` below rests
    // on): a key leaves it with its record. Below the bound, this key's record is new.
    const fresh = keys.length < MAX_PENDING_PER_PROFILE;
    if (!fresh) {
      // At the bound: forget a confirmed key if there is one (its record is gone already),
      // else the oldest unconfirmed application, and its record with it.
      const gone = keys.findIndex((k) => !this.replays.has(replayKey(id, k)));
      const [dropped] = keys.splice(gone >= 0 ? gone : 0, 1);
      if (gone < 0) this.replays.put(replayKey(id, dropped), undefined);
    }
    keys.push(ctx.key);
    // Without a size limit the JSON is made when the turn's writes are issued (once, lazily).
    const next: Entry = { snapshot: after, keys, json };
    const watermark = ctx.watermark ?? w;
    if (watermark !== undefined) next.watermark = watermark;
    const replay: Replay = { before, after, beforeJson: entry?.json, afterJson: json };
    // One window, one transaction: the profile, its replay record and its index entries commit
    // together. Not awaited (see `track`): this process reads them at once through the overlay.
    // Below the bound the replay record is new (confirmed within the window, it is never
    // written); a profile that reached the bound may hold records an earlier version left
    // behind, so there its removal is always issued.
    this.index(before, after);
    this.profiles.put(id, next);
    this.track(this.replays.put(replayKey(id, ctx.key), replay, fresh));
    return { update, before, after, replayed: false };
  }

  /** Forgets the replay record only; its key leaves the profile's list at a later apply. */
  async confirm(profileId: string, key: string): Promise<void> {
    this.assertOpen();
    const k = replayKey(profileId, key);
    // No LMDB read: when this process's writes say nothing of the record, its removal is
    // staged anyway (a confirmed application's record was committed in an earlier window).
    if (this.replays.known(k) === false) return;
    this.track(this.replays.put(k, undefined));
  }

  async get(profileId: string): Promise<ProfileSnapshot | null> {
    this.assertOpen();
    return this.profiles.get(profileId)?.snapshot ?? null;
  }

  async *members(audienceId: string, batchSize = 500): AsyncIterable<string[]> {
    let cursor = '0';
    do {
      const page = await this.scanMembers(audienceId, { cursor, count: batchSize });
      if (page.ids.length > 0) yield page.ids;
      cursor = page.cursor;
    } while (cursor !== '0');
  }

  async scanMembers(audienceId: string, options: { cursor: string; count: number; frozenAs?: string }): Promise<{ ids: string[]; cursor: string }> {
    this.assertOpen();
    if (options.frozenAs !== undefined) return this.scanFrozen(options.frozenAs, options);
    // The cursor is the last id returned (keys in sorted order): members leaving or joining
    // between pages never make the scan skip one that stays.
    this.turn.flush();
    await this.env.root.committed; // the index entries of every apply before this call
    const prefix = `${audienceId}${SEP}`;
    const start = options.cursor === '0' ? prefix : `${prefix}${options.cursor.slice(1)}${SEP}`;
    const count = Math.max(1, Math.floor(options.count));
    const ids: string[] = [];
    let more = false;
    for (const key of this.members_.db.getKeys({ start, end: rangeEnd(audienceId), limit: count + 1 })) {
      if (ids.length === count) {
        more = true;
        break;
      }
      ids.push(key.slice(prefix.length));
    }
    return { ids, cursor: more ? `>${ids[ids.length - 1]}` : '0' };
  }

  async beginBackfill(id: string, audienceId: string): Promise<BackfillBegin> {
    this.assertOpen();
    const known = this.backfills.get(id);
    if (known && (known.done || this.frozen.get(id) !== undefined)) return { state: { ...known }, phase: 'resume' };
    // Synchronous: callers at once share this one frozen copy, and the copy is the audience
    // as this process sees it now (its own pending writes included).
    const writes: Array<Promise<unknown>> = [];
    let n = 0;
    const prefix = `${audienceId}${SEP}`;
    for (const key of this.members_.keysInRange(prefix, rangeEnd(audienceId))) {
      writes.push(this.frozen.put(frozenKey(id, n++), key.slice(prefix.length)));
    }
    writes.push(this.frozen.put(id, { count: n }));
    const state: BackfillState = { done: false, cursor: '0', sent: known?.sent ?? 0 };
    writes.push(this.backfills.put(id, state));
    // Not awaited (see `track`): a worker begins every backfill of its config before its
    // source's first message is applied, as SPEC §8 asks (the members at its start).
    this.track(Promise.all(writes));
    return { state: { ...state }, phase: known ? 'restart' : 'start' };
  }

  async getBackfill(id: string): Promise<BackfillState | null> {
    this.assertOpen();
    const s = this.backfills.get(id);
    return s ? { ...s } : null;
  }

  async setBackfill(id: string, state: BackfillState): Promise<void> {
    this.assertOpen();
    const writes = [this.backfills.put(id, { ...state })];
    if (state.done) writes.push(...this.dropFrozen(id));
    // Not awaited (see `track`): a checkpoint lost in a crash only sends its page again. The
    // backfill source begins one mapping's backfill after the previous one's last checkpoint;
    // without a wait here, every backfill of an empty store begins before the file source's
    // first line is applied, as with the memory store.
    this.track(Promise.all(writes));
  }

  async getPosition(key: string): Promise<FilePosition | undefined> {
    this.assertOpen();
    const p = this.positions.get(key);
    return p ? { ...p } : undefined;
  }

  async setPosition(key: string, position: FilePosition): Promise<void> {
    this.assertOpen();
    // Staged with the turn's other writes: one transaction, no commit of its own. Resolves
    // once committed (the file source writes one position at a time).
    await this.settle([this.positions.put(key, { ...position })]);
  }

  /** Issues the writes staged so far now, and resolves once they (and every earlier one) committed. */
  async flush(): Promise<void> {
    this.assertOpen();
    this.turn.flush();
    await this.env.root.committed;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.turn.flush();
      await this.env.root.committed;
    } finally {
      await this.lock?.release();
      await this.env.release();
    }
  }

  /** A page of the frozen members of backfill `id`; the cursor is the index of the next one. */
  private scanFrozen(id: string, options: { cursor: string; count: number }): { ids: string[]; cursor: string } {
    const header = this.frozen.get(id) as FrozenHeader | undefined;
    if (!header) throw new StoreError(`local snapshot store: the frozen members of backfill ${id} are gone`);
    const at = Number(options.cursor);
    const from = Number.isSafeInteger(at) && at > 0 ? at : 0;
    const to = Math.min(header.count, from + Math.max(1, Math.floor(options.count)));
    const ids: string[] = [];
    for (let i = from; i < to; i++) {
      const v = this.frozen.get(frozenKey(id, i));
      if (typeof v === 'string') ids.push(v);
    }
    return { ids, cursor: to >= header.count ? '0' : String(to) };
  }

  private dropFrozen(id: string): Array<Promise<unknown>> {
    const writes: Array<Promise<unknown>> = [];
    for (const key of this.frozen.keysInRange(`${id}${SEP}`, rangeEnd(id))) writes.push(this.frozen.put(key, undefined));
    writes.push(this.frozen.put(id, undefined));
    return writes;
  }

  /** Stages the index writes for the memberships that changed between `before` and `after`. */
  private index(before: ProfileSnapshot | null, after: ProfileSnapshot): void {
    if (before?.memberships === after.memberships) return;
    for (const audienceId of Object.keys(after.memberships)) {
      const was = isIn(before?.memberships[audienceId]);
      const is = isIn(after.memberships[audienceId]);
      if (was === is) continue;
      this.members_.put(`${audienceId}${SEP}${after.profileId}`, is ? 1 : undefined);
    }
  }

  private async settle(writes: Array<Promise<unknown>>): Promise<void> {
    try {
      await Promise.all(writes);
    } catch (err) {
      throw this.failed(err);
    }
  }

  /**
   * Writes that `apply` and `confirm` do not wait for. They need no wait: LMDB commits
   * writes in the order they were made, and what marks a message settled (the file source's
   * position, awaited) is written after them, so it is never on disk without them; a merge
   * lost in a crash is made again, identically, when its message is read again. A write
   * that fails makes the next call fail (the message is then redelivered).
   */
  private track(write: Promise<unknown>): void {
    // The writes of one window share one promise: one handler for all of them.
    if (write === this.tracked) return;
    this.tracked = write;
    write.catch((err: unknown) => {
      this.failure ??= this.failed(err);
    });
  }

  private failed(err: unknown): StoreError {
    return new StoreError(`local store ${this.env.path}: write failed: ${(err as Error).message}`, { cause: err });
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError(`local store ${this.env.path} is closed`);
    if (this.failure) throw this.failure;
  }
}
