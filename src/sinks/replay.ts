/**
 * `failed replay`: sends stored failed requests again through the dataflows' sinks.
 */
import { firstValueFrom, from, lastValueFrom, mergeMap, toArray } from 'rxjs';
import type { DeliveryOutcome, ExportSender, FailedRequest, FailedRequestStore } from './types.js';

/** The defaults of `replayFailedRequests`, named in one place. */
export const REPLAY_DEFAULTS = {
  /** Records sent at once. */
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
  /** Records sent at once. @default 4 */
  concurrency?: number;
  /** Clock for `failedAt`, ms since epoch. @default Date.now */
  now?: () => number;
}

export interface ReplaySummary {
  /** Records sent again (delivered + failed). */
  replayed: number;
  /** Delivered, and removed from the store. */
  delivered: number;
  /** Failed again, and kept (updated) in the store. */
  failed: number;
  /** Kept as they were: their dataflow is unknown to `sinkFor`. */
  skipped: number;
}

/**
 * Sends every stored failed request (optionally of one dataflow) again through its
 * dataflow's sink, with the same Idempotency-Key and payload and the sink's retry policy.
 * Delivered ones leave the store; failed ones stay, updated: `attempts` grows by the
 * attempts just made, `lastStatus` / `lastErrorCode` / `lastError` / `failedAt` are those of
 * this replay, and `replays` grows by one. Records of unknown dataflows are skipped and kept.
 *
 * @example
 * ```ts
 * const sinks = createSinks(config, { failedStore: store, limiterFor, storeFailures: false });
 * const summary = await replayFailedRequests({ store, sinkFor: (id) => sinks.get(id) });
 * // { replayed: 3, delivered: 2, failed: 1, skipped: 0 }
 * ```
 *
 * @param options.dataflowId @default every dataflow
 * @param options.concurrency @default 4
 * @param options.now @default Date.now
 */
export async function replayFailedRequests(options: ReplayOptions): Promise<ReplaySummary> {
  const { store, sinkFor } = options;
  const concurrency = Math.max(1, options.concurrency ?? REPLAY_DEFAULTS.concurrency);
  const now = options.now ?? Date.now;
  const records = await store.list(options.dataflowId === undefined ? undefined : { dataflowId: options.dataflowId });
  const summary: ReplaySummary = { replayed: 0, delivered: 0, failed: 0, skipped: 0 };

  let toRemove: string[] = [];
  const flushRemovals = async (): Promise<void> => {
    if (toRemove.length === 0) return;
    const ids = toRemove;
    toRemove = [];
    await store.remove(ids);
  };

  const replayOne = async (record: FailedRequest): Promise<void> => {
    const sink = sinkFor(record.dataflowId);
    if (!sink) {
      summary.skipped += 1;
      return;
    }
    const outcome: DeliveryOutcome = await firstValueFrom(
      sink.send({
        dataflowId: record.dataflowId,
        destinationId: record.destinationId,
        profileId: record.profileId,
        idempotencyKey: record.idempotencyKey,
        payload: record.payload,
      }),
    );
    summary.replayed += 1;
    if (outcome.status === 'delivered') {
      summary.delivered += 1;
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
      from(records).pipe(
        mergeMap((r) => replayOne(r), concurrency),
        toArray(),
      ),
    );
  } finally {
    // what was delivered leaves the store even when a later record broke the run
    await flushRemovals();
  }
  return summary;
}
