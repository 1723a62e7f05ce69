/**
 * RedisSnapshotStore against a real redis-server (started on a free port by this file): the
 * SnapshotStore contract, two workers on the same profiles, a Redis restart mid-run, and a
 * rough throughput figure.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProfileSnapshot, ProfileUpdate } from '../../src/domain/types.js';
import { StoreError } from '../../src/errors.js';
import { RedisSnapshotStore, SnapshotConflictError } from '../../src/stores/redis-snapshot-store.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
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
  const store = new RedisSnapshotStore({ url: server.url, keyPrefix: freshPrefix() });
  return { store, cleanup: () => store.close() };
});

/** Reads the calls of EVAL/EVALSHA so far (each apply is one read script + one CAS per attempt). */
async function scriptCalls(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  let calls = 0;
  for (const m of info.matchAll(/cmdstat_(?:eval|evalsha):calls=(\d+)/g)) calls += Number(m[1]);
  return calls;
}

describe('RedisSnapshotStore on a real redis-server', () => {
  it('two workers applying interleaved updates to the same profiles lose no update', async () => {
    const keyPrefix = freshPrefix();
    const workerA = new RedisSnapshotStore({ url: server.url, keyPrefix });
    const workerB = new RedisSnapshotStore({ url: server.url, keyPrefix });
    const admin = new Redis(server.url);
    try {
      const profiles = Array.from({ length: 8 }, (_, i) => `p-${i}`);
      const perWorker = 60;
      const callsBefore = await scriptCalls(admin);
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
      const retried = (await scriptCalls(admin)) - callsBefore - 2 * applies;

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
      // The two workers did race: some compare-and-set lost and was retried.
      console.log(`two workers: ${applies} applies, ${retried} extra script calls from lost compare-and-sets`);
      expect(retried).toBeGreaterThan(0);
    } finally {
      await Promise.all([workerA.close(), workerB.close()]);
      admin.disconnect();
    }
  });

  it('gives up with a typed StoreError when the profile keeps changing under it', async () => {
    const keyPrefix = freshPrefix();
    const client = new Redis(server.url, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
    // Another writer bumps the version between every read and write of the store: the store
    // gets a proxy of the client whose read script does that after reading. (The script methods
    // exist only at run time, through defineCommand, hence the casts.)
    let reads = 0;
    const proxy = new Proxy(client, {
      get(target, prop) {
        if (prop === 'hdSnapshotRead') {
          return async (...args: string[]) => {
            const read = (target as unknown as Record<string, (...a: string[]) => Promise<unknown>>).hdSnapshotRead;
            const reply = await read.apply(target, args);
            reads += 1;
            await target.hincrby(`${keyPrefix}p:p-hot`, 'v', 1);
            return reply;
          };
        }
        const value: unknown = Reflect.get(target, prop);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const store = new RedisSnapshotStore({ redis: proxy, keyPrefix, maxConflictRetries: 2 });
    try {
      const err = await store.apply({ profileId: 'p-hot', attributes: { a: 1 } }, { key: 'k', seq: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotConflictError);
      expect(err).toBeInstanceOf(StoreError);
      expect((err as SnapshotConflictError).code).toBe('ERR_STORE');
      expect((err as SnapshotConflictError).attempts).toBe(3);
      expect(reads).toBe(3);
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
