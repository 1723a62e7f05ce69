/**
 * LocalSnapshotStore (LMDB): the SnapshotStore contract, then what only a durable store owes —
 * state that outlives the process, private file modes, the run lock, and read positions.
 */
import { mkdtemp, rm, stat, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalSnapshotStore } from '../../src/stores/local-snapshot-store.js';
import { MAX_PENDING_PER_PROFILE } from '../../src/stores/memory-snapshot-store.js';
import type { JsonObject } from '../../src/domain/types.js';
import { openLocalEnv } from '../../src/stores/local-env.js';
import { StoreLockedError } from '../../src/stores/local-lock.js';
import { describeSnapshotStoreContract } from './snapshot-store-contract.js';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'local-store-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describeSnapshotStoreContract('LocalSnapshotStore', async () => {
  const path = join(await freshDir(), 'state');
  // As a worker opens it: with the run lock (and so with its cache of decoded profiles).
  const store = await LocalSnapshotStore.open({ path, exclusive: true });
  return {
    store,
    cleanup: () => store.close(),
    loseFrozenMembers: async (id) => {
      await store.flush(); // what the store wrote so far is on disk, then lost
      // Behind the store's back, as a lost file would: another handle on the same folder.
      const env = openLocalEnv(path);
      const frozen = env.db('frozen');
      await env.root.transaction(() => {
        for (const key of frozen.getKeys({ start: `${id}\u0000`, end: `${id}\u0001` })) frozen.remove(key);
        frozen.remove(id);
      });
      await env.release();
    },
  };
});

describe('LocalSnapshotStore (durable)', () => {
  let path: string;
  beforeEach(async () => {
    path = join(await freshDir(), 'sub', 'state');
  });

  it('keeps snapshots, memberships, replay records, backfills and positions across a close and reopen', async () => {
    const a = await LocalSnapshotStore.open({ path });
    await a.apply({ profileId: 'p-1', attributes: { n: 1 }, segmentMembership: { ups: { aud: { status: 'realized' } } } }, { key: 'k1', seq: 1 });
    const first = await a.apply({ profileId: 'p-1', attributes: { n: 2 } }, { key: 'k2', seq: 2 });
    await a.confirm('p-1', 'k1');
    await a.setBackfill('bf', { done: false, cursor: '3', sent: 3 });
    await a.setPosition('file:/x', { offset: 10, line: 2, ino: 1, dev: 2, size: 10, head: 'h', headBytes: 10 });
    await a.close();

    const b = await LocalSnapshotStore.open({ path });
    expect((await b.get('p-1'))?.attributes).toEqual({ n: 2 });
    const members: string[][] = [];
    for await (const batch of b.members('aud')) members.push(batch);
    expect(members).toEqual([['p-1']]);
    // k2 was never confirmed: a redelivery after the restart gets its first result back.
    const again = await b.apply({ profileId: 'p-1', attributes: { n: 2 } }, { key: 'k2', seq: 2 });
    expect(again.replayed).toBe(true);
    expect(again.before).toEqual(first.before);
    // k1 was confirmed: merged again.
    expect((await b.apply({ profileId: 'p-1', attributes: { n: 1 } }, { key: 'k1', seq: 1 })).replayed).toBe(false);
    expect(await b.getBackfill('bf')).toEqual({ done: false, cursor: '3', sent: 3 });
    expect(await b.getPosition('file:/x')).toMatchObject({ offset: 10, line: 2 });
    await b.close();
  });

  for (const maxSnapshotBytes of [undefined, Infinity]) {
    it(`stored records round-trip: a snapshot read back from disk is the before of the next replay record (maxSnapshotBytes ${maxSnapshotBytes})`, async () => {
      const attributes = JSON.parse('{"__proto__":{"polluted":1},"q":"a\\"b\\nc\\u2028"}') as JsonObject;
      const odd = 'k\n"1\u0001';
      const a = await LocalSnapshotStore.open({ path, maxSnapshotBytes, exclusive: true });
      const first = await a.apply({ profileId: 'p-1', attributes }, { key: odd, seq: 1, watermark: 5 });
      await a.setPosition('file:/x', { offset: 1, line: 1, ino: 1, dev: 1, size: 1, head: 'h', headBytes: 1 }); // committed
      // A later turn: the entry comes from disk; its snapshot text becomes the record's before.
      const second = await a.apply({ profileId: 'p-1', attributes: { n: 2 } }, { key: 'k2', seq: 2, watermark: 6 });
      await a.close();

      const b = await LocalSnapshotStore.open({ path, maxSnapshotBytes, exclusive: true });
      for (const [key, seq, watermark, result] of [[odd, 1, 5, first], ['k2', 2, 6, second]] as const) {
        const again = await b.apply({ profileId: 'p-1', attributes: {} }, { key, seq, watermark });
        expect(again.replayed).toBe(true);
        expect(again.before).toEqual(result.before);
        expect(again.after).toEqual(result.after);
      }
      const replayed = (await b.apply({ profileId: 'p-1', attributes: {} }, { key: 'k2', seq: 2 })).before?.attributes as Record<string, unknown>;
      expect(Object.getPrototypeOf(replayed)).toBe(Object.prototype);
      expect(Object.keys(replayed)).toEqual(['__proto__', 'q']);
      expect(replayed.q).toBe('a"b\nc\u2028');
      expect(((await b.get('p-1'))?.attributes as Record<string, unknown>).n).toBe(2);
      // The watermark came back too: an older one is stale.
      expect((await b.apply({ profileId: 'p-1', attributes: { n: 9 } }, { key: 'k3', seq: 3, watermark: 4 })).stale).toBe(true);
      await b.close();
    });
  }

  it('reads profiles and replay records as earlier versions wrote them (one JSON object each)', async () => {
    const s = await LocalSnapshotStore.open({ path });
    const env = openLocalEnv(path);
    const snapshot = { profileId: 'p-old', attributes: { n: 1 }, identityMap: {}, memberships: {} };
    await env.db('profiles', 'string').put('p-old', JSON.stringify({ snapshot, watermark: 3, keys: ['x'] }));
    await env.db('replays', 'string').put('p-old\u0000x', JSON.stringify({ before: null, after: snapshot }));
    expect(await s.get('p-old')).toEqual(snapshot);
    const again = await s.apply({ profileId: 'p-old', attributes: { n: 5 } }, { key: 'x', seq: 1 });
    expect(again).toMatchObject({ replayed: true, before: null, after: snapshot });
    const next = await s.apply({ profileId: 'p-old', attributes: { n: 5 } }, { key: 'y', seq: 2, watermark: 4 });
    expect(next.before).toEqual(snapshot);
    await env.release();
    await s.close();
  });

  it('confirmed applications do not push an unconfirmed one out of the replay bound', async () => {
    const s = await LocalSnapshotStore.open({ path });
    const first = await s.apply({ profileId: 'p', attributes: { n: 0 } }, { key: 'pending', seq: 0 });
    for (let i = 1; i <= MAX_PENDING_PER_PROFILE + 5; i++) {
      await s.apply({ profileId: 'p', attributes: { n: i } }, { key: `c${i}`, seq: i });
      await s.confirm('p', `c${i}`);
    }
    const again = await s.apply({ profileId: 'p', attributes: { n: 0 } }, { key: 'pending', seq: 0 });
    expect(again.replayed).toBe(true);
    expect(again.after).toEqual(first.after);
    await s.close();
  });

  it('creates its folder 0700 and its files 0600', async () => {
    const s = await LocalSnapshotStore.open({ path, exclusive: true });
    await s.apply({ profileId: 'p', attributes: { a: 1 } }, { key: 'k', seq: 1 });
    expect((await stat(path)).mode & 0o777).toBe(0o700);
    const files = await readdir(path);
    expect(files.sort()).toEqual(['data.mdb', 'data.mdb-lock', 'run.lock']);
    for (const f of files) expect([f, (await stat(join(path, f))).mode & 0o777]).toEqual([f, 0o600]);
    await s.close();
  });

  it('the run lock: a second exclusive open fails naming the path; after close it can be taken again', async () => {
    const a = await LocalSnapshotStore.open({ path, exclusive: true });
    const err = await LocalSnapshotStore.open({ path, exclusive: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreLockedError);
    expect((err as StoreLockedError).code).toBe('ERR_STORE_LOCKED');
    expect((err as Error).message).toContain(path);
    // A reader (failed list, explain) does not need the lock.
    const reader = await LocalSnapshotStore.open({ path });
    expect(await reader.get('nobody')).toBeNull();
    await reader.close();
    await a.close();
    const b = await LocalSnapshotStore.open({ path, exclusive: true });
    await b.close();
  });

  it('takes over a lock left by a process that is gone', async () => {
    const s = await LocalSnapshotStore.open({ path });
    await s.close();
    // A pid far above pid_max is never alive.
    await writeFile(join(path, 'run.lock'), '99999999\n');
    const b = await LocalSnapshotStore.open({ path, exclusive: true });
    await b.close();
    expect(await readdir(path)).not.toContain('run.lock');
  });

  const txnId = (env: ReturnType<typeof openLocalEnv>): number => {
    const stats = env.root.getStats() as { lastTxnId?: number; txnId?: number };
    return stats.lastTxnId ?? stats.txnId ?? 0;
  };

  it('writes of one event-loop turn share a transaction (hundreds of applies, far fewer commits)', async () => {
    const s = await LocalSnapshotStore.open({ path, commitWindowMs: 0 });
    const env = openLocalEnv(path);
    const before = txnId(env);
    await Promise.all(Array.from({ length: 500 }, (_, i) => s.apply({ profileId: `p-${i}`, attributes: { i } }, { key: `k${i}`, seq: i })));
    await new Promise<void>((r) => setImmediate(r)); // the store issues a turn's writes at its end
    await env.root.committed;
    const txns = txnId(env) - before;
    expect(txns).toBeGreaterThan(0);
    expect(txns).toBeLessThan(10);
    await env.release();
    await s.close();
  });

  it('the writes of a commit window share a transaction, and a message applied and confirmed within it writes no replay record', async () => {
    // A window that does not end by itself in this test: `flush` ends it.
    const s = await LocalSnapshotStore.open({ path, commitWindowMs: 600_000 });
    const env = openLocalEnv(path);
    const before = txnId(env);
    for (let turn = 0; turn < 5; turn++) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => s.apply({ profileId: `p-${turn * 100 + i}`, attributes: { i } }, { key: `k${turn * 100 + i}`, seq: i })));
      for (let i = 0; i < 50; i++) await s.confirm(`p-${turn * 100 + i}`, `k${turn * 100 + i}`);
      await new Promise<void>((r) => setImmediate(r));
    }
    await env.root.committed;
    expect(txnId(env)).toBe(before); // five turns, nothing committed yet
    await s.flush();
    const txns = txnId(env) - before;
    expect(txns).toBeGreaterThan(0);
    expect(txns).toBeLessThan(3);
    // 500 applied, 250 of them confirmed in the window: 250 replay records, 500 profiles.
    expect(env.db('replays', 'string').getKeysCount()).toBe(250);
    expect(env.db('profiles', 'string').getKeysCount()).toBe(500);
    await env.release();
    await s.close();
  });

  it('with the run lock, profiles within profileCacheBytes are not read back from LMDB; past it, or with 0, they are', async () => {
    const readsWith = async (profileCacheBytes: number | undefined): Promise<number> => {
      const dir = join(await freshDir(), 'state');
      const s = await LocalSnapshotStore.open({ path: dir, exclusive: true, ...(profileCacheBytes === undefined ? {} : { profileCacheBytes }) });
      const env = openLocalEnv(dir);
      const profiles = env.db('profiles', 'string') as unknown as { get: (...a: unknown[]) => unknown };
      const get = profiles.get;
      let reads = 0;
      try {
        for (let i = 0; i < 200; i++) await s.apply({ profileId: `p-${i}`, attributes: { i, pad: 'x'.repeat(100) } }, { key: `a${i}`, seq: i });
        await s.flush();
        profiles.get = (...a) => (reads++, get.apply(profiles, a));
        // Newest first: the ones a small cache still holds are met before any is let go.
        for (let i = 199; i >= 0; i--) await s.apply({ profileId: `p-${i}`, attributes: { j: i } }, { key: `b${i}`, seq: i });
        await s.flush();
      } finally {
        profiles.get = get;
        await env.release();
        await s.close();
      }
      return reads;
    };
    expect(await readsWith(undefined)).toBe(0); // the default holds them all
    expect(await readsWith(0)).toBe(200);
    const some = await readsWith(10_000); // ~150 characters each: about 60 fit
    expect(some).toBeGreaterThan(100);
    expect(some).toBeLessThan(200);
  });

  it('past the replay bound the oldest unconfirmed key leaves with its record; applied again and confirmed in one window, it leaves none', async () => {
    const s = await LocalSnapshotStore.open({ path, exclusive: true, commitWindowMs: 600_000 });
    const env = openLocalEnv(path);
    const replays = env.db('replays', 'string');
    try {
      for (let i = 0; i <= MAX_PENDING_PER_PROFILE; i++) await s.apply({ profileId: 'p', attributes: { [`a${i}`]: i } }, { key: `k${i}`, seq: i });
      await s.flush();
      expect(replays.doesExist('p\u0000k0')).toBe(false);
      expect(replays.getKeysCount()).toBe(MAX_PENDING_PER_PROFILE);
      // k0 read again (a redelivery): merged again, confirmed within the window.
      expect((await s.apply({ profileId: 'p', attributes: { a0: 0 } }, { key: 'k0', seq: 0 })).replayed).toBe(false);
      await s.confirm('p', 'k0');
      await s.flush();
      expect(replays.doesExist('p\u0000k0')).toBe(false);
      const third = await s.apply({ profileId: 'p', attributes: { a0: 0 } }, { key: 'k0', seq: 0 });
      expect(third.replayed).toBe(false);
      expect(third.before).not.toBeNull();
    } finally {
      await env.release();
      await s.close();
    }
  });

  it('confirm reads nothing from LMDB: a record confirmed in its window is never written nor removed, one committed earlier is removed', async () => {
    const s = await LocalSnapshotStore.open({ path, exclusive: true, commitWindowMs: 600_000 });
    const env = openLocalEnv(path);
    const replays = env.db('replays', 'string');
    const reads = { exist: 0, get: 0, removes: 0 };
    const spy = replays as unknown as Record<'doesExist' | 'get' | 'remove', (...a: unknown[]) => unknown>;
    const orig = { doesExist: spy.doesExist, get: spy.get, remove: spy.remove };
    spy.doesExist = (...a) => (reads.exist++, orig.doesExist.apply(replays, a));
    spy.get = (...a) => (reads.get++, orig.get.apply(replays, a));
    spy.remove = (...a) => (reads.removes++, orig.remove.apply(replays, a));
    try {
      // Window 1: 100 applied, 60 confirmed within it.
      for (let i = 0; i < 100; i++) await s.apply({ profileId: `p-${i}`, attributes: { i } }, { key: `k${i}`, seq: i });
      for (let i = 0; i < 60; i++) await s.confirm(`p-${i}`, `k${i}`);
      await s.flush();
      expect(replays.getKeysCount()).toBe(40);
      expect(reads).toEqual({ exist: 0, get: 0, removes: 0 });
      // Window 2: the 40 committed ones confirmed: removed, still without a read.
      for (let i = 60; i < 100; i++) await s.confirm(`p-${i}`, `k${i}`);
      await s.flush();
      expect(replays.getKeysCount()).toBe(0);
      expect(reads).toEqual({ exist: 0, get: 0, removes: 40 });
    } finally {
      Object.assign(spy, orig);
      await env.release();
      await s.close();
    }
  });
});
