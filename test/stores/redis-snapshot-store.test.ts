/**
 * RedisSnapshotStore against a real redis-server (started on a free port by this file): the
 * SnapshotStore contract, two workers on the same profiles, a Redis restart mid-run, and a
 * rough throughput figure.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProfileSnapshot, ProfileUpdate } from '../../src/domain/types.js';
import { FencedError, StoreError } from '../../src/errors.js';
import { REDIS_SNAPSHOT_STORE_DEFAULTS, RedisSnapshotStore, SnapshotConflictError } from '../../src/stores/redis-snapshot-store.js';
import { freePort, startRedisServer, type RedisServer } from '../support/redis-server.js';
import { describeSnapshotStoreContract } from './snapshot-store-contract.js';

let server: RedisServer;
let prefixes = 0;
/** A key prefix no other test of this file uses. */
const freshPrefix = (): string => `hdt${++prefixes}:`;

beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  await server?.stop();
});

describeSnapshotStoreContract('RedisSnapshotStore', async () => {
  const keyPrefix = freshPrefix();
  const store = new RedisSnapshotStore({ url: server.url, keyPrefix });
  let admin: Redis | undefined;
  return {
    store,
    cleanup: async () => {
      admin?.disconnect();
      await store.close();
    },
    loseFrozenMembers: async (id) => {
      admin ??= new Redis(server.url);
      expect(await admin.del(`${keyPrefix}backfill:${id}:members`)).toBe(1);
    },
  };
});

/** Calls of the store's scripts through a `countingClient`. */
interface ScriptCounts {
  read: number;
  cas: number;
  /** Compare-and-sets answered with the record instead of writing (lost, or a redelivery). */
  casAnswered: number;
  confirm: number;
}

/**
 * A client for a store (`redis` option) that counts the store's script calls, and can run
 * `beforeCas` before each compare-and-set. The script methods exist only at run time, through
 * defineCommand, hence the casts. Disconnect `client` at the end: the store leaves it open.
 */
function countingClient(beforeCas?: (client: Redis) => Promise<unknown>): { client: Redis; proxy: Redis; counts: ScriptCounts } {
  const client = new Redis(server.url, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
  const counts: ScriptCounts = { read: 0, cas: 0, casAnswered: 0, confirm: 0 };
  const scripts = client as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const proxy = new Proxy(client, {
    get(target, prop) {
      if (prop === 'hdSnapshotRead' || prop === 'hdSnapshotConfirm') {
        return (...args: unknown[]) => {
          counts[prop === 'hdSnapshotRead' ? 'read' : 'confirm'] += 1;
          return scripts[prop].apply(target, args);
        };
      }
      if (prop === 'hdSnapshotCas') {
        return async (...args: unknown[]) => {
          if (beforeCas) await beforeCas(target);
          counts.cas += 1;
          const reply = await scripts.hdSnapshotCas.apply(target, args);
          if (Array.isArray(reply)) counts.casAnswered += 1;
          return reply;
        };
      }
      const value: unknown = Reflect.get(target, prop);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { client, proxy, counts };
}

describe('RedisSnapshotStore on a real redis-server', () => {
  it.each([
    { cache: 'without', cacheSize: 0 },
    { cache: 'with', cacheSize: undefined },
  ])('two workers applying interleaved updates to the same profiles lose no update ($cache cache)', async ({ cacheSize }) => {
    const keyPrefix = freshPrefix();
    const a = countingClient();
    const b = countingClient();
    const workerA = new RedisSnapshotStore({ redis: a.proxy, keyPrefix, cacheSize });
    const workerB = new RedisSnapshotStore({ redis: b.proxy, keyPrefix, cacheSize });
    const admin = new Redis(server.url);
    try {
      const profiles = Array.from({ length: 8 }, (_, i) => `p-${i}`);
      const perWorker = 60;
      const run = (store: RedisSnapshotStore, worker: string): Promise<unknown> =>
        Promise.all(
          profiles.flatMap((profileId) =>
            Array.from({ length: perWorker }, (_, i) =>
              store.apply(
                {
                  profileId,
                  attributes: { [worker]: { [`w${i}`]: i }, last: `${worker}${i}` },
                  identityMap: { [worker]: [{ id: `${worker}-${i}` }] },
                  segmentMembership: { ups: { [`aud-${worker}-${i % 3}`]: { status: i % 2 ? 'exited' : 'realized' } } },
                },
                { key: `${worker}:${profileId}:${i}`, seq: i },
              ),
            ),
          ),
        );
      await Promise.all([run(workerA, 'a'), run(workerB, 'b')]);
      const applies = 2 * profiles.length * perWorker;
      const lost = a.counts.casAnswered + b.counts.casAnswered;
      const reads = a.counts.read + b.counts.read;

      for (const profileId of profiles) {
        const snap = (await workerA.get(profileId)) as ProfileSnapshot;
        for (const w of ['a', 'b']) {
          const written = snap.attributes[w] as Record<string, number>;
          expect(Object.keys(written)).toHaveLength(perWorker);
          for (let i = 0; i < perWorker; i++) expect(written[`w${i}`]).toBe(i);
          expect(snap.identityMap[w].map((x) => x.id).sort()).toEqual(
            Array.from({ length: perWorker }, (_, i) => `${w}-${i}`).sort(),
          );
        }
        // Every application bumped the version exactly once…
        expect(await admin.hget(`${keyPrefix}p:${profileId}`, 'v')).toBe(String(applies / profiles.length));
        // …and the unconfirmed replay records stay bounded (the oldest are dropped).
        expect(await admin.hlen(`${keyPrefix}p:${profileId}`)).toBe(2 + 64);
      }
      // Last of each worker: i = perWorker - 1 is odd → exited; the index agrees with snapshots.
      for (const w of ['a', 'b']) {
        for (let r = 0; r < 3; r++) {
          const audienceId = `aud-${w}-${r}`;
          const expected: string[] = [];
          for (const profileId of profiles) {
            const snap = (await workerB.get(profileId)) as ProfileSnapshot;
            const status = snap.memberships[audienceId]?.status;
            if (status === 'realized' || status === 'existing') expected.push(profileId);
          }
          const got: string[] = [];
          for await (const batch of workerB.members(audienceId, 3)) got.push(...batch);
          expect(got.sort()).toEqual(expected.sort());
        }
      }
      // The two workers did race: some compare-and-set lost (a stale cached guess, or another
      // writer between read and write) and was retried from the record it answered with.
      console.log(`two workers: ${applies} applies, ${reads} reads, ${lost} lost compare-and-sets`);
      expect(lost).toBeGreaterThan(0);
      // Without the cache every apply reads first; with it only a profile's first apply does.
      expect(reads).toBe(cacheSize === 0 ? applies : 2 * profiles.length);
    } finally {
      await Promise.all([workerA.close(), workerB.close()]);
      a.client.disconnect();
      b.client.disconnect();
      admin.disconnect();
    }
  });

  it('gives up with a typed StoreError when the profile keeps changing under it', async () => {
    const keyPrefix = freshPrefix();
    // Another writer bumps the version right before every compare-and-set of the store.
    const { client, proxy, counts } = countingClient((c) => c.hincrby(`${keyPrefix}p:p-hot`, 'v', 1));
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix, maxConflictRetries: 2 });
    try {
      const err = await store.apply({ profileId: 'p-hot', attributes: { a: 1 } }, { key: 'k', seq: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotConflictError);
      expect(err).toBeInstanceOf(StoreError);
      expect((err as SnapshotConflictError).code).toBe('ERR_STORE');
      expect((err as SnapshotConflictError).attempts).toBe(3);
      // One read, then each lost compare-and-set answered with the record: no read between.
      expect(counts).toMatchObject({ read: 1, cas: 3, casAnswered: 3 });
      expect(await client.hget(`${keyPrefix}p:p-hot`, 's')).toBeNull();
    } finally {
      await store.close();
      client.disconnect(); // injected: the store leaves it open
    }
  });

  it('survives a Redis restart: StoreError while down, works again after, nothing lost', async () => {
    const keyPrefix = freshPrefix();
    const store = new RedisSnapshotStore({ url: server.url, keyPrefix, commandTimeoutMs: 2_000 });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      await store.apply({ profileId: 'p-old', attributes: { kept: true } }, { key: 'old', seq: 0 });

      // Five "partitions", each applying its updates in order; a failed apply is retried with
      // the same key, as a nak'd message is redelivered.
      const profiles = ['p-r0', 'p-r1', 'p-r2', 'p-r3', 'p-r4'];
      const errors: Array<{ err: unknown; ms: number }> = [];
      let phase: 'before' | 'down' | 'after' = 'before';
      let okAfter = 0;
      let replayed = 0;
      let next = 0;
      const worker = async (profileId: string): Promise<number> => {
        let i = 0;
        while (phase !== 'after' || okAfter < 200) {
          const update: ProfileUpdate = { profileId, attributes: { [`u${i}`]: i } };
          const started = Date.now();
          try {
            const r = await store.apply(update, { key: `${profileId}:${i}`, seq: next++ });
            if (r.replayed) replayed += 1;
            if (phase === 'after') okAfter += 1;
            i += 1;
          } catch (err) {
            errors.push({ err, ms: Date.now() - started });
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }
        return i;
      };
      const running = Promise.all(profiles.map(worker));
      await new Promise((resolve) => setTimeout(resolve, 200));
      phase = 'down';
      await server.restart({ downMs: 1_500 });
      phase = 'after';
      const counts = await running;

      expect(errors.length).toBeGreaterThan(0);
      for (const { err, ms } of errors) {
        expect(err).toBeInstanceOf(StoreError);
        expect((err as StoreError).code).toBe('ERR_STORE');
        expect(ms).toBeLessThan(4_000);
      }
      expect(okAfter).toBeGreaterThanOrEqual(200);
      for (const [n, profileId] of profiles.entries()) {
        const snap = (await store.get(profileId)) as ProfileSnapshot;
        expect(Object.keys(snap.attributes)).toHaveLength(counts[n]);
        for (let i = 0; i < counts[n]; i++) expect(snap.attributes[`u${i}`]).toBe(i);
      }
      expect((await store.get('p-old'))?.attributes).toEqual({ kept: true });
      expect(unhandled).toEqual([]);
      console.log(
        `redis restart: ${errors.length} StoreErrors while down (slowest ${Math.max(...errors.map((e) => e.ms))} ms), ` +
          `${replayed} replayed applies, ${okAfter} applies after`,
      );
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await store.close();
    }
  });

  it('throughput: applies per second with 200 concurrent profiles', async () => {
    const keyPrefix = freshPrefix();
    const store = new RedisSnapshotStore({ url: server.url, keyPrefix });
    try {
      const profiles = Array.from({ length: 200 }, (_, i) => `p-t${i}`);
      const perProfile = 30;
      const started = performance.now();
      await Promise.all(
        profiles.map(async (profileId) => {
          for (let i = 0; i < perProfile; i++) {
            const key = `${profileId}:${i}`;
            await store.apply(
              {
                profileId,
                attributes: { person: { name: { firstName: `F${i}`, lastName: 'Doe' } }, personalEmail: { address: `${i}@x.com` } },
                identityMap: { ecid: [{ id: `e-${profileId}` }] },
                segmentMembership: { ups: { 'aud-t': { status: i % 5 === 4 ? 'exited' : 'realized' } } },
              },
              { key, seq: i },
            );
            await store.confirm(profileId, key);
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      const applies = profiles.length * perProfile;
      console.log(
        `RedisSnapshotStore: ${applies} applies (+ confirms) over 200 concurrent profiles in ${seconds.toFixed(2)} s = ` +
          `${Math.round(applies / seconds)} applies/s`,
      );
      const snap = (await store.get('p-t7')) as ProfileSnapshot;
      expect(snap.attributes).toEqual({
        person: { name: { firstName: `F${perProfile - 1}`, lastName: 'Doe' } },
        personalEmail: { address: `${perProfile - 1}@x.com` },
      });
      // perProfile - 1 = 29 → 29 % 5 = 4 → exited: nobody is left in the audience.
      const members: string[] = [];
      for await (const batch of store.members('aud-t')) members.push(...batch);
      expect(members).toEqual([]);
    } finally {
      await store.close();
    }
  });
});

describe('RedisSnapshotStore: the snapshots it last wrote save the read', () => {
  const name = (profileId: string, firstName: string): ProfileUpdate => ({ profileId, attributes: { person: { name: { firstName } } } });

  it('a profile this store applied last costs one compare-and-set per apply, no read', async () => {
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix: freshPrefix() });
    try {
      let previous = null as ProfileSnapshot | null;
      for (let i = 0; i < 10; i++) {
        const r = await store.apply(name('p-c', `N${i}`), { key: `k${i}`, seq: i });
        expect(r.replayed).toBe(false);
        expect(r.before).toEqual(previous);
        previous = r.after;
        await store.confirm('p-c', `k${i}`);
      }
      expect(counts).toMatchObject({ read: 1, cas: 10, casAnswered: 0, confirm: 10 });
      expect(await store.get('p-c')).toEqual(previous);
    } finally {
      await store.close();
      client.disconnect();
    }
  });

  it('another writer in between: the guess loses, the compare-and-set answers with the record, nothing is lost', async () => {
    const keyPrefix = freshPrefix();
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix });
    const other = new RedisSnapshotStore({ url: server.url, keyPrefix });
    try {
      await store.apply({ profileId: 'p-o', attributes: { a: 1 } }, { key: 'k1', seq: 1 });
      const theirs = await other.apply({ profileId: 'p-o', attributes: { b: 2 }, segmentMembership: { ups: { 'aud-o': { status: 'realized' } } } }, { key: 'k2', seq: 2 });
      const mine = await store.apply({ profileId: 'p-o', attributes: { c: 3 } }, { key: 'k3', seq: 3 });
      expect(mine.before).toEqual(theirs.after);
      expect(mine.after.attributes).toEqual({ a: 1, b: 2, c: 3 });
      expect(mine.after.memberships).toEqual({ 'aud-o': { status: 'realized' } });
      expect(counts).toMatchObject({ read: 1, cas: 3, casAnswered: 1 });
      expect(await other.get('p-o')).toEqual(mine.after);
      expect(await client.hget(`${keyPrefix}p:p-o`, 'v')).toBe('3');
    } finally {
      await Promise.all([store.close(), other.close()]);
      client.disconnect();
    }
  });

  it('redeliveries on a cached profile: the compare-and-set answers with the replay record or the watermark', async () => {
    const keyPrefix = freshPrefix();
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix });
    try {
      const first = await store.apply(name('p-r', 'A'), { key: 'm:1', seq: 1, watermark: 1 });
      await store.apply(name('p-r', 'B'), { key: 'm:2', seq: 2, watermark: 2 });
      const replay = await store.apply(name('p-r', 'A'), { key: 'm:1', seq: 1, watermark: 1 });
      expect(replay).toMatchObject({ replayed: true, before: null, after: first.after });
      expect(replay.latest?.attributes).toEqual({ person: { name: { firstName: 'B' } } });
      await store.confirm('p-r', 'm:2');
      const stale = await store.apply(name('p-r', 'C'), { key: 'm:2', seq: 2, watermark: 2 });
      expect(stale.stale).toBe(true);
      expect(stale.after.attributes).toEqual({ person: { name: { firstName: 'B' } } });
      // Neither redelivery wrote: the snapshot is B's, version 2.
      expect(await client.hget(`${keyPrefix}p:p-r`, 'v')).toBe('2');
      expect(counts).toMatchObject({ read: 1, cas: 4, casAnswered: 2 });
    } finally {
      await store.close();
      client.disconnect();
    }
  });

  it('a fenced write on a cached profile is refused, and the guess is dropped', async () => {
    const keyPrefix = freshPrefix();
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix });
    const fence = { key: `${keyPrefix}lease`, value: 'me' };
    try {
      await client.set(fence.key, 'me');
      const mine = await store.apply(name('p-f', 'Mine'), { key: 'k1', seq: 1, fence });
      await client.set(fence.key, 'someone-else');
      const err = await store.apply(name('p-f', 'Late'), { key: 'k2', seq: 2, fence }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FencedError);
      expect((err as FencedError).code).toBe('ERR_FENCED');
      expect(await store.get('p-f')).toEqual(mine.after);
      await client.set(fence.key, 'me');
      await store.apply(name('p-f', 'Again'), { key: 'k2', seq: 2, fence });
      expect(counts).toMatchObject({ read: 2, cas: 3 });
    } finally {
      await store.close();
      client.disconnect();
    }
  });

  it('keeps at most cacheSize profiles, the least recently applied dropped first; cacheSize 0 always reads', async () => {
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix: freshPrefix(), cacheSize: 2 });
    const none = countingClient();
    const uncached = new RedisSnapshotStore({ redis: none.proxy, keyPrefix: freshPrefix(), cacheSize: 0 });
    try {
      let seq = 0;
      const apply = (s: RedisSnapshotStore, profileId: string) => s.apply(name(profileId, 'X'), { key: `k${++seq}`, seq });
      for (const id of ['p1', 'p2', 'p3']) await apply(store, id);
      expect(counts.read).toBe(3);
      await apply(store, 'p3');
      await apply(store, 'p2');
      expect(counts.read).toBe(3);
      await apply(store, 'p1'); // dropped when p3 came in
      expect(counts.read).toBe(4);
      await apply(store, 'p2'); // p3 is the least recent now, not p2
      expect(counts.read).toBe(4);
      for (let i = 0; i < 3; i++) await apply(uncached, 'p1');
      expect(none.counts).toMatchObject({ read: 3, cas: 3 });
    } finally {
      await Promise.all([store.close(), uncached.close()]);
      client.disconnect();
      none.client.disconnect();
    }
  });

  it('a lost connection forgets every guess (the server may have lost data)', async () => {
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix: freshPrefix() });
    try {
      await store.apply(name('p-l', 'A'), { key: 'k1', seq: 1 });
      await store.apply(name('p-l', 'B'), { key: 'k2', seq: 2 });
      expect(counts.read).toBe(1);
      const ready = new Promise((resolve) => client.once('ready', resolve));
      client.disconnect(true);
      await ready;
      const r = await store.apply(name('p-l', 'C'), { key: 'k3', seq: 3 });
      expect(r.before?.attributes).toEqual({ person: { name: { firstName: 'B' } } });
      expect(counts.read).toBe(2);
    } finally {
      await store.close();
      client.disconnect();
    }
  });
});

describe('RedisSnapshotStore: confirms of one tick share one round trip', () => {
  it('confirms of many profiles at once: one script, every replay record gone when they resolve', async () => {
    const keyPrefix = freshPrefix();
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix });
    try {
      const ids = Array.from({ length: 50 }, (_, i) => `p-b${i}`);
      await Promise.all(ids.flatMap((profileId) => [1, 2].map((n) => store.apply({ profileId, attributes: { n } }, { key: `k${n}`, seq: n }))));
      for (const profileId of ids) expect(await client.hlen(`${keyPrefix}p:${profileId}`)).toBe(4);
      await Promise.all(ids.flatMap((profileId) => [store.confirm(profileId, 'k1'), store.confirm(profileId, 'k2')]));
      expect(counts.confirm).toBe(1);
      for (const profileId of ids) expect((await client.hkeys(`${keyPrefix}p:${profileId}`)).sort()).toEqual(['s', 'v']);
    } finally {
      await store.close();
      client.disconnect();
    }
  });

  it('more confirms than one script takes go in several, all resolved', async () => {
    const keyPrefix = freshPrefix();
    const { client, proxy, counts } = countingClient();
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix });
    try {
      const n = REDIS_SNAPSHOT_STORE_DEFAULTS.confirmBatch * 2 + 1;
      const profile = (i: number): string => `p-many${i % 40}`;
      await Promise.all(Array.from({ length: n }, (_, i) => store.apply({ profileId: profile(i), attributes: { [`a${i}`]: i } }, { key: `k${i}`, seq: i })));
      await Promise.all(Array.from({ length: n }, (_, i) => store.confirm(profile(i), `k${i}`)));
      expect(counts.confirm).toBe(3);
      for (let i = 0; i < 40; i++) expect((await client.hkeys(`${keyPrefix}p:${profile(i)}`)).sort()).toEqual(['s', 'v']);
    } finally {
      await store.close();
      client.disconnect();
    }
  });

  it('close sends the confirms not sent yet', async () => {
    const keyPrefix = freshPrefix();
    const store = new RedisSnapshotStore({ url: server.url, keyPrefix });
    const admin = new Redis(server.url);
    try {
      await store.apply({ profileId: 'p-close', attributes: { a: 1 } }, { key: 'k', seq: 1 });
      const confirmed = store.confirm('p-close', 'k');
      await store.close();
      await confirmed;
      expect((await admin.hkeys(`${keyPrefix}p:p-close`)).sort()).toEqual(['s', 'v']);
    } finally {
      admin.disconnect();
    }
  });

  it('a confirm that cannot reach Redis rejects with StoreError, with every confirm of its batch', async () => {
    const store = new RedisSnapshotStore({ url: `redis://127.0.0.1:${await freePort()}`, commandTimeoutMs: 500 });
    try {
      const results = await Promise.allSettled([store.confirm('p-1', 'k1'), store.confirm('p-2', 'k2')]);
      for (const r of results) {
        expect(r.status).toBe('rejected');
        const reason = (r as PromiseRejectedResult).reason as StoreError;
        expect(reason).toBeInstanceOf(StoreError);
        expect(reason.code).toBe('ERR_STORE');
      }
    } finally {
      await store.close();
    }
  });
});

describe('RedisSnapshotStore: a backfill reads a frozen list of members', () => {
  it('one copy per backfill, read by index across a server restart (each member exactly once), dropped when done', async () => {
    const keyPrefix = freshPrefix();
    const admin = new Redis(server.url);
    let store = new RedisSnapshotStore({ url: server.url, keyPrefix });
    const frozenKey = `${keyPrefix}backfill:bf-big:members`;
    try {
      // 20,000 members: a hash-table set, the kind whose SSCAN cursor a restart invalidates.
      const ids = Array.from({ length: 20_000 }, (_, i) => `m-${i}`);
      for (let i = 0; i < ids.length; i += 5_000) await admin.sadd(`${keyPrefix}a:aud-big`, ...ids.slice(i, i + 5_000));
      const t0 = performance.now();
      expect((await store.beginBackfill('bf-big', 'aud-big')).phase).toBe('start');
      const freezeMs = performance.now() - t0;
      expect(await admin.llen(frozenKey)).toBe(ids.length + 1);
      expect(await admin.lindex(frozenKey, 0)).toBe('');

      const seen: string[] = [];
      let cursor = '0';
      for (let i = 0; i < 20; i++) {
        const page = await store.scanMembers('aud-big', { cursor, count: 500, frozenAs: 'bf-big' });
        expect(page.ids).toHaveLength(500);
        seen.push(...page.ids);
        cursor = page.cursor;
      }
      await store.setBackfill('bf-big', { done: false, cursor, sent: seen.length });
      // The audience changes, then the server restarts (its data kept) and a new worker resumes.
      await admin.srem(`${keyPrefix}a:aud-big`, ...ids.slice(0, 300), ...ids.slice(-300));
      await admin.sadd(`${keyPrefix}a:aud-big`, ...Array.from({ length: 300 }, (_, i) => `late-${i}`));
      await store.close();
      admin.disconnect();
      await server.restart();
      store = new RedisSnapshotStore({ url: server.url, keyPrefix });
      const begun = await store.beginBackfill('bf-big', 'aud-big');
      expect(begun).toEqual({ state: { done: false, cursor, sent: 10_000 }, phase: 'resume' });
      do {
        const page = await store.scanMembers('aud-big', { cursor, count: 500, frozenAs: 'bf-big' });
        seen.push(...page.ids);
        cursor = page.cursor;
      } while (cursor !== '0');
      expect(seen).toHaveLength(ids.length);
      expect([...seen].sort()).toEqual([...ids].sort());

      await store.setBackfill('bf-big', { done: true, cursor: '0', sent: seen.length });
      const after = new Redis(server.url);
      try {
        expect(await after.exists(frozenKey)).toBe(0);
        expect(JSON.parse((await after.hget(`${keyPrefix}backfills`, 'bf-big')) as string)).toEqual({ done: true, cursor: '0', sent: 20_000 });
      } finally {
        after.disconnect();
      }
      console.log(`frozen 20,000 members in ${freezeMs.toFixed(0)} ms; read exactly once across a restart`);
    } finally {
      admin.disconnect();
      await store.close();
    }
  });
});
