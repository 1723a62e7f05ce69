/**
 * The per-dataflow retry queues (SPEC §6) and the delivered-version marks ("nothing goes back
 * in time"), behind two small interfaces, with the in-memory implementation (tests, the
 * `memory` store). The local store's (LMDB) is in local-retry-queue.ts.
 *
 * A queue holds at most ONE export per (dataflow, profile): a newer one supersedes the older
 * (the endpoint wants the latest state, not every state), inheriting the older's audience
 * exits it does not name itself (see `supersede` in src/domain/supersede.ts).
 */
import { supersede } from '../domain/supersede.js';
import { carriedExitsKey } from '../domain/keys.js';
import type { ExportPayload } from '../domain/types.js';

/** One export waiting in its dataflow's retry queue. Holds no secret (as a failed request). */
export interface QueuedExport {
  dataflowId: string;
  destinationId: string;
  profileId: string;
  idempotencyKey: string;
  payload: ExportPayload;
  /** The state's version (ExportJob.version): the newer wins. */
  version: number;
  /** Upstream event time, ms since epoch (latency metrics). */
  eventTime?: number;
  /** HTTP attempts made so far. */
  attempts: number;
  /** Not to be attempted before this time, ms since epoch. */
  dueAt: number;
  /** The last attempt's error code and status, when there was one. */
  lastErrorCode?: string;
  lastStatus?: number;
}

/** Durable per-dataflow retry queues: one entry per (dataflow, profile). */
export interface RetryQueue {
  /**
   * Puts `entry` durably (resolves once it is on disk / in the store). An entry already there
   * for the same (dataflow, profile) is replaced when `entry` is at least as new (its exits
   * carried over; `replaced` names the export it superseded), else `entry` is dropped (it is
   * older: `kept: false`).
   */
  enqueue(entry: QueuedExport): Promise<EnqueueResult>;
  /** Up to `limit` entries of the dataflow due at `now`, soonest first. */
  due(dataflowId: string, now: number, limit: number): Promise<QueuedExport[]>;
  /** When the dataflow's next entry is due (ms since epoch), or undefined when its queue is empty. */
  nextDue(dataflowId: string): Promise<number | undefined>;
  /**
   * Settles `entry`: removes it, or (with `retry`) puts it back with the new attempt count and
   * due time — in both cases only while the stored entry of its (dataflow, profile) is still
   * this one (same idempotency key): a newer export that superseded it meanwhile stays.
   * Resolves `true` when the stored entry was this one.
   */
  settle(entry: QueuedExport, retry?: { attempts: number; dueAt: number; lastErrorCode?: string; lastStatus?: number }): Promise<boolean>;
  /** Every (dataflow, profile) queued (loaded at start into the worker's index). */
  keys(): Promise<Array<{ dataflowId: string; profileId: string }>>;
  /** Entries of one dataflow (or all), soonest first: for `status` and tests. */
  list(dataflowId?: string): Promise<QueuedExport[]>;
  close(): Promise<void>;
}

/** What `enqueue` did. */
export interface EnqueueResult {
  /** The entry is stored (alone, or superseding an older one). */
  kept: boolean;
  /**
   * The idempotency key the stored entry has (when kept): the entry's own, or a key of its own
   * when it carries the exits of the export it replaced (`mergeQueued`). Indexes of what is
   * queued hold this key: the drain settles the stored entry by it.
   */
  key?: string;
  /** The idempotency key of the older export it superseded, if any. */
  replaced?: string;
}

/** Per (dataflow, profile): the version of the newest state delivered to the endpoint. */
export interface DeliveredMarks {
  /** The newest version delivered, or undefined when none is known. */
  get(dataflowId: string, profileId: string): Promise<number | undefined>;
  /** Records deliveries; a mark never goes down (an older version leaves a newer mark). */
  record(marks: ReadonlyArray<{ dataflowId: string; profileId: string; version: number }>): Promise<void>;
  close(): Promise<void>;
}

/** The key of a (dataflow, profile) in the queues, indexes and marks. */
export function queueKey(dataflowId: string, profileId: string): string {
  return `${dataflowId}\u0000${profileId}`;
}

/** Whether `incoming` replaces `stored` (at least as new), and the entry to keep. */
export function mergeQueued(stored: QueuedExport | undefined, incoming: QueuedExport): QueuedExport | undefined {
  if (stored === undefined) return incoming;
  if (incoming.idempotencyKey === stored.idempotencyKey) return { ...incoming };
  if (incoming.version < stored.version) return undefined;
  const payload = supersede(stored.payload, incoming.payload);
  return {
    ...incoming,
    payload,
    // A body completed with carried exits is not the newer export's body: a key of its own.
    idempotencyKey: payload === incoming.payload ? incoming.idempotencyKey : carriedExitsKey(incoming.idempotencyKey, payload.segmentMembership),
    // The queue keeps its schedule: a newer export waits no less than the one it replaces.
    dueAt: Math.max(incoming.dueAt, stored.dueAt),
  };
}

/**
 * Retry queues in memory (tests, `store.kind: memory`): not durable.
 *
 * @example
 * const q = new MemoryRetryQueue();
 * await q.enqueue(entry);
 * const due = await q.due('flow-1', Date.now(), 100);
 */
export class MemoryRetryQueue implements RetryQueue {
  private readonly entries = new Map<string, QueuedExport>();

  async enqueue(entry: QueuedExport): Promise<EnqueueResult> {
    const k = queueKey(entry.dataflowId, entry.profileId);
    const stored = this.entries.get(k);
    const next = mergeQueued(stored, entry);
    if (next === undefined) return { kept: false };
    this.entries.set(k, next);
    return { kept: true, key: next.idempotencyKey, replaced: stored !== undefined && stored.idempotencyKey !== next.idempotencyKey ? stored.idempotencyKey : undefined };
  }

  async due(dataflowId: string, now: number, limit: number): Promise<QueuedExport[]> {
    return (await this.list(dataflowId)).filter((e) => e.dueAt <= now).slice(0, limit);
  }

  async nextDue(dataflowId: string): Promise<number | undefined> {
    return (await this.list(dataflowId))[0]?.dueAt;
  }

  async settle(entry: QueuedExport, retry?: { attempts: number; dueAt: number; lastErrorCode?: string; lastStatus?: number }): Promise<boolean> {
    const k = queueKey(entry.dataflowId, entry.profileId);
    const stored = this.entries.get(k);
    if (stored?.idempotencyKey !== entry.idempotencyKey) return false;
    if (retry) this.entries.set(k, { ...stored, ...retry });
    else this.entries.delete(k);
    return true;
  }

  async keys(): Promise<Array<{ dataflowId: string; profileId: string }>> {
    return [...this.entries.values()].map((e) => ({ dataflowId: e.dataflowId, profileId: e.profileId }));
  }

  async list(dataflowId?: string): Promise<QueuedExport[]> {
    return [...this.entries.values()].filter((e) => dataflowId === undefined || e.dataflowId === dataflowId).sort((a, b) => a.dueAt - b.dueAt);
  }

  async close(): Promise<void> {}
}

/**
 * Delivered-version marks in memory (tests, `store.kind: memory`).
 *
 * @example
 * const marks = new MemoryDeliveredMarks();
 * await marks.record([{ dataflowId: 'f', profileId: 'p', version: 7 }]);
 * await marks.get('f', 'p'); // 7
 */
export class MemoryDeliveredMarks implements DeliveredMarks {
  private readonly marks = new Map<string, number>();

  async get(dataflowId: string, profileId: string): Promise<number | undefined> {
    return this.marks.get(queueKey(dataflowId, profileId));
  }

  async record(marks: ReadonlyArray<{ dataflowId: string; profileId: string; version: number }>): Promise<void> {
    for (const m of marks) {
      const k = queueKey(m.dataflowId, m.profileId);
      if (!(m.version <= (this.marks.get(k) ?? -Infinity))) this.marks.set(k, m.version);
    }
  }

  async close(): Promise<void> {}
}
