/**
 * `failed replay` in a pool (`store.kind: redis`, JetStream source): the records go back to
 * the dataflows' retry queues in Redis, and the owner of each profile's partition sends them
 * (src/sinks/requeue.ts, README "Retry queues in a pool").
 */
import type { AppConfig } from '../config/load.js';
import { requeueFailedRequests } from '../sinks/requeue.js';
import { openFailureStores } from '../worker/runtime.js';
import { openRedisQueueStores } from '../worker/pool-retry-queue.js';
import { count, type ProgressFigures } from './progress.js';

/**
 * `failed replay` in a pool: the records go back to the dataflows' retry queues in Redis (the
 * owner of each profile's partition sends them, fenced by its lease); superseded ones are
 * dropped and counted (src/sinks/requeue.ts).
 */
export async function replayToPoolQueues(
  config: AppConfig,
  store: Extract<AppConfig['store'], { kind: 'redis' }>,
  partitions: number,
  o: { dataflow?: string; limit?: number; since?: number; onStats?: (read: () => ProgressFigures) => void },
): Promise<string> {
  const stores = await openFailureStores(config);
  const rq = openRedisQueueStores(store, partitions);
  const stats = { stored: 0, selected: 0, queued: 0, superseded: 0, skipped: 0 };
  o.onStats?.(() => ({
    done: stats.queued + stats.superseded + stats.skipped,
    total: stats.selected,
    detail: `queued ${count(stats.queued)}, superseded ${count(stats.superseded)}, skipped ${count(stats.skipped)}`,
  }));
  try {
    const r = await requeueFailedRequests({
      store: stores.failed,
      queue: rq.queue,
      marks: rq.marks,
      dataflowIds: config.dataflows.map((d) => d.id),
      dataflowId: o.dataflow,
      limit: o.limit,
      since: o.since,
      stats,
    });
    const left = r.stored - r.selected;
    return (
      `queued ${r.queued} for the pool's workers to send (each by the owner of its profile's partition; ` +
        `one that fails again is stored again), superseded ${r.superseded} (not queued: a newer state was delivered or is queued; removed), ` +
        `skipped ${r.skipped} of unknown dataflows; ${r.stored} stored${left > 0 ? `, ${left} not selected (--since/--limit)` : ''}`
    );
  } finally {
    await rq.close();
    await stores.close();
  }
}
