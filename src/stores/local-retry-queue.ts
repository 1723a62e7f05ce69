/**
 * The retry queues and delivered-version marks of the local store (`store.kind: local`, the
 * embedded default): two named databases (`retries`, `delivered`) of the store's LMDB
 * environment (src/stores/local-env.ts).
 *
 * - `retries`: key `<dataflow>\0<profile>` → the one queued export of that pair. Every
 *   enqueue and settle is a read-compare-write inside one LMDB write transaction (one writer at
 *   a time), so a `failed replay` process beside `run` cannot lose or double an entry. An
 *   enqueue resolves once its transaction committed (on disk): the source message may then be
 *   acknowledged, and a SIGKILL afterwards loses nothing.
 * - `delivered`: key `<dataflow>\0<profile>` → the newest version delivered. Writes are
 *   plain puts that lmdb-js batches with the turn's other writes (the snapshot store's confirm
 *   commits in the same transaction): no extra round-trip per export.
 */
import type { Database } from 'lmdb';
import { StoreError } from '../errors.js';
import { openLocalEnv, type LocalEnv } from './local-env.js';
import { mergeQueued, queueKey, type DeliveredMarks, type EnqueueResult, type QueuedExport, type RetryQueue } from './retry-queue.js';

function isQueued(v: unknown): v is QueuedExport {
  if (v === null || typeof v !== 'object') return false;
  const e = v as Record<string, unknown>;
  return typeof e.dataflowId === 'string' && typeof e.profileId === 'string' && typeof e.version === 'number' && typeof e.dueAt === 'number';
}

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
    const k = queueKey(entry.dataflowId, entry.profileId);
    try {
      return await this.env.root.transaction((): EnqueueResult => {
        const raw = this.db.get(k);
        const stored = isQueued(raw) ? raw : undefined;
        const next = mergeQueued(stored, entry);
        if (next === undefined) return { kept: false };
        this.db.put(k, next);
        return { kept: true, replaced: stored !== undefined && stored.idempotencyKey !== entry.idempotencyKey ? stored.idempotencyKey : undefined };
      });
    } catch (err) {
      throw storeError(this.env, 'queue an export', err);
    }
  }

  async due(dataflowId: string, now: number, limit: number): Promise<QueuedExport[]> {
    return (await this.list(dataflowId)).filter((e) => e.dueAt <= now).slice(0, limit);
  }

  async nextDue(dataflowId: string): Promise<number | undefined> {
    let next: number | undefined;
    for (const e of this.entriesOf(dataflowId)) if (next === undefined || e.dueAt < next) next = e.dueAt;
    return next;
  }

  async settle(entry: QueuedExport, retry?: { attempts: number; dueAt: number; lastErrorCode?: string; lastStatus?: number }): Promise<boolean> {
    const k = queueKey(entry.dataflowId, entry.profileId);
    try {
      return await this.env.root.transaction(() => {
        const stored = this.db.get(k);
        if (!isQueued(stored) || stored.idempotencyKey !== entry.idempotencyKey) return false;
        if (retry) this.db.put(k, { ...stored, ...retry });
        else this.db.remove(k);
        return true;
      });
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
    // Keys start with `<dataflow>\0`: one dataflow's entries are one key range.
    const range = dataflowId === undefined ? this.db.getRange() : this.db.getRange({ start: `${dataflowId}\u0000`, end: `${dataflowId}\u0001` });
    for (const { value } of range) if (isQueued(value)) yield value;
  }

  close(): Promise<void> {
    return this.env.release();
  }
}

/**
 * Delivered-version marks in the local store.
 *
 * @example
 * const marks = new LocalDeliveredMarks({ path: 'http-destination.state' });
 * await marks.record([{ dataflowId: 'f', profileId: 'p', version: 7 }]);
 *
 * @param options.path the local store's folder (required)
 */
export class LocalDeliveredMarks implements DeliveredMarks {
  private readonly env: LocalEnv;
  private readonly db: Database<unknown, string>;

  constructor(options: { path: string }) {
    this.env = openLocalEnv(options.path);
    this.db = this.env.db('delivered');
  }

  async get(dataflowId: string, profileId: string): Promise<number | undefined> {
    const v = this.db.get(queueKey(dataflowId, profileId));
    return typeof v === 'number' ? v : undefined;
  }

  async record(marks: ReadonlyArray<{ dataflowId: string; profileId: string; version: number }>): Promise<void> {
    if (marks.length === 0) return;
    const writes: Array<Promise<unknown>> = [];
    for (const m of marks) {
      const k = queueKey(m.dataflowId, m.profileId);
      // One process writes a profile's marks in order (the profile gate); a replay beside
      // `run` may race it, so a mark that would go down is not written.
      const stored = this.db.get(k);
      if (typeof stored === 'number' && stored >= m.version) continue;
      writes.push(this.db.put(k, m.version));
    }
    try {
      await Promise.all(writes);
    } catch (err) {
      throw storeError(this.env, 'record delivered versions', err);
    }
  }

  close(): Promise<void> {
    return this.env.release();
  }
}
