/**
 * `failed replay` in a pool (`store.kind: redis`): the stored failed requests go back to their
 * dataflows' retry queues in Redis, under the queue's rules, instead of being sent by the
 * command itself. The owner of each profile's partition then sends them (fenced by its lease,
 * through the dataflow's pool-wide rate limit, three attempts, then a stored failed request
 * again), so a replay never races the live exports of a profile from another process.
 *
 * The rules (SPEC §6, "Nothing goes back in time"): a record at or below the newest version
 * delivered for its (dataflow, profile) is superseded (not queued, counted, removed); a record
 * older than the export already queued for its (dataflow, profile) is superseded by it; a newer
 * one replaces the queued one (which is then superseded). A queue holds one export per (dataflow,
 * profile), so of one profile's records only the newest is sent.
 */
import { queueKey, type DeliveredMarks, type QueuedExport, type RetryQueue } from '../stores/retry-queue.js';
import type { FailedRequest, FailedRequestStore } from './types.js';

export interface RequeueOptions {
  store: FailedRequestStore;
  queue: Pick<RetryQueue, 'enqueue'>;
  marks: Pick<DeliveredMarks, 'get'>;
  /** The dataflows of the current config: records of others are skipped and kept. */
  dataflowIds: readonly string[];
  /** Only this dataflow's records. @default every dataflow */
  dataflowId?: string;
  /** At most this many records (the first ones in the store's order, after `since`). @default all */
  limit?: number;
  /** Only records whose last attempt is at or after this time, ms since epoch. @default all */
  since?: number;
  /** Filled in as it goes (progress). @default a new one */
  stats?: RequeueSummary;
  /** @default Date.now */
  now?: () => number;
}

export interface RequeueSummary {
  stored: number;
  selected: number;
  /** Put in the retry queue (and removed from the failed store). */
  queued: number;
  /** Not queued (or replaced in the queue by a newer record): a newer state was delivered or is queued; removed. */
  superseded: number;
  /** Kept as they were: their dataflow is not in the config. */
  skipped: number;
}

/** The queue entry of a record. A record stored before versions existed counts as the oldest state (0). */
function entryOf(r: FailedRequest, now: number): QueuedExport {
  return {
    dataflowId: r.dataflowId,
    destinationId: r.destinationId,
    profileId: r.profileId,
    idempotencyKey: r.idempotencyKey,
    payload: r.payload,
    version: r.version ?? 0,
    attempts: 0,
    dueAt: now,
  };
}

/**
 * Re-enqueues stored failed requests (see the module doc); one record at a time, in the
 * store's order.
 *
 * @example
 * const s = await requeueFailedRequests({ store, queue, marks, dataflowIds: ['flow-1'] });
 * // { stored: 3, selected: 3, queued: 2, superseded: 1, skipped: 0 }
 */
export async function requeueFailedRequests(o: RequeueOptions): Promise<RequeueSummary> {
  const now = o.now ?? Date.now;
  const stored = await o.store.list(o.dataflowId === undefined ? undefined : { dataflowId: o.dataflowId });
  let records = o.since === undefined ? stored : stored.filter((r) => Date.parse(r.failedAt) >= o.since!);
  if (o.limit !== undefined) records = records.slice(0, Math.max(0, o.limit));
  const s: RequeueSummary = o.stats ?? { stored: 0, selected: 0, queued: 0, superseded: 0, skipped: 0 };
  s.stored = stored.length;
  s.selected = records.length;
  const known = new Set(o.dataflowIds);
  /**
   * The (dataflow, profile) pairs this replay queued a record of: a later record of the pair
   * that replaces the queued export supersedes it (it is then not sent). Pairs, not keys: the
   * queue may keep a merged export under a key of its own (`mergeQueued`).
   */
  const queuedHere = new Set<string>();
  let done: string[] = [];
  const flush = async (): Promise<void> => {
    if (done.length === 0) return;
    const ids = done;
    done = [];
    await o.store.remove(ids);
  };
  try {
    for (const r of records) {
      if (!known.has(r.dataflowId)) {
        s.skipped++;
        continue;
      }
      const delivered = await o.marks.get(r.dataflowId, r.profileId);
      if (delivered !== undefined && delivered >= (r.version ?? 0)) {
        s.superseded++;
      } else {
        const res = await o.queue.enqueue(entryOf(r, now()));
        if (!res.kept) s.superseded++;
        else {
          s.queued++;
          const pair = queueKey(r.dataflowId, r.profileId);
          if (res.replaced !== undefined && queuedHere.has(pair)) {
            s.queued--;
            s.superseded++;
          }
          queuedHere.add(pair);
        }
      }
      done.push(r.id);
      if (done.length >= 100) await flush();
    }
  } finally {
    await flush();
  }
  return s;
}
