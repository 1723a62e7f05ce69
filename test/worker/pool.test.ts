/**
 * The pool coordinator against a real redis-server (started on a free port by this file):
 * several coordinators in one process, each with its own client. Leases of 1 s, ticks of 200 ms.
 */
import { Redis } from 'ioredis';
import { asyncScheduler, type SchedulerLike, type Subscription } from 'rxjs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  assignPartitions,
  createPoolCoordinator,
  PoolConfigError,
  poolKeys,
  readPoolStatus,
  type OwnershipEvent,
  type PoolCoordinator,
} from '../../src/worker/pool.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

const LEASE_MS = 1_000;
const TICK_MS = 200;
const PARTITIONS = 16;
const KEY_PREFIX = 'hdt:';
/** Time a "worker" takes to drain a revoked partition before releasing it. */
const DRAIN_MS = 30;

let server: RedisServer;
let admin: Redis;
let pools = 0;
/** A pool name no other test of this file uses. */
const freshPool = (): string => `pool${++pools}`;

const toClose: Array<() => Promise<void>> = [];

beforeAll(async () => {
  server = await startRedisServer();
  admin = new Redis(server.url);
});
afterEach(async () => {
  for (const close of toClose.splice(0).reverse()) await close().catch(() => {});
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

function client(url: string): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: 1,
    commandTimeout: 500,
    retryStrategy: (times) => Math.min(times * 50, 200),
  });
  redis.on('error', () => {});
  toClose.push(async () => redis.disconnect());
  return redis;
}

/** A scheduler over asyncScheduler that counts pending timers and can hold ticks back (a paused process). */
function testScheduler(): SchedulerLike & { pending(): number; pause(): void; resume(): void } {
  const pending = new Set<object>();
  let paused = false;
  let held: Array<() => void> = [];
  return {
    now: () => Date.now(),
    schedule(work: (this: unknown, state?: unknown) => void, delay?: number, state?: unknown): Subscription {
      const token = {};
      pending.add(token);
      const sub = asyncScheduler.schedule(function (this: unknown) {
        if (!pending.delete(token)) return;
        const run = (): void => work.call(this, state);
        if (paused) held.push(run);
        else run();
      }, delay);
      sub.add(() => pending.delete(token));
      return sub;
    },
    pending: () => pending.size,
    pause: () => {
      paused = true;
    },
    resume: () => {
      paused = false;
      const runs = held;
      held = [];
      for (const run of runs) run();
    },
  } as unknown as SchedulerLike & { pending(): number; pause(): void; resume(): void };
}

type LogEntry = { t: number; e: OwnershipEvent | { type: 'released'; partition: number; epoch: number } };

/** A coordinator driven like a worker would: drains and releases revoked partitions. */
interface Member {
  id: string;
  coord: PoolCoordinator;
  redis: Redis;
  scheduler: ReturnType<typeof testScheduler>;
  /** partition → epoch, as the worker sees it (from the events). */
  owned: Map<number, number>;
  log: LogEntry[];
  errors: Error[];
  completed: boolean;
}

function member(id: string, pool: string, options: { partitions?: number; url?: string } = {}): Member {
  const redis = client(options.url ?? server.url);
  const scheduler = testScheduler();
  const errors: Error[] = [];
  const coord = createPoolCoordinator({
    redis,
    keyPrefix: KEY_PREFIX,
    pool,
    workerId: id,
    partitions: options.partitions ?? PARTITIONS,
    leaseMs: LEASE_MS,
    tickMs: TICK_MS,
    scheduler,
    onError: (err) => errors.push(err),
  });
  const m: Member = { id, coord, redis, scheduler, owned: new Map(), log: [], errors, completed: false };
  coord.ownership$.subscribe({
    next: (e) => {
      m.log.push({ t: Date.now(), e });
      if (e.type === 'acquired') m.owned.set(e.partition, e.epoch);
      else if (e.type === 'lost') m.owned.delete(e.partition);
      else
        setTimeout(() => {
          if (m.owned.get(e.partition) !== e.epoch) return;
          m.owned.delete(e.partition);
          m.log.push({ t: Date.now(), e: { type: 'released', partition: e.partition, epoch: e.epoch } });
          void coord.release(e.partition).catch((err: Error) => errors.push(err));
        }, DRAIN_MS);
    },
    complete: () => {
      m.completed = true;
    },
  });
  toClose.push(() => coord.close());
  return m;
}

async function startAll(...members: Member[]): Promise<void> {
  await Promise.all(members.map((m) => m.coord.start()));
}

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Lease values of every partition, straight from Redis. */
async function leaseValues(pool: string, redis: Redis = admin): Promise<Array<string | null>> {
  const keys = poolKeys({ keyPrefix: KEY_PREFIX, pool });
  return redis.mget(Array.from({ length: PARTITIONS }, (_, p) => keys.lease(p)));
}

/**
 * Every partition owned by exactly one of `members` — the one the assignment over them names —
 * and Redis holding that owner's lease value.
 */
async function settled(pool: string, members: Member[], redis: Redis = admin): Promise<boolean> {
  const desired = assignPartitions(members.map((m) => m.id), PARTITIONS);
  for (let p = 0; p < PARTITIONS; p++) {
    const owners = members.filter((m) => m.owned.has(p));
    if (owners.length !== 1 || owners[0].id !== desired[p]) return false;
    if (owners[0].coord.held().find((h) => h.partition === p)?.revoking !== false) return false;
  }
  const values = await leaseValues(pool, redis);
  return values.every((v, p) => {
    const owner = members.find((m) => m.id === desired[p])!;
    return v === `${owner.id}:${owner.owned.get(p)}`;
  });
}

async function waitSettled(pool: string, members: Member[], timeoutMs = 5_000, redis: Redis = admin): Promise<void> {
  await waitFor(() => settled(pool, members, redis), timeoutMs, `${members.map((m) => m.id).join(', ')} to settle`);
}

/** partition → owner id, from the members' own views. */
function ownerMap(members: Member[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of members) for (const p of m.owned.keys()) out.set(p, m.id);
  return out;
}

/**
 * Samples, every few ms, the members' views (never two owners of one partition) and the lease
 * keys (the epoch of a partition never goes down; a value only changes through a new epoch).
 */
function sampler(pool: string, members: () => Member[]): { stop(): Promise<{ overlaps: string[]; regressions: string[]; samples: number }> } {
  const overlaps: string[] = [];
  const regressions: string[] = [];
  const last = new Map<number, { value: string; epoch: number }>();
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const ms = members();
      for (let p = 0; p < PARTITIONS; p++) {
        const owners = ms.filter((m) => m.owned.has(p)).map((m) => m.id);
        if (owners.length > 1) overlaps.push(`partition ${p}: ${owners.join(' & ')}`);
      }
      const values = await leaseValues(pool);
      values.forEach((v, p) => {
        if (v === null) return;
        const epoch = Number(v.slice(v.lastIndexOf(':') + 1));
        const prev = last.get(p);
        if (prev && (epoch < prev.epoch || (epoch === prev.epoch && v !== prev.value))) regressions.push(`partition ${p}: ${prev.value} then ${v}`);
        last.set(p, { value: v, epoch });
      });
      samples++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { overlaps, regressions, samples };
    },
  };
}

const events = (m: Member, type: string, partition?: number): LogEntry[] =>
  m.log.filter((l) => l.e.type === type && (partition === undefined || l.e.partition === partition));

describe('assignPartitions (bounded-load rendezvous hashing)', () => {
  it('balances to ⌊P/N⌋ or ⌈P/N⌉ and moves little more than one share on a join or a leave', () => {
    const ids = Array.from({ length: 40 }, (_, i) => `worker-${i}`);
    for (let n = 1; n <= 12; n++) {
      for (const partitions of [1, 7, 16, 64]) {
        const workers = ids.slice(0, n);
        const owner = assignPartitions(workers, partitions);
        const counts = workers.map((id) => owner.filter((o) => o === id).length);
        expect(owner.every((o) => o !== undefined && workers.includes(o))).toBe(true);
        expect(Math.min(...counts)).toBe(Math.floor(partitions / n));
        expect(Math.max(...counts)).toBe(Math.ceil(partitions / n));
        // The same live set in another order gives the same assignment.
        expect(assignPartitions([...workers].reverse(), partitions)).toEqual(owner);
        if (partitions === 64 && n < 12) {
          const joined = assignPartitions([...workers, ids[n]], partitions);
          const moved = owner.filter((o, p) => o !== joined[p]).length;
          expect(moved).toBeGreaterThanOrEqual(Math.floor(partitions / (n + 1)));
          expect(moved).toBeLessThanOrEqual(2 * Math.ceil(partitions / (n + 1)));
        }
      }
    }
    expect(assignPartitions([], 4)).toEqual([undefined, undefined, undefined, undefined]);
  });
});

describe('createPoolCoordinator on a real redis-server', () => {
  it('three workers share 16 partitions; a fourth joins and only its share moves, never with two owners', async () => {
    const pool = freshPool();
    const [a, b, c] = ['w-a', 'w-b', 'w-c'].map((id) => member(id, pool));
    await startAll(a, b, c);
    await waitSettled(pool, [a, b, c]);
    for (const m of [a, b, c]) {
      expect(m.owned.size).toBeGreaterThanOrEqual(3);
      expect(m.owned.size).toBeLessThanOrEqual(8);
    }
    expect([a, b, c].reduce((n, m) => n + m.owned.size, 0)).toBe(PARTITIONS);
    for (const m of [a, b, c]) expect(events(m, 'lost')).toEqual([]);

    const before = ownerMap([a, b, c]);
    const epochsBefore = new Map([...before].map(([p, id]) => [p, [a, b, c].find((m) => m.id === id)!.owned.get(p)!]));
    const d = member('w-d', pool);
    const all = [a, b, c, d];
    const sample = sampler(pool, () => all);
    await d.coord.start();
    await waitSettled(pool, all);
    const { overlaps, regressions, samples } = await sample.stop();
    expect(samples).toBeGreaterThan(20);
    expect(overlaps).toEqual([]);
    expect(regressions).toEqual([]);

    const after = ownerMap(all);
    const moved = [...before.keys()].filter((p) => before.get(p) !== after.get(p));
    expect(d.owned.size).toBe(4);
    expect(moved.length).toBeGreaterThanOrEqual(4);
    expect(moved.length).toBeLessThanOrEqual(8);
    for (const p of moved) {
      const from = all.find((m) => m.id === before.get(p))!;
      const to = all.find((m) => m.id === after.get(p))!;
      const [revoke] = events(from, 'revoke', p);
      const [released] = events(from, 'released', p);
      const acquired = events(to, 'acquired', p).at(-1)!;
      expect(revoke.e.epoch).toBe(epochsBefore.get(p));
      expect(released.t).toBeGreaterThanOrEqual(revoke.t);
      expect(acquired.t).toBeGreaterThanOrEqual(released.t);
      expect(acquired.e.epoch).toBeGreaterThan(epochsBefore.get(p)!);
    }
    // Partitions that did not move were not touched.
    for (const p of [...before.keys()].filter((q) => !moved.includes(q))) {
      const owner = all.find((m) => m.id === before.get(p))!;
      expect(events(owner, 'revoke', p)).toEqual([]);
      expect(owner.owned.get(p)).toBe(epochsBefore.get(p));
    }
    for (const m of all) {
      expect(events(m, 'lost')).toEqual([]);
      expect(m.errors).toEqual([]);
    }
  });

  it('a worker that closes hands its partitions over within one tick, leaves the pool and no timer behind', async () => {
    const pool = freshPool();
    const [a, b, c] = ['w-a', 'w-b', 'w-c'].map((id) => member(id, pool));
    await startAll(a, b, c);
    await waitSettled(pool, [a, b, c]);
    const hers = [...b.owned.entries()];
    expect(hers.length).toBeGreaterThan(0);

    const sample = sampler(pool, () => [a, b, c]);
    await b.coord.close();
    const closedAt = Date.now();
    expect(b.scheduler.pending()).toBe(0);
    expect(b.completed).toBe(true);
    expect(b.owned.size).toBe(0);
    expect(events(b, 'lost').map((l) => [l.e.partition, l.e.epoch]).sort((x, y) => x[0] - y[0])).toEqual(hers.sort((x, y) => x[0] - y[0]));
    expect(await admin.zscore(poolKeys({ keyPrefix: KEY_PREFIX, pool }).workers, 'w-b')).toBeNull();

    await waitFor(() => hers.every(([p]) => a.owned.has(p) || c.owned.has(p)), TICK_MS + 300, "b's partitions to be taken over");
    const tookMs = Date.now() - closedAt;
    expect(tookMs).toBeLessThanOrEqual(TICK_MS + 150);
    await waitSettled(pool, [a, c]);
    const { overlaps, regressions } = await sample.stop();
    expect(overlaps).toEqual([]);
    expect(regressions).toEqual([]);
    // Closing twice is harmless, and the closed one's timers stay stopped.
    await b.coord.close();
    await new Promise((r) => setTimeout(r, 2 * TICK_MS));
    expect(b.scheduler.pending()).toBe(0);
    expect(b.log.filter((l) => l.e.type === 'acquired').length).toBe(hers.length);
  });

  it('a crashed worker\'s partitions are taken within leaseMs + tickMs, never before its leases expire', async () => {
    const pool = freshPool();
    const [a, b, c] = ['w-a', 'w-b', 'w-c'].map((id) => member(id, pool));
    await startAll(a, b, c);
    await waitSettled(pool, [a, b, c]);
    const keys = poolKeys({ keyPrefix: KEY_PREFIX, pool });
    const hers = [...b.owned.entries()];

    // The crash: b's client is gone; nothing is released, nothing renewed.
    b.redis.disconnect();
    const crashedAt = Date.now();
    const ttls = await Promise.all(hers.map(([p]) => admin.pttl(keys.lease(p))));
    const readAt = Date.now();
    const expiresAt = new Map(hers.map(([p], i) => [p, readAt + ttls[i]]));
    for (const ttl of ttls) expect(ttl).toBeGreaterThan(0);

    const takenAt = new Map<number, number>();
    const early: string[] = [];
    await waitFor(
      async () => {
        const values = await leaseValues(pool);
        const now = Date.now();
        for (const [p, epoch] of hers) {
          const v = values[p];
          if (v === null || v === `w-b:${epoch}` || takenAt.has(p)) continue;
          takenAt.set(p, now);
          if (now < expiresAt.get(p)! - 20) early.push(`partition ${p} taken ${expiresAt.get(p)! - now} ms before b's lease expired`);
        }
        return takenAt.size === hers.length;
      },
      LEASE_MS + TICK_MS + 1_000,
      "b's partitions to be taken over",
    );
    expect(early).toEqual([]);
    for (const t of takenAt.values()) expect(t - crashedAt).toBeLessThanOrEqual(LEASE_MS + TICK_MS + 150);
    await waitSettled(pool, [a, c]);
    // b, cut off, gave every partition up on its own (its lease ran out locally).
    expect(events(b, 'lost').map((l) => l.e.partition).sort((x, y) => x - y)).toEqual(hers.map(([p]) => p).sort((x, y) => x - y));
    expect(b.errors.length).toBeGreaterThan(0);
    // Closing a coordinator whose client is gone reports, does not throw.
    await b.coord.close();
    expect(b.completed).toBe(true);
  });

  it('a paused worker gets "lost" for every partition on resuming, and its fence value no longer matches', async () => {
    const pool = freshPool();
    const [a, b, c] = ['w-a', 'w-b', 'w-c'].map((id) => member(id, pool));
    await startAll(a, b, c);
    await waitSettled(pool, [a, b, c]);
    const hers = [...c.owned.entries()];
    for (const [p, epoch] of hers) {
      const { key, value } = c.coord.fenceArgs(p, epoch);
      expect(key).toBe(c.coord.leaseKey(p));
      expect(c.coord.currentEpoch(p)).toBe(epoch);
      expect(await admin.get(key)).toBe(value);
    }

    c.scheduler.pause();
    await waitFor(() => hers.every(([p]) => a.owned.has(p) || b.owned.has(p)), 2 * LEASE_MS + TICK_MS + 1_000, "c's partitions to move while it is paused");
    // Still paused: c has been told nothing, but its writes would be refused already.
    expect(events(c, 'lost')).toEqual([]);
    for (const [p, epoch] of hers) {
      const { key, value } = c.coord.fenceArgs(p, epoch);
      expect(await admin.get(key)).not.toBe(value);
    }

    c.scheduler.resume();
    await waitFor(() => events(c, 'lost').length === hers.length, TICK_MS * 3, 'c to see its leases lost');
    expect(events(c, 'lost').map((l) => [l.e.partition, l.e.epoch]).sort((x, y) => x[0] - y[0])).toEqual(hers.sort((x, y) => x[0] - y[0]));
    for (const [p] of hers) expect(c.coord.currentEpoch(p)).toBeUndefined();
    // c rejoins and gets its share back, under new epochs.
    await waitSettled(pool, [a, b, c]);
    for (const [p, epoch] of hers) if (c.owned.has(p)) expect(c.owned.get(p)).toBeGreaterThan(epoch);
  });

  it('a lease taken from under a worker is "lost" at its next renewal; release never deletes another\'s lease', async () => {
    const pool = freshPool();
    const [a, b] = ['w-a', 'w-b'].map((id) => member(id, pool));
    await startAll(a, b);
    await waitSettled(pool, [a, b]);
    const [[p1, e1], [p2]] = [...a.owned.entries()];
    const keys = poolKeys({ keyPrefix: KEY_PREFIX, pool });

    // Someone else's lease on p1: a's next renewal fails → 'lost' with the epoch it held.
    await admin.set(keys.lease(p1), 'intruder:999', 'PX', 5_000);
    await waitFor(() => events(a, 'lost', p1).length === 1, 3 * TICK_MS, 'a to lose p1');
    expect(events(a, 'lost', p1)[0].e.epoch).toBe(e1);
    expect(a.coord.currentEpoch(p1)).toBeUndefined();
    expect(await admin.get(keys.lease(p1))).toBe('intruder:999');

    // p2 taken, then released by a before it noticed: the intruder's lease stays.
    await admin.set(keys.lease(p2), 'intruder:1000', 'PX', 5_000);
    await a.coord.release(p2);
    expect(await admin.get(keys.lease(p2))).toBe('intruder:1000');
    // Releasing what is not held is a no-op.
    await a.coord.release(p2);
    await b.coord.release(p2);
    expect(await admin.get(keys.lease(p2))).toBe('intruder:1000');

    // Once the intruder is gone, a takes both back under new epochs.
    await admin.del(keys.lease(p1), keys.lease(p2));
    await waitSettled(pool, [a, b]);
    expect(a.owned.get(p1)).toBeGreaterThan(e1);
  });

  it('refuses to start with another partition count than the pool\'s (ERR_POOL_PARTITIONS)', async () => {
    const pool = freshPool();
    const a = member('w-a', pool);
    await a.coord.start();
    const wrong = member('w-wrong', pool, { partitions: 8 });
    const err = await wrong.coord.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PoolConfigError);
    expect((err as PoolConfigError).code).toBe('ERR_POOL_PARTITIONS');
    expect((err as PoolConfigError).recorded).toBe(16);
    expect((err as PoolConfigError).configured).toBe(8);
    expect((err as Error).message).toMatch(/16 partitions/);
    expect((err as Error).message).toMatch(/configured with 8/);
    expect((err as Error).message).toMatch(/stop every worker/);
    expect((err as Error).message).toMatch(/pool reset-partitions/);
    const keys = poolKeys({ keyPrefix: KEY_PREFIX, pool });
    expect(await admin.zscore(keys.workers, 'w-wrong')).toBeNull();
    expect(await admin.get(keys.partitions)).toBe('16');
    await waitFor(() => a.owned.size === PARTITIONS, 2_000, 'a to own every partition');
    expect(wrong.log).toEqual([]);
  });

  it('readPoolStatus shows workers, owners, epochs and lease ttls, without being a member', async () => {
    const pool = freshPool();
    const empty = await readPoolStatus({ redis: admin, keyPrefix: KEY_PREFIX, pool });
    expect(empty).toMatchObject({ pool, workers: [], partitions: [] });
    expect(empty.recordedPartitions).toBeUndefined();

    const [a, b] = ['w-a', 'w-b'].map((id) => member(id, pool));
    await startAll(a, b);
    await waitSettled(pool, [a, b]);
    const status = await readPoolStatus({ redis: admin, keyPrefix: KEY_PREFIX, pool });
    expect(status.recordedPartitions).toBe(PARTITIONS);
    expect(status.nowMs).toBeGreaterThan(Date.now() - 60_000);
    expect(status.workers.map((w) => w.id)).toEqual(['w-a', 'w-b']);
    for (const w of status.workers) {
      const m = [a, b].find((x) => x.id === w.id)!;
      expect(w.live).toBe(true);
      expect(w.lastSeenMs).toBeGreaterThanOrEqual(0);
      expect(w.lastSeenMs).toBeLessThan(TICK_MS + 200);
      expect(w.partitions).toEqual([...m.owned.keys()].sort((x, y) => x - y));
    }
    expect(status.partitions).toHaveLength(PARTITIONS);
    for (const s of status.partitions) {
      const m = [a, b].find((x) => x.owned.has(s.partition))!;
      expect(s.owner).toBe(m.id);
      expect(s.epoch).toBe(m.owned.get(s.partition));
      expect(s.desiredOwner).toBe(m.id);
      expect(s.ttlMs).toBeGreaterThan(0);
      expect(s.ttlMs).toBeLessThanOrEqual(LEASE_MS);
    }
    // The member's own status() reads the same thing.
    expect((await a.coord.status()).workers.map((w) => w.id)).toEqual(['w-a', 'w-b']);

    await b.coord.close();
    const later = await readPoolStatus({ redis: admin, keyPrefix: KEY_PREFIX, pool });
    expect(later.workers.map((w) => w.id)).toEqual(['w-a']);
    expect(later.partitions.every((s) => s.desiredOwner === 'w-a' && (s.owner === undefined || s.owner === 'w-a'))).toBe(true);
  });

  it('recovers from a Redis restart without crashing: every partition owned by exactly one worker again', async () => {
    const own = await startRedisServer();
    toClose.push(() => own.stop());
    const pool = freshPool();
    const ownAdmin = client(own.url);
    const [a, b, c] = ['w-a', 'w-b', 'w-c'].map((id) => member(id, pool, { url: own.url }));
    await startAll(a, b, c);
    await waitSettled(pool, [a, b, c], 5_000, ownAdmin);
    for (const m of [a, b, c]) expect(events(m, 'lost')).toEqual([]);

    await own.restart({ downMs: 1_500 });
    // Down for longer than a lease: every worker gave its leases up and saw errors, but runs on.
    for (const m of [a, b, c]) {
      expect(m.errors.length).toBeGreaterThan(0);
      expect(m.completed).toBe(false);
    }
    expect([a, b, c].reduce((n, m) => n + events(m, 'lost').length, 0)).toBe(PARTITIONS);
    await waitSettled(pool, [a, b, c], 6_000, ownAdmin);
    // The epoch counters survived the restart (append-only file): the new leases have later
    // epochs than the first ones (all 1).
    for (const m of [a, b, c]) for (const epoch of m.owned.values()) expect(epoch).toBeGreaterThan(1);
  });
});
