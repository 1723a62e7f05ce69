/**
 * `failed replay`: sends stored failed requests again through the dataflows' sinks.
 */
import { concatMap, firstValueFrom, from, lastValueFrom, mergeMap, toArray } from 'rxjs';
import type { DeliveredMarks } from '../stores/retry-queue.js';
import type { DeliveryOutcome, ExportSender, FailedRequest, FailedRequestStore } from './types.js';

/** The defaults of `replayFailedRequests`, named in one place. */
export const REPLAY_DEFAULTS = {
  /** Profiles whose records are sent at once (one record at a time per profile). */
  concurrency: 4,
  /** Delivered records are removed from the store in batches of this size (and at the end). */
  removeBatchSize: 100,
} as const;

export interface ReplayOptions {
  store: FailedRequestStore;
  /**
   * The sink of a dataflow, built from the CURRENT config (so a fixed endpoint or new
   * credentials apply); `undefined` for a dataflow that no longer exists. The sink should be
   * made with `storeFailures: false`: replay updates the records itself.
   */
  sinkFor: (dataflowId: string) => ExportSender | undefined;
  /** Replay only this dataflow's records. @default every dataflow */
  dataflowId?: string;
  /**
   * Profiles replayed at once. The records of one (dataflow, profile) are always sent one at
   * a time, in the store's order, so they reach the endpoint in that order. @default 4
   */
  concurrency?: number;
  /** Replay at most this many records (the first ones in the store's order, after `since`). @default all */
  limit?: number;
  /** Replay only records whose last attempt (`failedAt`) is at or after this time, ms since epoch. @default all */
  since?: number;
  /**
   * The newest version delivered per (dataflow, profile) (SPEC §6, "Nothing goes back in
   * time"): a record at or below it is superseded — not sent, counted, and removed from the
   * store (a newer state reached the endpoint); a delivered record raises the mark.
   * @default none: every record is sent (stores without marks)
   */
  marks?: Pick<DeliveredMarks, 'get' | 'record'>;
  /** The summary to fill in as the replay goes (read it for progress). @default a new one */
  stats?: ReplaySummary;
  /** Clock for `failedAt`, ms since epoch. @default Date.now */
  now?: () => number;
}

export interface ReplaySummary {
  /** Records in the store (of the dataflow, when one was given). */
  stored: number;
  /** Of `stored`: chosen for this replay (by `since` and `limit`); the others are left as they are. */
  selected: number;
  /** Records sent again (delivered + failed). */
  replayed: number;
  /** Delivered, and removed from the store. */
  delivered: number;
  /** Failed again, and kept (updated) in the store. */
  failed: number;
  /** Kept as they were: their dataflow is unknown to `sinkFor`. */
  skipped: number;
  /** Not sent: a newer state of their (dataflow, profile) was delivered; removed from the store. */
  superseded?: number;
}

/**
 * Sends every stored failed request (optionally of one dataflow, failed `since` a time, at
 * most `limit`) again through its dataflow's sink, with the same Idempotency-Key and payload
 * and the sink's retry policy. The records of one (dataflow, profile) go one at a time, in the
 * store's order; up to `concurrency` profiles at once.
 * With `marks`, a record older than (or as old as) the newest state delivered for its
 * (dataflow, profile) is superseded: not sent, counted, removed.
 * Delivered ones leave the store; failed ones stay, updated: `attempts` grows by the
 * attempts just made, `lastStatus` / `lastErrorCode` / `lastError` / `failedAt` are those of
 * this replay, and `replays` grows by one. Records of unknown dataflows are skipped and kept.
 *
 * @example
 * ```ts
 * const sinks = createSinks(config, { failedStore: store, limiterFor, storeFailures: false });
 * const summary = await replayFailedRequests({ store, sinkFor: (id) => sinks.get(id) });
 * // { stored: 3, selected: 3, replayed: 3, delivered: 2, failed: 1, skipped: 0 }
 * ```
 *
 * @param options.dataflowId @default every dataflow
 * @param options.concurrency profiles at once @default 4
 * @param options.limit @default every record
 * @param options.since ms since epoch @default every record
 * @param options.now @default Date.now
 */
export async function replayFailedRequests(options: ReplayOptions): Promise<ReplaySummary> {
  const { store, sinkFor } = options;
  const concurrency = Math.max(1, options.concurrency ?? REPLAY_DEFAULTS.concurrency);
  const now = options.now ?? Date.now;
  const stored = await store.list(options.dataflowId === undefined ? undefined : { dataflowId: options.dataflowId });
  const since = options.since;
  let records = since === undefined ? stored : stored.filter((r) => Date.parse(r.failedAt) >= since);
  if (options.limit !== undefined) records = records.slice(0, Math.max(0, options.limit));
  const summary: ReplaySummary = options.stats ?? { stored: 0, selected: 0, replayed: 0, delivered: 0, failed: 0, skipped: 0 };
  summary.stored = stored.length;
  summary.selected = records.length;
  // One queue per (dataflow, profile), in the store's order: a profile's records never overtake each other.
  const queues = new Map<string, FailedRequest[]>();
  for (const r of records) {
    const k = `${r.dataflowId}\u0000${r.profileId}`;
    const q = queues.get(k);
    if (q) q.push(r);
    else queues.set(k, [r]);
  }

  let toRemove: string[] = [];
  const flushRemovals = async (): Promise<void> => {
    if (toRemove.length === 0) return;
    const ids = toRemove;
    toRemove = [];
    await store.remove(ids);
  };

  const marks = options.marks;
  if (marks !== undefined) summary.superseded ??= 0;
  const replayOne = async (record: FailedRequest): Promise<void> => {
    const sink = sinkFor(record.dataflowId);
    if (!sink) {
      summary.skipped += 1;
      return;
    }
    if (marks !== undefined && record.version !== undefined) {
      const delivered = await marks.get(record.dataflowId, record.profileId);
      if (delivered !== undefined && delivered >= record.version) {
        summary.superseded = (summary.superseded ?? 0) + 1;
        toRemove.push(record.id);
        return;
      }
    }
    const outcome: DeliveryOutcome = await firstValueFrom(
      sink.send({
        dataflowId: record.dataflowId,
        destinationId: record.destinationId,
        profileId: record.profileId,
        idempotencyKey: record.idempotencyKey,
        payload: record.payload,
        version: record.version,
      }),
    );
    summary.replayed += 1;
    if (outcome.status === 'queued') throw new Error('a replay sender must not queue');
    if (outcome.status === 'delivered') {
      summary.delivered += 1;
      if (marks !== undefined && record.version !== undefined) {
        await marks.record([{ dataflowId: record.dataflowId, profileId: record.profileId, version: record.version }]);
      }
      toRemove.push(record.id);
      if (toRemove.length >= REPLAY_DEFAULTS.removeBatchSize) await flushRemovals();
      return;
    }
    summary.failed += 1;
    await store.put({
      ...record,
      attempts: record.attempts + outcome.attempts,
      lastStatus: outcome.statusCode,
      lastErrorCode: outcome.code,
      lastError: outcome.error,
      failedAt: new Date(now()).toISOString(),
      replays: (record.replays ?? 0) + 1,
    });
  };

  try {
    await lastValueFrom(
      from(queues.values()).pipe(
        mergeMap((queue) => from(queue).pipe(concatMap((r) => replayOne(r))), concurrency),
        toArray(),
      ),
    );
  } finally {
    // what was delivered leaves the store even when a later record broke the run
    await flushRemovals();
  }
  return summary;
}
