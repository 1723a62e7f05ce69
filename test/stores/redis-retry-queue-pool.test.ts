/**
 * The Redis retry queue in a pool (issue 13), on a real redis-server: due sets per partition
 * (a worker reads only its partitions' entries), enqueues fenced by the partition's lease, and
 * the store's epoch marker checked by every call (Redis emptied → `StoreLostError`, loudly).
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partitionOf } from '../../src/domain/partition.js';
import { RedisDeliveredMarks, RedisRetryQueue } from '../../src/stores/redis-retry-queue.js';
import { RedisStoreEpoch } from '../../src/stores/redis-store-epoch.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
import { queuedExport } from '../support/queued-export.js';

let server: RedisServer | undefined;
let n = 0;
const clients: Redis[] = [];
const client = (): Redis => {
  const r = new Redis(server!.url);
  clients.push(r);
  return r;
};
beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await server?.stop();
});

const entry = queuedExport;

/** Profile ids of partition `p` of 4. */
const ofPartition = (p: number, count: number): string[] => {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) if (partitionOf(`pr-${i}`, 4) === p) out.push(`pr-${i}`);
  return out;
};

describe('redis retry queue in a pool', () => {
  it('due and nextDue read only the owned partitions; list sees them all', async () => {
    const prefix = `t${++n}:`;
    let owned = [1];
    const q = new RedisRetryQueue({ redis: client(), prefix, partitions: 4, owned: () => owned });
    const [a] = ofPartition(1, 1);
    const [b] = ofPartition(2, 1);
    await q.enqueue(entry(b!, 1, { dueAt: 10 }));
    await q.enqueue(entry(a!, 1, { dueAt: 20 }));
    expect((await q.due('flow', 100, 10)).map((e) => e.profileId)).toEqual([a]);
    expect(await q.nextDue('flow')).toBe(20);
    owned = [1, 2];
    expect((await q.due('flow', 100, 10)).map((e) => e.profileId)).toEqual([b, a]);
    expect((await q.due('flow', 100, 1)).map((e) => e.profileId)).toEqual([b]);
    owned = [];
    expect(await q.due('flow', 100, 10)).toEqual([]);
    expect((await q.list()).map((e) => e.profileId).sort()).toEqual([a, b].sort());
  });

  it('an enqueue is written only while the lease it is fenced with holds', async () => {
    const prefix = `t${++n}:`;
    const redis = client();
    let fence: { key: string; value: string } | undefined = { key: `${prefix}lease:1`, value: 'w1:1' };
    const q = new RedisRetryQueue({ redis, prefix, partitions: 4, fenceFor: () => fence });
    const [a, b] = ofPartition(1, 2);
    await redis.set(`${prefix}lease:1`, 'w1:1');
    await q.enqueue(entry(a!, 1));
    // Another worker took the partition (a later epoch).
    await redis.set(`${prefix}lease:1`, 'w2:2');
    await expect(q.enqueue(entry(b!, 1))).rejects.toMatchObject({ code: 'ERR_FENCED' });
    fence = undefined; // not held by this worker at all
    await expect(q.enqueue(entry(b!, 2))).rejects.toMatchObject({ code: 'ERR_FENCED' });
    expect((await q.list()).map((e) => e.profileId)).toEqual([a]);
  });

  it('marks recorded in one event-loop turn are written by one script call, and every caller waits for it', async () => {
    const redis = client();
    const prefix = `rm${++n}:`;
    const marks = new RedisDeliveredMarks({ redis, prefix });
    let calls = 0;
    const evalOf = redis.eval.bind(redis);
    (redis as unknown as { eval: typeof redis.eval }).eval = ((...args: Parameters<typeof redis.eval>) => (calls++, evalOf(...args))) as typeof redis.eval;
    await Promise.all([
      marks.record([{ dataflowId: 'f', profileId: 'a', version: 3 }]),
      marks.record([{ dataflowId: 'f', profileId: 'b', version: 5 }, { dataflowId: 'g', profileId: 'a', version: 1 }]),
      marks.record([{ dataflowId: 'f', profileId: 'a', version: 2 }]),
    ]);
    expect(calls).toBe(1);
    expect([await marks.get('f', 'a'), await marks.get('f', 'b'), await marks.get('g', 'a')]).toEqual([3, 5, 1]);
    // a later turn: a call of its own
    await marks.record([{ dataflowId: 'f', profileId: 'a', version: 4 }]);
    expect(calls).toBe(2);
    expect(await marks.get('f', 'a')).toBe(4);
  });

  it('Redis emptied: every call of the queue and of the marks rejects with ERR_STORE_LOST', async () => {
    const prefix = `t${++n}:`;
    const redis = client();
    const epoch = new RedisStoreEpoch({ redis, keyPrefix: prefix });
    const q = new RedisRetryQueue({ redis, prefix, partitions: 4, epoch });
    const marks = new RedisDeliveredMarks({ redis, prefix, epoch });
    const [a] = ofPartition(0, 1);
    await q.enqueue(entry(a!, 1));
    await marks.record([{ dataflowId: 'flow', profileId: a!, version: 5 }]);
    expect(await marks.get('flow', a!)).toBe(5);
    expect((await q.due('flow', 2_000, 10)).length).toBe(1);
    // Redis restarted empty (only this test's keys, so the others' survive).
    const keys = await redis.keys(`${prefix}*`);
    await redis.del(...keys);
    await expect(q.due('flow', 2_000, 10)).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    await expect(q.nextDue('flow')).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    await expect(q.enqueue(entry(a!, 2))).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    await expect(q.settle(entry(a!, 1))).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    await expect(q.list()).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    await expect(marks.get('flow', a!)).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    await expect(marks.record([{ dataflowId: 'flow', profileId: a!, version: 6 }])).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    // Nothing was written into the emptied store but the `lost:` marker.
    expect(await redis.keys(`${prefix}*`)).toEqual([`${prefix}epoch`]);
  });

  it('each call checks the marker itself: a second handle (another worker) finds the loss too', async () => {
    const prefix = `t${++n}:`;
    const mk = () => {
      const redis = client();
      const epoch = new RedisStoreEpoch({ redis, keyPrefix: prefix });
      return { q: new RedisRetryQueue({ redis, prefix, epoch }), marks: new RedisDeliveredMarks({ redis, prefix, epoch }) };
    };
    const one = mk();
    const two = mk();
    await one.q.enqueue(entry('x', 1));
    expect((await two.q.list()).length).toBe(1);
    await client().flushall();
    await expect(two.marks.record([{ dataflowId: 'flow', profileId: 'x', version: 1 }])).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
    await expect(one.q.due('flow', 2_000, 10)).rejects.toMatchObject({ code: 'ERR_STORE_LOST' });
  });
});
