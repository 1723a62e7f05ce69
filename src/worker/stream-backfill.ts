/**
 * Wiring of the elected backfiller for a JetStream worker: its NATS connection for publishing,
 * and its lock — the pool's Redis lock with `store.kind: redis`, else this worker's own (one
 * worker per durable consumer without Redis).
 */
import { Redis } from 'ioredis';
import type { AppConfig, SourceConfig } from '../config/load.js';
import type { Logger } from '../observability/logger.js';
import { RedisSnapshotStore } from '../stores/redis-snapshot-store.js';
import type { SnapshotStore } from '../stores/types.js';
import { backfillPublisher } from '../streams/backfill-publisher.js';
import { connectNats, type NatsHandle } from '../streams/nats.js';
import { localBackfillLock, redisBackfillLock, type BackfillLock } from './backfill-lock.js';
import { startBackfiller, type Backfiller } from './backfiller.js';

type JetStreamSourceConfig = Extract<SourceConfig, { kind: 'jetstream' }>;

/**
 * Starts this worker's backfiller loop (see backfiller.ts); `stop()` ends it, releases the
 * lock and closes what it opened.
 */
export function openStreamBackfiller(options: { config: AppConfig; source: JetStreamSourceConfig; store: SnapshotStore; logger: Logger; workerId: string }): Backfiller {
  const { config, source: s, store, logger } = options;
  let redis: Redis | undefined;
  let lock: BackfillLock;
  if (config.store.kind === 'redis' && store instanceof RedisSnapshotStore) {
    redis = new Redis(config.store.url, { maxRetriesPerRequest: 1, commandTimeout: Math.max(200, Math.floor(s.leaseMs / 5)) });
    redis.on('error', () => {}); // failures reach the log through the backfiller's own warnings
    lock = redisBackfillLock({
      redis,
      keyPrefix: config.store.keyPrefix,
      pool: s.durable,
      workerId: options.workerId,
      leaseMs: s.leaseMs,
      checkpoint: (id, state, fence) => store.setBackfillFenced(id, state, fence),
    });
  } else {
    lock = localBackfillLock((id, state) => store.setBackfill(id, state), options.workerId);
  }
  let nats: Promise<NatsHandle> | undefined;
  let publish: ((items: Parameters<ReturnType<typeof backfillPublisher>>[0]) => Promise<void>) | undefined;
  const backfiller = startBackfiller({
    store,
    dataflows: config.dataflows,
    lock,
    logger,
    retryMs: Math.max(100, Math.floor(s.leaseMs / 2)),
    pageSize: s.backfillPageSize,
    publishPerSecond: s.backfillPublishPerSecond,
    // Connected on the first page: most starts have nothing to backfill.
    publish: async (items) => {
      if (!publish) {
        nats ??= connectNats({ servers: s.servers, name: `http-destination:${s.durable}:backfill` });
        try {
          publish = backfillPublisher({ nc: (await nats).nc, subject: s.subject, partitions: s.partitions });
        } catch (err) {
          nats = undefined; // tried again on the next page
          throw err;
        }
      }
      await publish(items);
    },
  });
  return {
    finished: backfiller.finished,
    published: backfiller.published,
    async stop() {
      await backfiller.stop();
      await Promise.allSettled([nats?.then((h) => h.close()), redis?.quit()]);
    },
  };
}
