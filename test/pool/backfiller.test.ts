/**
 * The elected backfiller's takeover (issue 15), in process on a real nats-server and
 * redis-server: backfiller A publishes its first page, checkpoints it, publishes its second
 * page and then "dies" before checkpointing (its Redis connection cut, its publish never
 * returning). B, waiting for the lock, takes it once A's lock expires, resumes from A's
 * checkpoint and publishes the rest: the stream ends with exactly one item per member (A's
 * second page, published again by B with the same message ids, is dropped by JetStream's
 * de-duplication), the backfill is done with every member counted, and a checkpoint with
 * A's stale lock value is refused.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DataflowRules } from '../../src/domain/types.js';
import { createLogger } from '../../src/observability/logger.js';
import { RedisSnapshotStore } from '../../src/stores/redis-snapshot-store.js';
import { backfillId } from '../../src/streams/backfill.js';
import { backfillPublisher } from '../../src/streams/backfill-publisher.js';
import { ensureStream } from '../../src/streams/jetstream.js';
import { backfillLockKeys, redisBackfillLock } from '../../src/worker/backfill-lock.js';
import { startBackfiller } from '../../src/worker/backfiller.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

const N = 1_000;
const PAGE = 100;
const PREFIX = 'bft:';
const silent = createLogger({ level: 'silent' });
const dataflows = [{ id: 'flow-1', audiences: [{ id: 'aud-x', mappingCreatedAt: 7 }] }] as unknown as DataflowRules[];
const ID = backfillId('flow-1', 'aud-x', 7);

const until = async (pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> => {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('the backfiller lock: a dead holder is taken over from its last checkpoint', () => {
  let nats: NatsServer;
  let redis: RedisServer;
  beforeAll(async () => {
    [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
  });
  afterAll(async () => {
    await Promise.allSettled([nats?.stop(), redis?.stop()]);
  });

  it('B resumes after A died between a publish and its checkpoint: one item per member on the stream', async () => {
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    await ensureStream({ jsm, stream: 'BFT', subject: 'bft.updates' });
    const publish = backfillPublisher({ nc, subject: 'bft.updates', partitions: 4 });
    const seed = new RedisSnapshotStore({ url: redis.url, keyPrefix: PREFIX });
    const t = '2026-01-01T00:00:00Z';
    await Promise.all(
      Array.from({ length: N }, (_, i) =>
        seed.apply({ profileId: `m-${i}`, segmentMembership: { ups: { 'aud-x': { status: 'realized', lastQualificationTime: t } } } }, { key: `k-${i}`, seq: i + 1 }),
      ),
    );
    await seed.close();

    const side = (worker: string) => {
      const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
      client.on('error', () => {});
      const store = new RedisSnapshotStore({ url: redis.url, keyPrefix: PREFIX });
      const lock = redisBackfillLock({ redis: client, keyPrefix: PREFIX, pool: 'p', workerId: worker, leaseMs: 600, checkpoint: (id, st, f) => store.setBackfillFenced(id, st, f) });
      return { client, store, lock };
    };
    const a = side('A');
    let pagesA = 0;
    const never = new Promise<void>(() => {});
    const A = startBackfiller({
      store: a.store,
      dataflows,
      lock: a.lock,
      pageSize: PAGE,
      retryMs: 100,
      logger: silent,
      publish: async (items) => {
        await publish(items);
        if (++pagesA === 2) {
          a.client.disconnect(); // dies: no renewal, no checkpoint of this page
          await never;
        }
      },
    });
    await until(() => pagesA === 2, 20_000, 'A publishing its second page');
    const lockKey = backfillLockKeys({ keyPrefix: PREFIX, pool: 'p' }).lock;
    const check = new Redis(redis.url);
    try {
      expect(await check.get(lockKey)).toMatch(/^A:/);
      expect(JSON.parse((await check.hget(`${PREFIX}backfills`, ID))!)).toMatchObject({ done: false, sent: PAGE });

      const b = side('B');
      let publishedByB = 0;
      const B = startBackfiller({
        store: b.store,
        dataflows,
        lock: b.lock,
        pageSize: PAGE,
        retryMs: 100,
        logger: silent,
        publish: async (items) => {
          publishedByB += items.length;
          await publish(items);
        },
      });
      await Promise.race([B.finished, new Promise((_, rej) => setTimeout(() => rej(new Error('B did not finish')), 30_000))]);
      expect(publishedByB, 'B starts from A’s checkpoint (one page), not from scratch').toBe(N - PAGE);
      expect(JSON.parse((await check.hget(`${PREFIX}backfills`, ID))!)).toEqual({ done: true, cursor: '0', sent: N, total: N });
      const info = await jsm.streams.info('BFT');
      expect(info.state.messages, 'one item per member: A’s unchecked page is de-duplicated').toBe(N);
      // A's lock value is stale: its checkpoint is refused.
      await expect(b.store.setBackfillFenced(ID, { done: false, cursor: '1', sent: 1 }, { key: lockKey, value: 'A:1' })).rejects.toMatchObject({ code: 'ERR_FENCED' });
      await B.stop();
      void A.stop();
      await Promise.allSettled([b.store.close(), a.store.close(), b.client.quit()]);
    } finally {
      check.disconnect();
      await nc.close();
    }
  }, 60_000);
});
