/**
 * The retry queues and delivered-version marks: one contract, the memory and the local
 * (LMDB) implementations; the local one also across a reopen (durable) and two handles.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisDeliveredMarks, RedisRetryQueue } from '../../src/stores/redis-retry-queue.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
import { LocalDeliveredMarks, LocalRetryQueue } from '../../src/stores/local-retry-queue.js';
import { LocalFailedRequestStore } from '../../src/sinks/failed-local-store.js';
import { MemoryDeliveredMarks, MemoryRetryQueue, type DeliveredMarks, type RetryQueue } from '../../src/stores/retry-queue.js';
import { failedExport, queuedExport } from '../support/queued-export.js';

const dirs: string[] = [];
const dir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'hd-rq-'));
  dirs.push(d);
  return d;
};
let redis: RedisServer | undefined;
let n = 0;
beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await redis?.stop();
});

const entry = queuedExport;

const kinds: Array<[string, () => { queue: RetryQueue; marks: DeliveredMarks }]> = [
  ['memory', () => ({ queue: new MemoryRetryQueue(), marks: new MemoryDeliveredMarks() })],
  [
    'local',
    () => {
      const path = dir();
      // The contract of every mark (a worker whose failed requests are kept elsewhere); the
      // default, marks only where they may be read, is the next describe's.
      return { queue: new LocalRetryQueue({ path }), marks: new LocalDeliveredMarks({ path, everyPair: true }) };
    },
  ],
  [
    'redis',
    () => {
      const prefix = `t${++n}:`;
      return {
        queue: new RedisRetryQueue({ redis: new Redis(redis!.url), prefix, ownsClient: true }),
        marks: new RedisDeliveredMarks({ redis: new Redis(redis!.url), prefix, ownsClient: true }),
      };
    },
  ],
];

describe.each(kinds)('%s retry queue', (_name, make) => {
  it('keeps one export per (dataflow, profile): a newer one supersedes (naming what it replaced), an older one is dropped', async () => {
    const { queue, marks } = make();
    expect(await queue.enqueue(entry('p', 1))).toEqual({ kept: true, key: 'p-v1', replaced: undefined });
    expect(await queue.enqueue(entry('p', 3, { dueAt: 500, attempts: 0 }))).toEqual({ kept: true, key: 'p-v3', replaced: 'p-v1' });
    expect(await queue.enqueue(entry('p', 2))).toEqual({ kept: false });
    expect(await queue.enqueue(entry('q', 1, { dataflowId: 'other' }))).toEqual({ kept: true, key: 'q-v1', replaced: undefined });
    const [p] = await queue.list('flow');
    // the newer export keeps the queue's schedule (not earlier than the one it replaced)
    expect(p).toMatchObject({ idempotencyKey: 'p-v3', version: 3, attempts: 0, dueAt: 1_000, payload: { name: 'v3' } });
    expect(await queue.keys()).toHaveLength(2);
    await queue.close();
    await marks.close();
  });

  it('a superseding export inherits the audience exits of the one it replaces', async () => {
    const { queue, marks } = make();
    await queue.enqueue(entry('p', 1, { payload: { segmentMembership: { ups: { a: { status: 'exited' }, b: { status: 'realized' } } } } }));
    await queue.enqueue(entry('p', 2, { payload: { segmentMembership: { ups: { b: { status: 'realized' } } } } }));
    const [kept] = await queue.list('flow');
    expect(kept!.payload).toEqual({ segmentMembership: { ups: { b: { status: 'realized' }, a: { status: 'exited' } } } });
    // One key never stands for two bodies: the completed body gets a key of its own, the same
    // one when the same merge happens again (a redelivered v2 behind it).
    expect(kept!.idempotencyKey).not.toBe('p-v2');
    expect(kept!.idempotencyKey).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    await queue.enqueue(entry('p', 2, { payload: { segmentMembership: { ups: { b: { status: 'realized' } } } } }));
    expect((await queue.list('flow'))[0]!.idempotencyKey).toBe(kept!.idempotencyKey);
    // Nothing carried over: the newer export keeps its own key.
    await queue.enqueue(entry('q', 1, { payload: { segmentMembership: { ups: { b: { status: 'realized' } } } } }));
    await queue.enqueue(entry('q', 2, { payload: { segmentMembership: { ups: { a: { status: 'realized' } } } } }));
    expect((await queue.list('flow')).find((e) => e.profileId === 'q')!.idempotencyKey).toBe('q-v2');
    await queue.close();
    await marks.close();
  });

  it('due / nextDue by time; settle removes or reschedules only the entry it names', async () => {
    const { queue, marks } = make();
    await queue.enqueue(entry('a', 1, { dueAt: 100 }));
    await queue.enqueue(entry('b', 1, { dueAt: 300 }));
    expect(await queue.nextDue('flow')).toBe(100);
    expect((await queue.due('flow', 200, 10)).map((e) => e.profileId)).toEqual(['a']);
    const a = (await queue.due('flow', 200, 10))[0]!;
    expect(await queue.settle(a, { attempts: 2, dueAt: 900, lastStatus: 503 })).toBe(true);
    expect(await queue.nextDue('flow')).toBe(300);
    // a newer export replaced b while it was out: settling the old one leaves the new one
    const b = (await queue.due('flow', 400, 10))[0]!;
    await queue.enqueue(entry('b', 2));
    // its replacement keeps the later schedule (1,000): not due at 400, and due only once at 1,000
    expect((await queue.due('flow', 400, 10)).map((e) => e.idempotencyKey)).toEqual([]);
    expect((await queue.due('flow', 1_000, 10)).map((e) => e.idempotencyKey)).toEqual(['a-v1', 'b-v2']);
    expect(await queue.nextDue('flow')).toBe(900);
    expect(await queue.settle(b)).toBe(false);
    expect((await queue.list('flow')).map((e) => e.idempotencyKey).sort()).toEqual(['a-v1', 'b-v2']);
    expect(await queue.settle((await queue.list('flow')).find((e) => e.profileId === 'a')!)).toBe(true);
    expect((await queue.list()).map((e) => e.idempotencyKey)).toEqual(['b-v2']);
    expect(await queue.nextDue('none')).toBeUndefined();
    await queue.close();
    await marks.close();
  });

  it('marks keep the newest version delivered, never going down', async () => {
    const { queue, marks } = make();
    expect(await marks.get('flow', 'p')).toBeUndefined();
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 5 }]);
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 3 }, { dataflowId: 'flow', profileId: 'q', version: 1 }]);
    expect(await marks.get('flow', 'p')).toBe(5);
    expect(await marks.get('flow', 'q')).toBe(1);
    expect(await marks.get('other', 'p')).toBeUndefined();
    await queue.close();
    await marks.close();
  });
});

describe('local retry queue', () => {
  it('is durable: what was enqueued (and marked) is there after the store is closed and opened again', async () => {
    const path = dir();
    const q1 = new LocalRetryQueue({ path });
    const m1 = new LocalDeliveredMarks({ path });
    await q1.enqueue(entry('p', 1));
    await m1.record([{ dataflowId: 'flow', profileId: 'p', version: 9 }]);
    await q1.close();
    await m1.close();
    const q2 = new LocalRetryQueue({ path });
    const m2 = new LocalDeliveredMarks({ path });
    expect((await q2.list()).map((e) => e.idempotencyKey)).toEqual(['p-v1']);
    expect(await m2.get('flow', 'p')).toBe(9);
    await q2.close();
    await m2.close();
  });
});

describe('local delivered marks: written only for pairs with a queued export or a failed request', () => {
  it('a pair with neither gets no mark (no write per delivered export)', async () => {
    const path = dir();
    const marks = new LocalDeliveredMarks({ path });
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 5 }]);
    await marks.close();
    const again = new LocalDeliveredMarks({ path, everyPair: true });
    expect(await again.get('flow', 'p')).toBeUndefined();
    await again.close();
  });

  it('a queued pair gets its marks while queued, and none once its entry was settled', async () => {
    const path = dir();
    const queue = new LocalRetryQueue({ path });
    const marks = new LocalDeliveredMarks({ path });
    await queue.enqueue(entry('p', 1));
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 2 }]);
    expect(await queue.settle(entry('p', 1))).toBe(true);
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 3 }]);
    // A settle of an entry a newer one replaced leaves the pair marked.
    await queue.enqueue(entry('q', 1));
    await queue.enqueue(entry('q', 2));
    expect(await queue.settle(entry('q', 1))).toBe(false);
    await marks.record([{ dataflowId: 'flow', profileId: 'q', version: 2 }]);
    await queue.close();
    await marks.close();
    const again = new LocalDeliveredMarks({ path });
    expect(await again.get('flow', 'p')).toBe(2);
    expect(await again.get('flow', 'q')).toBe(2);
    await again.close();
  });

  it('a merged entry stored under a key of its own (carried exit) unmarks its pair once settled', async () => {
    const path = dir();
    const queue = new LocalRetryQueue({ path });
    const marks = new LocalDeliveredMarks({ path });
    await queue.enqueue(entry('p', 1, { payload: { segmentMembership: { ups: { a: { status: 'exited' } } } } }));
    await queue.enqueue(entry('p', 2));
    const [merged] = await queue.list('flow');
    expect(merged!.idempotencyKey).not.toBe('p-v2');
    expect(await queue.settle(merged!)).toBe(true);
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 3 }]);
    await queue.close();
    await marks.close();
    const again = new LocalDeliveredMarks({ path, everyPair: true });
    expect(await again.get('flow', 'p')).toBeUndefined();
    await again.close();
  });

  it('a failed request stored by an earlier run (another process) marks its pair: a newer delivery is recorded, so a replay finds the record superseded', async () => {
    const path = dir();
    const failed = new LocalFailedRequestStore({ path });
    await failed.put(failedExport('p', 1));
    await failed.close();
    // What the next `run` does: opens the store, delivers v2 of p and v1 of r (no record).
    const marks = new LocalDeliveredMarks({ path });
    await marks.record([
      { dataflowId: 'flow', profileId: 'p', version: 2 },
      { dataflowId: 'flow', profileId: 'r', version: 1 },
    ]);
    await marks.close();
    const replayMarks = new LocalDeliveredMarks({ path });
    expect(await replayMarks.get('flow', 'p')).toBe(2);
    expect(await replayMarks.get('flow', 'r')).toBeUndefined();
    await replayMarks.close();
  });

  it('a failed request stored by this process marks its pair at once; a mark never goes down before its commit', async () => {
    const path = dir();
    const failed = new LocalFailedRequestStore({ path });
    const marks = new LocalDeliveredMarks({ path });
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 1 }]);
    void failed.put(failedExport('p', 1));
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 3 }]);
    await marks.record([{ dataflowId: 'flow', profileId: 'p', version: 2 }]);
    await failed.close();
    await marks.close();
    const again = new LocalDeliveredMarks({ path });
    expect(await again.get('flow', 'p')).toBe(3);
    await again.close();
  });
});

describe('redis retry queue', () => {
  it('concurrent enqueues from several clients of one (dataflow, profile) leave the newest export (the read-merge-write is atomic)', async () => {
    const prefix = `c${++n}:`;
    const queues = [0, 1, 2, 3].map(() => new RedisRetryQueue({ redis: new Redis(redis!.url), prefix, ownsClient: true }));
    const versions = Array.from({ length: 40 }, (_, i) => 40 - i);
    await Promise.all(versions.map((v, i) => queues[i % queues.length]!.enqueue(entry('p', v))));
    expect((await queues[0]!.list('flow')).map((e) => e.version)).toEqual([40]);
    for (const q of queues) await q.close();
  });
});
