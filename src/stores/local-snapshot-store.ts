/**
 * The embedded default's durable snapshot store (`store.kind: local`): profiles, audience
 * memberships, backfill progress and the file source's read positions in an LMDB
 * environment on this host (src/stores/local-env.ts). Same semantics as the memory and
 * Redis stores (the contract suite in test/stores runs against all three).
 *
 * Writes are asynchronous LMDB puts, staged and issued together once per event-loop turn
 * (`Turn`): they land in one transaction (lmdb-js batches them), so a worker with hundreds of
 * messages in flight commits once per turn, not once per message. A store holding the run lock
 * also keeps recently used profiles decoded (`TextBoundCache`). The read-modify-write of a profile is synchronous
 * (read the entry, merge, queue the write), so calls on one profile land in call order; an
 * overlay of written-but-not-yet-committed entries gives every read its own earlier writes.
 */
import type { Database } from 'lmdb';
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

/** A profile's record: its snapshot, highest watermark, and the keys of its latest applications. */
interface Entry {
  snapshot: ProfileSnapshot;
  watermark?: number;
  /**
   * Keys of the latest applications, oldest first (at most MAX_PENDING_PER_PROFILE): those
   * not confirmed yet have a replay record in `replays`; confirmed ones leave this list lazily.
   */
  keys?: string[];
  /**
   * `JSON.stringify(snapshot)` when known, or a function that cuts it out of the stored text
   * (in memory only: the text is written as is, never made twice).
   */
  json?: string | (() => string);
}

/** The first application of a message not yet confirmed (`replays`, by profile and key). */
interface Replay {
  before: ProfileSnapshot | null;
  after: ProfileSnapshot;
  /** The JSON texts of `before` and `after` when known (in memory only). */
  beforeJson?: Entry['json'];
  afterJson?: string;
}

/** Frozen members of a backfill: a header record, then one record per member by index. */
interface FrozenHeader {
  count: number;
}

/**
 * How `profiles` and `replays` are stored: one JSON array made by joining JSON texts, so the
 * snapshot's JSON, made once by the size check, is written as is and read with one
 * `JSON.parse`. Entry: `[watermark,keys,snapshot]`; replay: `[before,after]`. A value that is
 * a JSON object is a record as earlier versions wrote it (`{ snapshot, … }`, `{ before, after }`).
 * `JSON.parse` keeps a `__proto__` key of customer data a plain own key, as before.
 */
interface Codec<V> {
  encode(value: V): string;
  decode(raw: string): V;
}

const textOf = (json: Entry['json'], value: ProfileSnapshot | null): string =>
  json === undefined ? JSON.stringify(value) : typeof json === 'string' ? json : json();

const entryCodec: Codec<Entry> = {
  encode: (e) => `[${JSON.stringify(e.watermark ?? null)},${JSON.stringify(e.keys ?? [])},${textOf(e.json, e.snapshot)}]`,
  decode(raw) {
    if (raw.charCodeAt(0) !== 0x5b /* [ */) return JSON.parse(raw) as Entry;
    const [watermark, keys, snapshot] = JSON.parse(raw) as [number | null, string[], ProfileSnapshot];
    // The head is what `encode` wrote (JSON.stringify gives one text for a number or a
    // string array parsed from its own output): the snapshot's text is the rest, cut when needed.
    const json = (): string => raw.slice(`[${JSON.stringify(watermark)},${JSON.stringify(keys)},`.length, -1);
    const entry: Entry = { snapshot, keys, json };
    if (watermark !== null) entry.watermark = watermark;
    return entry;
  },
};

const replayCodec: Codec<Replay> = {
  encode: (r) => `[${textOf(r.beforeJson, r.before)},${r.afterJson ?? JSON.stringify(r.after)}]`,
  decode(raw) {
    if (raw.charCodeAt(0) !== 0x5b /* [ */) return JSON.parse(raw) as Replay;
    const [before, after] = JSON.parse(raw) as [ProfileSnapshot | null, ProfileSnapshot];
    return { before, after };
  },
};

/** The decoded profiles a store with the run lock keeps: 16 Mi characters of their JSON. */
const PROFILE_CACHE_CHARS = 16 * 1024 * 1024;

const SEP = '\u0000';
/** Sorts after every key that starts with `<prefix>\0`. */
const rangeEnd = (prefix: string): string => `${prefix}\u0001`;
const replayKey = (profileId: string, key: string): string => `${profileId}${SEP}${key}`;
const frozenKey = (id: string, n: number): string => `${id}${SEP}${String(n).padStart(12, '0')}`;

/**
 * The writes of one event-loop turn. Every write of the store is staged here and issued to
 * LMDB at once in a `setImmediate` (the check phase of this event-loop iteration, or of the
 * next one when staged from an immediate), so they land in one transaction, in the order
 * they were staged: a value written twice meanwhile is written once, and a replay record put
 * and removed meanwhile (applied and confirmed) is never written at all. (A flush per
 * callback, `process.nextTick`, measured ~15 µs more CPU per update with 512 in flight.)
 */
class Turn {
  private readonly dirty = new Set<Overlaid<never>>();
  private next?: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void };

  /** Marks `db` as having staged writes; resolves when they have committed. */
  stage(db: Overlaid<never>): Promise<void> {
    this.dirty.add(db);
    if (!this.next) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.next = { promise, resolve, reject };
      setImmediate(() => this.flush());
    }
    return this.next.promise;
  }

  /** Issues the staged writes now (a no-op when there are none). */
  flush(): void {
    const next = this.next;
    if (!next) return;
    this.next = undefined;
    const writes: Array<Promise<unknown>> = [];
    try {
      for (const db of this.dirty) db.flush(writes);
    } catch (err) {
      next.reject(err);
    }
    this.dirty.clear();
    Promise.all(writes).then(() => next.resolve(), next.reject);
  }
}

/**
 * Decoded values by key, at most `budget` characters of their stored text in all, the least
 * recently written or read let go first: a profile updated again is not read back from LMDB
 * and parsed. Only for a store holding the run lock (`exclusive`): no other process writes
 * its profiles then (the other commands only read), so what is kept is what is on disk.
 */
class TextBoundCache<V> {
  private readonly map = new Map<string, { value: V; size: number }>();
  private size = 0;

  constructor(private readonly budget: number) {}

  get(key: string): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    this.map.set(key, hit);
    return hit.value;
  }

  set(key: string, value: V, size: number): void {
    this.delete(key);
    if (size > this.budget) return;
    this.map.set(key, { value, size });
    this.size += size;
    for (const [k, v] of this.map) {
      if (this.size <= this.budget) break;
      this.map.delete(k);
      this.size -= v.size;
    }
  }

  delete(key: string): void {
    const hit = this.map.get(key);
    if (!hit) return;
    this.map.delete(key);
    this.size -= hit.size;
  }
}

/**
 * A database with read-your-writes: a value written is served from memory while it is staged
 * (see `Turn`) and until its transaction has committed, then read from LMDB again (and the
 * memory let go).
 */
class Overlaid<V> {
  private readonly staged = new Map<string, V | undefined>();
  private readonly pending = new Map<string, { value: V | undefined }>();

  constructor(
    readonly db: Database<unknown, string>,
    private readonly turn: Turn,
    private readonly codec?: Codec<V>,
    /** Decoded values kept after commit (only where this process is the only writer). */
    private readonly cache?: TextBoundCache<V>,
  ) {}

  get(key: string): V | undefined {
    if (this.staged.has(key)) return this.staged.get(key);
    const p = this.pending.get(key);
    if (p) return p.value;
    const cached = this.cache?.get(key);
    if (cached) return cached;
    const raw = this.db.get(key);
    if (raw === undefined || !this.codec) return raw as V | undefined;
    const value = this.codec.decode(raw as string);
    this.cache?.set(key, value, (raw as string).length);
    return value;
  }

  /** Whether `key` has a value (without decoding it). */
  has(key: string): boolean {
    if (this.staged.has(key)) return this.staged.get(key) !== undefined;
    const p = this.pending.get(key);
    if (p) return p.value !== undefined;
    return this.db.doesExist(key);
  }

  /** Stages the write (`undefined` removes); resolves when its transaction has committed. */
  put(key: string, value: V | undefined): Promise<unknown> {
    this.staged.set(key, value);
    return this.turn.stage(this as unknown as Overlaid<never>);
  }

  /** Issues the staged writes to LMDB (`Turn.flush`), pushing their promises on `writes`. */
  flush(writes: Array<Promise<unknown>>): void {
    const from = writes.length;
    const slots: Array<[string, { value: V | undefined }]> = [];
    let last: Promise<unknown> | undefined;
    for (const [key, value] of this.staged) {
      const p = this.pending.get(key);
      // A removal of what was never written (put and removed in the same turn): nothing to do.
      if (value === undefined && (p ? p.value === undefined : !this.db.doesExist(key))) continue;
      const slot = { value };
      this.pending.set(key, slot);
      slots.push([key, slot]);
      let write: Promise<unknown>;
      if (value === undefined) {
        this.cache?.delete(key);
        write = this.db.remove(key);
      } else if (this.codec) {
        const text = this.codec.encode(value);
        this.cache?.set(key, value, text.length);
        write = this.db.put(key, text);
      } else {
        write = this.db.put(key, value);
      }
      // The writes of one transaction share one promise (lmdb-js): wait for each once.
      if (write !== last) writes.push((last = write));
    }
    this.staged.clear();
    if (slots.length === 0) return;
    const forget = (): void => {
      for (const [key, slot] of slots) if (this.pending.get(key) === slot) this.pending.delete(key);
    };
    Promise.all(writes.slice(from)).then(forget, forget);
  }

  /** Keys in [start, end): the committed ones with this process's pending and staged writes applied, sorted. */
  keysInRange(start: string, end: string): string[] {
    const out = new Set<string>();
    for (const k of this.db.getKeys({ start, end })) out.add(k);
    for (const layer of [this.pending, this.staged]) {
      for (const [k, slot] of layer) {
        if (k < start || k >= end) continue;
        const value = layer === this.pending ? (slot as { value: V | undefined }).value : (slot as V | undefined);
        if (value === undefined) out.delete(k);
        else out.add(k);
      }
    }
    return [...out].sort();
  }
}

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
}

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
  private readonly turn = new Turn();
  private closed = false;
  /** The first write that failed: every later call fails with it. */
  private failure?: StoreError;

  private constructor(
    private readonly env: LocalEnv,
    private readonly lock: RunLock | undefined,
    private readonly maxSnapshotBytes: number,
  ) {
    const cache = lock ? new TextBoundCache<Entry>(PROFILE_CACHE_CHARS) : undefined;
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
    return new LocalSnapshotStore(env, lock, options.maxSnapshotBytes ?? DEFAULTS.maxSnapshotBytes);
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
    const writes: Array<Promise<unknown>> = [];
    const keys = (entry?.keys ?? []).filter((k) => k !== ctx.key);
    keys.push(ctx.key);
    if (keys.length > MAX_PENDING_PER_PROFILE) {
      // Past the bound: forget a confirmed key if there is one (its record is gone already),
      // else the oldest unconfirmed application.
      const gone = keys.findIndex((k) => !this.replays.has(replayKey(id, k)));
      const [dropped] = keys.splice(gone >= 0 && gone < keys.length - 1 ? gone : 0, 1);
      if (gone < 0) writes.push(this.replays.put(replayKey(id, dropped), undefined));
    }
    // Without a size limit the JSON is made when the turn's writes are issued (once, lazily).
    const next: Entry = { snapshot: after, keys, json };
    const watermark = ctx.watermark ?? w;
    if (watermark !== undefined) next.watermark = watermark;
    const replay: Replay = { before, after, beforeJson: entry?.json, afterJson: json };
    writes.push(this.profiles.put(id, next), this.replays.put(replayKey(id, ctx.key), replay), ...this.index(before, after));
    // One turn, one transaction: the profile, its replay record and its index entries commit
    // together. Not awaited (see `track`): this process reads them at once through the overlay.
    this.track(writes);
    return { update, before, after, replayed: false };
  }

  /** Forgets the replay record only; its key leaves the profile's list at a later apply. */
  async confirm(profileId: string, key: string): Promise<void> {
    this.assertOpen();
    const k = replayKey(profileId, key);
    if (!this.replays.has(k)) return;
    this.track([this.replays.put(k, undefined)]);
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
    this.track(writes);
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
    this.track(writes);
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

  /** Index writes for the memberships that changed between `before` and `after`. */
  private index(before: ProfileSnapshot | null, after: ProfileSnapshot): Array<Promise<unknown>> {
    if (before?.memberships === after.memberships) return [];
    const writes: Array<Promise<unknown>> = [];
    for (const audienceId of Object.keys(after.memberships)) {
      const was = isIn(before?.memberships[audienceId]);
      const is = isIn(after.memberships[audienceId]);
      if (was === is) continue;
      const key = `${audienceId}${SEP}${after.profileId}`;
      writes.push(this.members_.put(key, is ? 1 : undefined));
    }
    return writes;
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
  private track(writes: Array<Promise<unknown>>): void {
    Promise.all(writes).catch((err: unknown) => {
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
