/**
 * The retry queues and delivered-version marks of a config (SPEC §6), beside its snapshot store.
 */
import { resolve } from 'node:path';
import type { AppConfig } from '../config/load.js';
import { LocalDeliveredMarks, LocalRetryQueue } from '../stores/local-retry-queue.js';
import { MemoryDeliveredMarks, MemoryRetryQueue, type DeliveredMarks } from '../stores/retry-queue.js';
import type { QueuedExport } from '../stores/retry-queue.js';
import type { Logger } from '../observability/logger.js';
import { ExportQueues } from './export-queues.js';
import type { PoolCoordinator } from './pool-types.js';

export interface RetryQueueHandle {
  queues: ExportQueues;
  marks: DeliveredMarks;
  /** Pool mode: which entries this worker drains, and the fence of their attempts (see drainRetries). */
  ownership?: (entry: QueuedExport) => { guard: () => boolean } | undefined;
  close(): Promise<void>;
}

/**
 * The retry queues of a config: in the local store (`store.kind: local`, the embedded
 * default), in memory (`memory`), or in Redis (`redis`, the pool: drained by each partition's
 * owner, src/worker/pool-retry-queue.ts). A Redis store without a pool coordinator (a JetStream
 * source read by one worker through one consumer) has none: its retries run inline, in the
 * message's slot (README, "Retry queues").
 */
export async function openRetryQueue(
  config: AppConfig,
  options: {
    delayAfter?: (dataflowId: string, attempts: number, error: unknown) => number;
    /** Pool mode: the worker's coordinator (who owns which partition). */
    coordinator?: PoolCoordinator;
    logger?: Logger;
  } = {},
): Promise<RetryQueueHandle | undefined> {
  const s = config.store;
  if (s.kind === 'redis') {
    if (!options.coordinator || !options.logger || config.source.kind !== 'jetstream') return undefined;
    const { openPoolRetryQueue } = await import('./pool-retry-queue.js');
    return openPoolRetryQueue(s, { coordinator: options.coordinator, partitions: config.source.partitions, logger: options.logger, delayAfter: options.delayAfter });
  }
  const queue = s.kind === 'local' ? new LocalRetryQueue({ path: s.path }) : new MemoryRetryQueue();
  const marks = s.kind === 'local' ? new LocalDeliveredMarks({ path: s.path, everyPair: !failedInStore(config) }) : new MemoryDeliveredMarks();
  const queues = await ExportQueues.open({ queue, delayAfter: options.delayAfter });
  return { queues, marks, close: async () => void (await Promise.all([queues.close(), marks.close()])) };
}

/**
 * The marks a replay inside a running worker reads (the admin API, the console): the worker's
 * own (`own`, recorded as it delivers), else the config's store's (`openMarks`, closed by
 * `release`). Without them a replay would send a record older than what was delivered since
 * (SPEC §6: superseded, not sent). None: a memory store with no worker yet.
 */
export async function marksForReplay(config: AppConfig, own: DeliveredMarks | undefined): Promise<{ marks: DeliveredMarks | undefined; release(): Promise<void> }> {
  if (own) return { marks: own, release: async () => undefined };
  const opened = await openMarks(config);
  return { marks: opened, release: async () => void (await opened?.close()) };
}

/** The delivered-version marks a `failed list` / `failed replay` reads, when the config's store keeps them. */
export async function openMarks(config: AppConfig): Promise<DeliveredMarks | undefined> {
  if (config.store.kind === 'local') return new LocalDeliveredMarks({ path: config.store.path, everyPair: !failedInStore(config) });
  if (config.store.kind === 'redis') {
    const { openRedisQueueStores } = await import('./pool-retry-queue.js');
    const stores = openRedisQueueStores(config.store, config.source.kind === 'jetstream' ? config.source.partitions : 1);
    return { get: (d, p) => stores.marks.get(d, p), record: (m) => stores.marks.record(m), close: () => stores.close() };
  }
  return undefined;
}

/**
 * Whether the failed requests are kept in the local store itself: then it knows every pair
 * with one, and writes delivered marks only for those and the queued ones (LocalDeliveredMarks).
 */
function failedInStore(config: AppConfig): boolean {
  const f = config.failedRequests;
  return config.store.kind === 'local' && f.kind === 'local' && resolve(f.path) === resolve(config.store.path);
}
