/**
 * The local snapshot store's write path over LMDB: the writes of a turn staged and issued
 * together (`Turn`), a database with read-your-writes until they committed (`Overlaid`), and
 * the decoded values a store with the run lock keeps (`TextBoundCache`).
 */
import type { Database } from 'lmdb';
import type { Codec } from './local-snapshot-codec.js';

/**
 * The writes of one commit window. Every write of the store is staged here and issued to
 * LMDB at once `windowMs` after the first of them (or, with 0, in a `setImmediate`: the check
 * phase of this event-loop iteration), so they land in one transaction, in the order they were
 * staged: a value written twice meanwhile is written once, and a replay record put and removed
 * meanwhile (applied, then confirmed after its HTTP answer) is never written at all. Nothing
 * on a message's way waits for a commit (see `LocalSnapshotStore.track`), so the window costs
 * no latency; it bounds the commits to one per window instead of one per event-loop turn.
 * (A flush per callback, `process.nextTick`, measured ~15 µs more CPU per update with 512 in
 * flight; see bench/README.md for the window.)
 */
export class Turn {
  private readonly dirty = new Set<Overlaid<never>>();
  private next?: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void; timer?: NodeJS.Timeout };

  constructor(private readonly windowMs = 0) {}

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
      if (this.windowMs > 0) this.next.timer = setTimeout(() => this.flush(), this.windowMs);
      else setImmediate(() => this.flush());
    }
    return this.next.promise;
  }

  /** Issues the staged writes now (a no-op when there are none). */
  flush(): void {
    const next = this.next;
    if (!next) return;
    this.next = undefined;
    if (next.timer) clearTimeout(next.timer);
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
export class TextBoundCache<V> {
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
export class Overlaid<V> {
  private readonly staged = new Map<string, V | undefined>();
  private readonly pending = new Map<string, { value: V | undefined }>();
  /** Staged keys known to have no value in LMDB (`put(…, fresh)`): removed before the flush, nothing is written. */
  private readonly fresh = new Set<string>();

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

  /**
   * Whether `key` has a value as far as this process's own writes tell (staged or not yet
   * committed), without reading LMDB: undefined when they say nothing.
   */
  known(key: string): boolean | undefined {
    if (this.staged.has(key)) return this.staged.get(key) !== undefined;
    const p = this.pending.get(key);
    return p ? p.value !== undefined : undefined;
  }

  /** Whether `key` has a value (without decoding it). */
  has(key: string): boolean {
    if (this.staged.has(key)) return this.staged.get(key) !== undefined;
    const p = this.pending.get(key);
    if (p) return p.value !== undefined;
    return this.db.doesExist(key);
  }

  /**
   * Stages the write (`undefined` removes); resolves when its transaction has committed. The
   * writes of one window share one promise. `fresh`: the caller knows LMDB holds no value for
   * `key` (a new replay record), so a removal staged before the flush writes nothing at all.
   */
  put(key: string, value: V | undefined, fresh = false): Promise<unknown> {
    if (fresh && !this.staged.has(key) && !this.pending.has(key)) this.fresh.add(key);
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
      // A removal of what was never written (a fresh key put and removed in the same window),
      // or already being removed: nothing to do. Any other removal is issued without reading
      // LMDB first (removing a missing key changes nothing).
      if (value === undefined && (p ? p.value === undefined : this.fresh.has(key))) continue;
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
    this.fresh.clear();
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
