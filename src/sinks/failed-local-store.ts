/**
 * Failed requests and rejected events in the local store (`failedRequests.kind: local`, the
 * embedded default): two named databases of the same LMDB environment as the snapshots
 * (src/stores/local-env.ts). Every `put` and `remove` is one LMDB write transaction, so a
 * running `run` and any number of `failed list`, `failed replay` and `rejected list`
 * processes use the store at once without losing or corrupting a record.
 */
import type { Database } from 'lmdb';
import { StoreError } from '../errors.js';
import { openLocalEnv, type LocalEnv } from '../stores/local-env.js';
import { markedPairsOf } from '../stores/local-marked-pairs.js';
import type { FailedRequest, FailedRequestStore, RejectedEvent, RejectedEventStore } from './types.js';

/** Stored beside each record: its place in put order (a global counter in `meta`). */
interface Ordered<T> {
  n: number;
  record: T;
}

/**
 * Numbers records in put order across processes: read-increment-write of `meta[name]` inside
 * the write transaction (LMDB runs one writer at a time, so no two records get one number).
 */
async function putOrdered<T>(env: LocalEnv, name: string, db: Database<unknown, string>, key: (n: number) => string, record: T): Promise<void> {
  const meta = env.db('meta');
  try {
    await env.root.transaction(() => {
      const n = ((meta.get(name) as number | undefined) ?? 0) + 1;
      meta.put(name, n);
      db.put(key(n), { n, record } satisfies Ordered<T>);
    });
  } catch (err) {
    throw new StoreError(`local store ${env.path}: cannot store a record: ${(err as Error).message}`, { cause: err });
  }
}

function isFailedRequest(v: unknown): v is FailedRequest {
  if (v === null || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return typeof r.id === 'string' && typeof r.dataflowId === 'string' && typeof r.attempts === 'number';
}

/**
 * Failed requests in the local store, one record per id (a record put again replaces the
 * earlier one and moves to the end of the list).
 *
 * @example
 * ```ts
 * const failed = new LocalFailedRequestStore({ path: 'http-destination.state' });
 * await failed.put(record);
 * const all = await failed.list({ dataflowId: 'flow-1' });
 * await failed.remove(all.map((r) => r.id));
 * await failed.close();
 * ```
 *
 * @param options.path the local store's folder (required)
 */
export class LocalFailedRequestStore implements FailedRequestStore {
  private readonly env: LocalEnv;
  private readonly db: Database<unknown, string>;

  constructor(options: { path: string }) {
    this.env = openLocalEnv(options.path);
    this.db = this.env.db('failed');
  }

  get path(): string {
    return this.env.path;
  }

  put(record: FailedRequest): Promise<void> {
    // Its pair's delivered marks are written from now on (a newer delivery supersedes it).
    markedPairsOf(this.env).failedOne(record.dataflowId, record.profileId);
    return putOrdered(this.env, 'failedSeq', this.db, () => record.id, record);
  }

  async list(filter?: { dataflowId?: string }): Promise<FailedRequest[]> {
    const out: Array<Ordered<FailedRequest>> = [];
    for (const { value } of this.db.getRange()) {
      const v = value as Ordered<unknown> | undefined;
      if (!v || !isFailedRequest(v.record)) continue;
      if (filter?.dataflowId !== undefined && v.record.dataflowId !== filter.dataflowId) continue;
      out.push(v as Ordered<FailedRequest>);
    }
    return out.sort((a, b) => a.n - b.n).map((o) => o.record);
  }

  async remove(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    try {
      await this.env.root.transaction(() => {
        for (const id of ids) this.db.remove(id);
      });
    } catch (err) {
      throw new StoreError(`local store ${this.env.path}: cannot remove records: ${(err as Error).message}`, { cause: err });
    }
  }

  close(): Promise<void> {
    return this.env.release();
  }
}

/**
 * Rejected input events in the local store, in the order they were rejected.
 *
 * @example
 * ```ts
 * const rejected = new LocalRejectedEventStore({ path: 'http-destination.state' });
 * await rejected.put({ sourceKey: 'file:events.jsonl:3', code: 'ERR_EVENT_JSON', reason: '…', raw: '{', rejectedAt: new Date().toISOString() });
 * ```
 *
 * @param options.path the local store's folder (required)
 */
export class LocalRejectedEventStore implements RejectedEventStore {
  private readonly env: LocalEnv;
  private readonly db: Database<unknown, string>;

  constructor(options: { path: string }) {
    this.env = openLocalEnv(options.path);
    this.db = this.env.db('rejected');
  }

  put(record: RejectedEvent): Promise<void> {
    return putOrdered(this.env, 'rejectedSeq', this.db, (n) => String(n).padStart(15, '0'), record);
  }

  async list(): Promise<RejectedEvent[]> {
    const out: RejectedEvent[] = [];
    for (const { value } of this.db.getRange()) {
      const v = value as Ordered<RejectedEvent> | undefined;
      if (v && typeof v.record?.sourceKey === 'string') out.push(v.record);
    }
    return out;
  }

  close(): Promise<void> {
    return this.env.release();
  }
}
