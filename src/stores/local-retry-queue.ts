/**
 * The retry queues and delivered-version marks of the local store (`store.kind: local`, the
 * embedded default): two named databases (`retries`, `delivered`) of the store's LMDB
 * environment (src/stores/local-env.ts).
 *
 * - `retries`: key `e\0<dataflow>\0<profile>` → the one queued export of that pair, and a
 *   schedule `d\0<dataflow>\0<dueAt, 15 digits>\0<profile>` → its idempotency key, so `due`
 *   and `nextDue` read only what is due (a range), not the whole queue. Every
 *   enqueue and settle is a read-compare-write inside one LMDB write transaction (one writer at
 *   a time), so a `failed replay` process beside `run` cannot lose or double an entry. An
 *   enqueue resolves once its transaction committed (on disk): the source message may then be
 *   acknowledged, and a SIGKILL afterwards loses nothing.
 * - `delivered`: key `<dataflow>\0<profile>` → the newest version delivered, kept only for
 *   pairs with a queued export or a failed request (the only ones whose marks are read, see
 *   local-marked-pairs.ts). Writes are plain puts that lmdb-js batches with the turn's other
 *   writes into one commit, and not waited for (see `LocalDeliveredMarks`).
 */
import type { Database } from 'lmdb';
import { StoreError } from '../errors.js';
import { openLocalEnv, type LocalEnv } from './local-env.js';
import { markedPairsOf, type MarkedPairs } from './local-marked-pairs.js';
import { mergeQueued, queueKey, type DeliveredMarks, type EnqueueResult, type QueuedExport, type RetryQueue } from './retry-queue.js';

function isQueued(v: unknown): v is QueuedExport {
  if (v === null || typeof v !== 'object') return false;
  const e = v as Record<string, unknown>;
  return typeof e.dataflowId === 'string' && typeof e.profileId === 'string' && typeof e.version === 'number' && typeof e.dueAt === 'number';
}

const entryKey = (dataflowId: string, profileId: string): string => `e\u0000${queueKey(dataflowId, profileId)}`;
const dueKey = (e: Pick<QueuedExport, 'dataflowId' | 'profileId' | 'dueAt'>): string =>
  `d\u0000${e.dataflowId}\u0000${String(Math.max(0, Math.floor(e.dueAt))).padStart(15, '0')}\u0000${e.profileId}`;

function storeError(env: LocalEnv, what: string, err: unknown): StoreError {
  return new StoreError(`local store ${env.path}: cannot ${what}: ${(err as Error).message}`, { cause: err });
}

/**
 * Retry queues in the local store.
 *
 * @example
 * const queue = new LocalRetryQueue({ path: 'http-destination.state' });
 * await queue.enqueue(entry); // durable once resolved
 * await queue.close();
 *
 * @param options.path the local store's folder (required)
 */
export class LocalRetryQueue implements RetryQueue {
  private readonly env: LocalEnv;
  private readonly db: Database<unknown, string>;

  constructor(options: { path: string }) {
    this.env = openLocalEnv(options.path);
    this.db = this.env.db('retries');
  }

  async enqueue(entry: QueuedExport): Promise<EnqueueResult> {
    const k = entryKey(entry.dataflowId, entry.profileId);
    // Marked before it is stored: a delivery of the pair from now on leaves its mark.
    markedPairsOf(this.env).queuedOne(entry.dataflowId, entry.profileId, entry.idempotencyKey);
    try {
      const r = await this.env.root.transaction((): EnqueueResult => {
        const raw = this.db.get(k);
        const stored = isQueued(raw) ? raw : undefined;
        const next = mergeQueued(stored, entry);
        if (next === undefined) return { kept: false };
        if (stored) this.db.remove(dueKey(stored));
        this.db.put(k, next);
        this.db.put(dueKey(next), next.idempotencyKey);
        return { kept: true, key: next.idempotencyKey, replaced: stored !== undefined && stored.idempotencyKey !== next.idempotencyKey ? stored.idempotencyKey : undefined };
      });
      // Stored under a key of its own (carried exits): the pair stays marked until that one leaves.
      if (r.key !== undefined && r.key !== entry.idempotencyKey) markedPairsOf(this.env).queuedOne(entry.dataflowId, entry.profileId, r.key);
      return r;
    } catch (err) {
      throw storeError(this.env, 'queue an export', err);
    }
  }

  async due(dataflowId: string, now: number, limit: number): Promise<QueuedExport[]> {
    const out: QueuedExport[] = [];
    const end = dueKey({ dataflowId, profileId: '\uffff', dueAt: now });
    for (const { key } of this.db.getRange({ start: `d\u0000${dataflowId}\u0000`, end })) {
      if (out.length >= limit) break;
      const profileId = key.slice(key.lastIndexOf('\u0000') + 1);
      const e = this.db.get(entryKey(dataflowId, profileId));
      if (isQueued(e)) out.push(e);
    }
    return out;
  }

  async nextDue(dataflowId: string): Promise<number | undefined> {
    for (const { key } of this.db.getRange({ start: `d\u0000${dataflowId}\u0000`, end: `d\u0000${dataflowId}\u0001`, limit: 1 })) {
      const parts = key.split('\u0000');
      return Number(parts[parts.length - 2]);
    }
    return undefined;
  }

  async settle(entry: QueuedExport, retry?: { attempts: number; dueAt: number; lastErrorCode?: string; lastStatus?: number }): Promise<boolean> {
    const k = entryKey(entry.dataflowId, entry.profileId);
    try {
      const removed = await this.env.root.transaction(() => {
        const stored = this.db.get(k);
        if (!isQueued(stored) || stored.idempotencyKey !== entry.idempotencyKey) return false;
        this.db.remove(dueKey(stored));
        if (retry) {
          const next = { ...stored, ...retry };
          this.db.put(k, next);
          this.db.put(dueKey(next), next.idempotencyKey);
        } else this.db.remove(k);
        return true;
      });
      if (removed && !retry) markedPairsOf(this.env).dequeued(entry.dataflowId, entry.profileId, entry.idempotencyKey);
      return removed;
    } catch (err) {
      throw storeError(this.env, 'settle a queued export', err);
    }
  }

  async keys(): Promise<Array<{ dataflowId: string; profileId: string }>> {
    return [...this.entriesOf(undefined)].map((e) => ({ dataflowId: e.dataflowId, profileId: e.profileId }));
  }

  async list(dataflowId?: string): Promise<QueuedExport[]> {
    return [...this.entriesOf(dataflowId)].sort((a, b) => a.dueAt - b.dueAt);
  }

  private *entriesOf(dataflowId: string | undefined): Iterable<QueuedExport> {
    // Entries are under `e\0<dataflow>\0`: one dataflow's entries are one key range.
    const range = this.db.getRange(dataflowId === undefined ? { start: 'e\u0000', end: 'e\u0001' } : { start: `e\u0000${dataflowId}\u0000`, end: `e\u0000${dataflowId}\u0001` });
    for (const { value } of range) if (isQueued(value)) yield value;
  }

  close(): Promise<void> {
    return this.env.release();
  }
}

/** Options of `LocalDeliveredMarks`. */
export interface LocalDeliveredMarksOptions {
  /** The local store's folder (required). */
  path: string;
  /**
   * Write the mark of every delivered export, not only of pairs with a queued export or a
   * failed request in this store (`MarkedPairs`): for failed requests kept elsewhere
   * (`failedRequests.kind` other than this local store), whose pairs this store cannot know.
   * @default false
   */
  everyPair?: boolean;
}

/**
 * Delivered-version marks in the local store. A mark is written only where it may be read:
 * for a (dataflow, profile) with an export queued or a failed request stored (`MarkedPairs`,
 * src/stores/local-marked-pairs.ts), unless `everyPair`. `record` does not wait for the
 * commit: the put is issued before the caller acknowledges the message, and LMDB commits
 * writes in the order they were issued, so the read position that settles the message (or
 * the queue's `settle`, the failed request's removal) is never on disk without the mark; a
 * mark lost in a crash goes with its unsettled message, which is read and delivered again.
 * A write that failed makes the next `record` reject (once).
 *
 * @example
 * const marks = new LocalDeliveredMarks({ path: 'http-destination.state' });
 * await marks.record([{ dataflowId: 'f', profileId: 'p', version: 7 }]);
 */
export class LocalDeliveredMarks implements DeliveredMarks {
  private readonly env: LocalEnv;
  private readonly db: Database<unknown, string>;
  private readonly pairs: MarkedPairs | undefined;
  /** Marks put and not yet committed (a `get` of LMDB does not see them yet). */
  private readonly pending = new Map<string, number>();
  private failure?: StoreError;

  constructor(options: LocalDeliveredMarksOptions) {
    this.env = openLocalEnv(options.path);
    this.db = this.env.db('delivered');
    this.pairs = options.everyPair === true ? undefined : markedPairsOf(this.env);
  }

  async get(dataflowId: string, profileId: string): Promise<number | undefined> {
    const k = queueKey(dataflowId, profileId);
    const v = this.pending.get(k) ?? this.db.get(k);
    return typeof v === 'number' ? v : undefined;
  }

  async record(marks: ReadonlyArray<{ dataflowId: string; profileId: string; version: number }>): Promise<void> {
    const failure = this.failure;
    if (failure) {
      this.failure = undefined;
      throw failure;
    }
    for (const m of marks) {
      if (this.pairs !== undefined && !this.pairs.has(m.dataflowId, m.profileId)) continue;
      const k = queueKey(m.dataflowId, m.profileId);
      // One process writes a profile's marks in order (the profile gate); a replay beside
      // `run` may race it, so a mark that would go down is not written.
      const stored = this.pending.get(k) ?? this.db.get(k);
      if (typeof stored === 'number' && stored >= m.version) continue;
      this.pending.set(k, m.version);
      const done = (): void => {
        if (this.pending.get(k) === m.version) this.pending.delete(k);
      };
      this.db.put(k, m.version).then(done, (err: unknown) => {
        done();
        this.failure ??= storeError(this.env, 'record delivered versions', err);
      });
    }
  }

  close(): Promise<void> {
    return this.env.release();
  }
}
