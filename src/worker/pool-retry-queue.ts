/**
 * The retry queues of a pool (JetStream + Redis, `store.kind: redis`): Redis queues and
 * delivered marks (src/stores/redis-retry-queue.ts), and who drains them.
 *
 * The rule: **the owner of a profile's partition drains that profile's entries.** The worker
 * that holds a partition's lease reads only its partitions' due entries, and every attempt of
 * an entry carries the lease as its fence, checked by the HTTP sink right before the request
 * leaves (after the rate-limit permit, the credentials, a fresh permit). Hence:
 * - one entry is never sent by two workers at once: a second worker drains it only after it
 *   took the partition, i.e. after the first one's lease expired or was released, and by then
 *   the first one's fence fails (a SIGSTOPped worker that resumes sends nothing);
 * - a worker killed with entries queued loses none: they stay in Redis, and the partition's
 *   next owner (after the lease, `source.leaseMs`) drains them;
 * - an enqueue is fenced too (a compare-and-set that checks the lease): a worker that lost the
 *   partition queues nothing more;
 * - the live path of a partition sends nothing inline before the index of what is queued for
 *   it has been read from Redis (`ExportQueues.loadPartitions` at acquisition): until then its
 *   exports go to the queue, behind what is there.
 * The rate limit of a dataflow's retries is its pool-wide Redis limiter, as for live exports.
 */
import { Redis } from 'ioredis';
import type { StoreConfig } from '../config/load.js';
import { partitionOf } from '../domain/partition.js';
import type { Logger } from '../observability/logger.js';
import { RedisDeliveredMarks, RedisRetryQueue } from '../stores/redis-retry-queue.js';
import { RedisStoreEpoch } from '../stores/redis-store-epoch.js';
import type { QueuedExport } from '../stores/retry-queue.js';
import { ExportQueues } from './export-queues.js';
import type { PoolCoordinator } from './pool-types.js';
import type { RetryQueueHandle } from './retry-queue-stores.js';

/** Wait before the index of acquired partitions is read again after Redis refused (doubles to 5 s). */
const LOAD_RETRY_MS = 250;

/** Opens a Redis client for the queues of `store` (errors reach the callers, not the console). */
function client(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, enableAutoPipelining: true });
  redis.on('error', () => {});
  return redis;
}

/**
 * The Redis queues and marks without a worker (the CLI: `failed replay`, `failed list`,
 * `status`): every partition, unfenced; the epoch marker checked.
 */
export function openRedisQueueStores(store: Extract<StoreConfig, { kind: 'redis' }>, partitions: number): {
  queue: RedisRetryQueue;
  marks: RedisDeliveredMarks;
  close(): Promise<void>;
} {
  const redis = client(store.url);
  const epoch = new RedisStoreEpoch({ redis, keyPrefix: store.keyPrefix });
  const queue = new RedisRetryQueue({ redis, prefix: store.keyPrefix, partitions, epoch });
  const marks = new RedisDeliveredMarks({ redis, prefix: store.keyPrefix, epoch });
  return { queue, marks, close: async () => void redis.disconnect() };
}

/**
 * The retry queues of one worker of a pool: drained for the partitions `coordinator` gives it.
 *
 * @example
 * const rq = await openPoolRetryQueue(config.store, { coordinator, partitions: 16, logger });
 * drainRetries({ queues: rq.queues, marks: rq.marks, ownership: rq.ownership, … });
 */
export async function openPoolRetryQueue(
  store: Extract<StoreConfig, { kind: 'redis' }>,
  options: {
    coordinator: PoolCoordinator;
    partitions: number;
    logger: Logger;
    delayAfter?: (dataflowId: string, attempts: number, error: unknown) => number;
  },
): Promise<RetryQueueHandle> {
  const { coordinator, partitions, logger } = options;
  const redis = client(store.url);
  const epoch = new RedisStoreEpoch({
    redis,
    keyPrefix: store.keyPrefix,
    onLost: (err) => logger.error({ code: err.code }, `retry queues: ${err.message}`),
  });
  const of = (profileId: string): number => partitionOf(profileId, partitions);
  /** The epoch of the lease held on `p`, unless it is moving to another worker. */
  const owned = (p: number): number | undefined => {
    const e = coordinator.currentEpoch(p);
    if (e === undefined || !coordinator.holds(p, e)) return undefined;
    return coordinator.held().some((h) => h.partition === p && h.revoking) ? undefined : e;
  };
  const queue = new RedisRetryQueue({
    redis,
    prefix: store.keyPrefix,
    partitions,
    epoch,
    owned: () => coordinator.held().filter((h) => !h.revoking).map((h) => h.partition),
    fenceFor: (profileId) => {
      const p = of(profileId);
      const e = coordinator.currentEpoch(p);
      return e === undefined || !coordinator.holds(p, e) ? undefined : coordinator.fenceArgs(p, e);
    },
  });
  const marks = new RedisDeliveredMarks({ redis, prefix: store.keyPrefix, epoch });
  const queues = await ExportQueues.open({ queue, delayAfter: options.delayAfter, scope: { partitionOf: of } });

  // Partitions acquired in one tick are loaded together (one read of the queues).
  let batch: number[] = [];
  let closed = false;
  const load = async (ps: number[]): Promise<void> => {
    for (let wait = LOAD_RETRY_MS; !closed; wait = Math.min(wait * 2, 5_000)) {
      const still = ps.filter((p) => owned(p) !== undefined || coordinator.currentEpoch(p) !== undefined);
      if (still.length === 0) return;
      try {
        await queues.loadPartitions(still);
        return;
      } catch (err) {
        logger.warn({ err, partitions: still }, 'retry queues: cannot read what is queued for acquired partitions; their exports go to the queue meanwhile');
        await new Promise((r) => setTimeout(r, wait).unref());
      }
    }
  };
  const ownership = coordinator.ownership$.subscribe((ev) => {
    if (ev.type === 'acquired') {
      if (batch.length === 0) {
        queueMicrotask(() => {
          const ps = batch;
          batch = [];
          void load(ps);
        });
      }
      batch.push(ev.partition);
    } else if (ev.type === 'lost') queues.dropPartition(ev.partition);
  });

  return {
    queues,
    marks,
    ownership: (e: QueuedExport) => {
      const p = of(e.profileId);
      const epochHeld = owned(p);
      return epochHeld === undefined ? undefined : { guard: () => coordinator.holds(p, epochHeld) };
    },
    close: async () => {
      closed = true;
      ownership.unsubscribe();
      await Promise.allSettled([queues.close(), marks.close()]);
      redis.disconnect();
    },
  };
}
