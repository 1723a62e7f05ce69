/**
 * The retry queues and delivered-version marks of a config (SPEC §6), beside its snapshot store.
 */
import { resolve } from 'node:path';
import type { AppConfig } from '../config/load.js';
import { LocalDeliveredMarks, LocalRetryQueue } from '../stores/local-retry-queue.js';
import { MemoryDeliveredMarks, MemoryRetryQueue, type DeliveredMarks } from '../stores/retry-queue.js';
import { ExportQueues } from './export-queues.js';

export interface RetryQueueHandle {
  queues: ExportQueues;
  marks: DeliveredMarks;
  close(): Promise<void>;
}

/**
 * The retry queues of a config: in the local store (`store.kind: local`, the embedded
 * default) or in memory (`memory`). The pool (`store.kind: redis`) has none yet: its retries
 * run inline, in the message's slot (README, "Retry queues").
 */
export async function openRetryQueue(
  config: AppConfig,
  options: { delayAfter?: (dataflowId: string, attempts: number, error: unknown) => number } = {},
): Promise<RetryQueueHandle | undefined> {
  const s = config.store;
  if (s.kind === 'redis') return undefined;
  const queue = s.kind === 'local' ? new LocalRetryQueue({ path: s.path }) : new MemoryRetryQueue();
  const marks = s.kind === 'local' ? new LocalDeliveredMarks({ path: s.path, everyPair: !failedInStore(config) }) : new MemoryDeliveredMarks();
  const queues = await ExportQueues.open({ queue, delayAfter: options.delayAfter });
  return { queues, marks, close: async () => void (await Promise.all([queues.close(), marks.close()])) };
}

/** The delivered-version marks a `failed list` / `failed replay` reads, when the config's store keeps them. */
export function openMarks(config: AppConfig): DeliveredMarks | undefined {
  return config.store.kind === 'local' ? new LocalDeliveredMarks({ path: config.store.path, everyPair: !failedInStore(config) }) : undefined;
}

/**
 * Whether the failed requests are kept in the local store itself: then it knows every pair
 * with one, and writes delivered marks only for those and the queued ones (LocalDeliveredMarks).
 */
function failedInStore(config: AppConfig): boolean {
  const f = config.failedRequests;
  return config.store.kind === 'local' && f.kind === 'local' && resolve(f.path) === resolve(config.store.path);
}
