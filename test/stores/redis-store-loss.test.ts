/**
 * Store loss (issue 13 item 4) against a real redis-server: the Redis snapshot store carries
 * an epoch marker; when Redis loses its data (FLUSHALL here, an empty restart in production),
 * every apply rejects with ERR_STORE_LOST — nothing is merged into the empty snapshots as
 * "no change", nothing is written — until `pool reset-state`, after which applying resumes.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { poolResetState } from '../../src/cli/pool-reset-state.js';
import type { ProfileUpdate } from '../../src/domain/types.js';
import { REDIS_SNAPSHOT_STORE_DEFAULTS, RedisSnapshotStore, StoreLostError } from '../../src/stores/redis-snapshot-store.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

let server: RedisServer;
let admin: Redis;
beforeAll(async () => {
  server = await startRedisServer();
  admin = new Redis(server.url);
});
afterAll(async () => {
  admin?.disconnect();
  await server?.stop();
});

const enter: ProfileUpdate = { profileId: 'p-1', segmentMembership: { ups: { 'aud-1': { status: 'realized' } } } };
const write = (v: string): ProfileUpdate => ({ profileId: 'p-1', attributes: { person: { name: v } } });

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

function configFile(keyPrefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'hd-reset-state-'));
  const file = join(dir, 'config.yaml');
  writeFileSync(
    file,
    [
      'source: { kind: file, path: events.jsonl }',
      `store: { kind: redis, url: "${server.url}", keyPrefix: "${keyPrefix}" }`,
      'audiences: [ { id: aud-1, name: A, mergePolicyId: mp-1, createdAt: 0, updatedAt: 0 } ]',
      'destinations: [ { id: d, endpoint: "http://127.0.0.1:9/x" } ]',
      'dataflows: [ { id: f, destination: d, audiences: [ aud-1 ], attributes: [ person.name ] } ]',
    ].join('\n'),
  );
  return file;
}

describe('RedisSnapshotStore: store loss (epoch marker)', () => {
  it('the first store initialises the marker; a flush stops every apply with ERR_STORE_LOST until pool reset-state', async () => {
    const keyPrefix = 'loss1:';
    const lost: StoreLostError[] = [];
    let restored = 0;
    const a = new RedisSnapshotStore({ url: server.url, keyPrefix, onStoreLost: (e) => lost.push(e), onStoreRestored: () => restored++ });
    const started: RedisSnapshotStore[] = [a];
    try {
      await a.apply(enter, { key: 'm1', seq: 1 });
      expect(await admin.get(`${keyPrefix}epoch`)).toMatch(/^init:[0-9a-f]{16}$/);
      const w1 = await a.apply(write('v1'), { key: 'm2', seq: 2 });
      expect(w1.before?.memberships['aud-1']?.status).toBe('realized');

      await admin.flushall();

      // Today's behaviour would be a merge into an empty snapshot: before null, "no change".
      const err = await rejection(a.apply(write('v2'), { key: 'm3', seq: 3 }));
      expect(err).toBeInstanceOf(StoreLostError);
      expect((err as StoreLostError).code).toBe('ERR_STORE_LOST');
      expect((err as StoreLostError).message).toContain('pool reset-state');
      expect(lost).toHaveLength(1);
      expect(a.lost?.code).toBe('ERR_STORE_LOST');
      // Nothing written into the emptied store but the marker saying it was lost.
      expect(await admin.keys('*')).toEqual([`${keyPrefix}epoch`]);
      expect(await admin.get(`${keyPrefix}epoch`)).toMatch(/^lost:/);

      // Every later apply (and a backfill) is refused too; the error is reported once.
      expect(await rejection(a.apply(write('v3'), { key: 'm4', seq: 4 }))).toBeInstanceOf(StoreLostError);
      expect(await rejection(a.beginBackfill('bf-1', 'aud-1'))).toBeInstanceOf(StoreLostError);
      expect(lost).toHaveLength(1);

      // A worker started after the loss does not initialise a fresh epoch over it.
      const b = new RedisSnapshotStore({ url: server.url, keyPrefix });
      started.push(b);
      expect(await rejection(b.apply(write('v3'), { key: 'm5', seq: 5 }))).toMatchObject({ code: 'ERR_STORE_LOST' });
      expect(await admin.keys(`${keyPrefix}p:*`)).toEqual([]);

      // The operator action.
      const r = await poolResetState({ config: configFile(keyPrefix) });
      expect(r.previous).toMatch(/^lost:/);
      expect(r.epoch).toMatch(/^reset:[0-9a-f]{16}$/);
      await sleep(REDIS_SNAPSHOT_STORE_DEFAULTS.lostRecheckMs + 100);

      const resumed = await a.apply(write('v3'), { key: 'm4', seq: 4 });
      expect(resumed.before).toBeNull(); // the state is gone: the README procedure re-sends every profile
      expect(resumed.after.attributes).toEqual({ person: { name: 'v3' } });
      expect(a.lost).toBeNull();
      expect(restored).toBe(1);
      expect((await b.apply(enter, { key: 'm5', seq: 5 })).before?.attributes).toEqual({ person: { name: 'v3' } });
      expect((await a.beginBackfill('bf-1', 'aud-1')).phase).toBe('start');
    } finally {
      for (const s of started) await s.close();
    }
  });

  it('a marker changed behind a running store (another store initialised a fresh one) is a loss too', async () => {
    const keyPrefix = 'loss2:';
    const a = new RedisSnapshotStore({ url: server.url, keyPrefix });
    try {
      await a.apply(enter, { key: 'm1', seq: 1 });
      await admin.set(`${keyPrefix}epoch`, 'init:0000000000000000');
      expect(await rejection(a.apply(write('v2'), { key: 'm2', seq: 2 }))).toMatchObject({ code: 'ERR_STORE_LOST' });
      expect(await admin.get(`${keyPrefix}epoch`)).toMatch(/^lost:/);
      expect(await admin.hget(`${keyPrefix}p:p-1`, 'v')).toBe('1');
    } finally {
      await a.close();
    }
  });

  it('the check rides in the scripts: a cached profile (no read) is refused as well', async () => {
    const keyPrefix = 'loss3:';
    const a = new RedisSnapshotStore({ url: server.url, keyPrefix });
    try {
      await a.apply(enter, { key: 'm1', seq: 1 });
      // Delete only the marker: the profile and its cached guess stay.
      await admin.del(`${keyPrefix}epoch`);
      expect(await rejection(a.apply(write('v2'), { key: 'm2', seq: 2 }))).toMatchObject({ code: 'ERR_STORE_LOST' });
      expect(await admin.hget(`${keyPrefix}p:p-1`, 'v')).toBe('1');
      expect(await rejection(a.verifyEpoch())).toMatchObject({ code: 'ERR_STORE_LOST' });
    } finally {
      await a.close();
    }
  });

  it('an upgrade: a store with data but no marker yet initialises one and goes on', async () => {
    const keyPrefix = 'loss4:';
    await admin.hset(`${keyPrefix}p:p-1`, 's', JSON.stringify({ profileId: 'p-1', attributes: {}, identityMap: {}, memberships: { 'aud-1': { status: 'realized' } } }), 'v', '3');
    const a = new RedisSnapshotStore({ url: server.url, keyPrefix });
    try {
      const r = await a.apply(write('v1'), { key: 'm1', seq: 1 });
      expect(r.before?.memberships['aud-1']?.status).toBe('realized');
      expect(await admin.get(`${keyPrefix}epoch`)).toMatch(/^init:/);
    } finally {
      await a.close();
    }
  });
});
