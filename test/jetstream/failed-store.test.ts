import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  dataflowToken,
  JetStreamFailedRequestStore,
  JetStreamRejectedEventStore,
  openJetStreamStores,
} from '../../src/sinks/failed-jetstream-store.js';
import type { FailedRequest, RejectedEvent } from '../../src/sinks/types.js';
import { filter, firstValueFrom } from 'rxjs';
import { connectNats } from '../../src/streams/nats.js';
import { MASK, processSecrets } from '../../src/observability/redact.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';

let server: NatsServer;

beforeAll(async () => {
  server = await startNatsServer();
});

afterAll(async () => {
  await server?.stop();
});

function failed(id: string, dataflowId: string, extra: Partial<FailedRequest> = {}): FailedRequest {
  return {
    id,
    dataflowId,
    destinationId: 'dest-1',
    profileId: `p-${id}`,
    idempotencyKey: id,
    payload: { person: { name: { firstName: 'John' } }, identityMap: {}, segmentMembership: { ups: {} } },
    attempts: 3,
    lastStatus: 503,
    lastErrorCode: 'ERR_HTTP_STATUS',
    lastError: 'HTTP 503',
    failedAt: '2026-11-26T10:00:00.000Z',
    ...extra,
  };
}

const ids = (records: Array<{ id: string }>) => records.map((r) => r.id).sort();

describe('JetStreamFailedRequestStore', () => {
  it('puts, lists, filters by dataflow, replaces and removes', async () => {
    const store = await JetStreamFailedRequestStore.open({ servers: server.url, stream: 'FAILED_A' });
    try {
      expect(await store.list()).toEqual([]);
      await store.put(failed('k1', 'flow-1'));
      await store.put(failed('k2', 'flow-1'));
      await store.put(failed('k3', 'flow.2 with spaces'));
      await store.put(failed('k4', 'flow-10'));

      expect(ids(await store.list())).toEqual(['k1', 'k2', 'k3', 'k4']);
      expect(ids(await store.list({ dataflowId: 'flow-1' }))).toEqual(['k1', 'k2']);
      expect(ids(await store.list({ dataflowId: 'flow.2 with spaces' }))).toEqual(['k3']);
      expect(ids(await store.list({ dataflowId: 'nope' }))).toEqual([]);
      const k1 = (await store.list({ dataflowId: 'flow-1' })).find((r) => r.id === 'k1');
      expect(k1).toEqual(failed('k1', 'flow-1'));

      // A re-put replaces the record (one message per subject).
      await store.put(failed('k1', 'flow-1', { replays: 1, lastStatus: 500, lastError: 'HTTP 500' }));
      const all = await store.list();
      expect(all).toHaveLength(4);
      expect(all.find((r) => r.id === 'k1')).toMatchObject({ replays: 1, lastStatus: 500 });
      const nc = await connect({ servers: server.url });
      const jsm = await jetstreamManager(nc);
      expect((await jsm.streams.info('FAILED_A')).state.messages).toBe(4);

      await store.remove(['k1', 'k3', 'unknown']);
      expect(ids(await store.list())).toEqual(['k2', 'k4']);
      expect((await jsm.streams.info('FAILED_A')).state.messages).toBe(2);
      await store.remove([]);
      expect(ids(await store.list())).toEqual(['k2', 'k4']);
      await nc.close();
    } finally {
      await store.close();
    }
  });

  it('creates a file-storage stream with one message per subject', async () => {
    const store = await JetStreamFailedRequestStore.open({ servers: server.url, stream: 'FAILED_CFG' });
    await store.close();
    const nc = await connect({ servers: server.url });
    try {
      const info = await (await jetstreamManager(nc)).streams.info('FAILED_CFG');
      expect(info.config).toMatchObject({ storage: 'file', max_msgs_per_subject: 1, subjects: ['FAILED_CFG.>'] });
      expect(store.subjectOf({ id: 'x', dataflowId: 'a.b' })).toMatch(/^FAILED_CFG\.~[A-Za-z0-9_-]+\.[0-9a-f]{32}$/);
      expect(dataflowToken('flow_1-A')).toBe('flow_1-A');
    } finally {
      await nc.close();
    }
  });

  it('lists more records than one pull returns', async () => {
    const store = new JetStreamFailedRequestStore({ servers: server.url, stream: 'FAILED_MANY' });
    try {
      await Promise.all(Array.from({ length: 2_500 }, (_, i) => store.put(failed(`m${i}`, i % 2 ? 'odd' : 'even'))));
      expect(await store.list()).toHaveLength(2_500);
      expect(await store.list({ dataflowId: 'odd' })).toHaveLength(1_250);
      await store.remove(Array.from({ length: 1_000 }, (_, i) => `m${i}`));
      expect(await store.list()).toHaveLength(1_500);
    } finally {
      await store.close();
    }
  });

  it('survives a nats-server restart (file storage)', async () => {
    const nats = await connectNats({ servers: server.url, reconnectTimeWaitMs: 100 });
    const reconnected = firstValueFrom(nats.status$.pipe(filter((s) => s.kind === 'reconnect')));
    const store = await JetStreamFailedRequestStore.open({ nats, stream: 'FAILED_DURABLE' });
    try {
      await store.put(failed('d1', 'flow-1'));
      await store.put(failed('d2', 'flow-2'));
      server.kill();
      await server.restart();
      await reconnected;
      // The same store goes on over its reconnected connection.
      expect(ids(await store.list())).toEqual(['d1', 'd2']);
      await store.remove(['d1']);
      expect(ids(await store.list())).toEqual(['d2']);
    } finally {
      await store.close();
      await nats.close();
    }
    // And a fresh store sees the same.
    const again = await JetStreamFailedRequestStore.open({ servers: server.url, stream: 'FAILED_DURABLE' });
    try {
      expect(ids(await again.list())).toEqual(['d2']);
    } finally {
      await again.close();
    }
  });

  it('masks every secret the process knows in lastError on put, the payload kept as is (issue 14)', async () => {
    const token = `at!${Date.now()}'(runtime)*~`;
    processSecrets.add(token);
    const store = await JetStreamFailedRequestStore.open({ servers: server.url, stream: 'FAILED_MASK' });
    try {
      const rec = failed('m1', 'flow-1', { lastError: `HTTP 500: echo ${new URLSearchParams({ a: token }).toString()}`, payload: { person: { note: 'keep me' } } });
      await store.put(rec);
      const [got] = await store.list();
      expect(got?.lastError).toBe(`HTTP 500: echo a=${MASK}`);
      expect(got?.payload).toEqual({ person: { note: 'keep me' } });
      expect(rec.lastError).toContain('a=at'); // the caller's record is not changed
    } finally {
      await store.close();
    }
  });

  it('fails with a StoreError (no credentials in it) when no server answers', async () => {
    const err = await JetStreamFailedRequestStore.open({ servers: 'nats://u:hunter2@127.0.0.1:1' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_STORE' });
    expect((err as Error).message).not.toContain('hunter2');
  });
});

describe('JetStreamRejectedEventStore', () => {
  const rejected = (n: number): RejectedEvent => ({
    sourceKey: `js:PROFILES:${n}`,
    code: 'ERR_EVENT_JSON',
    reason: 'not valid JSON',
    raw: '{"profileId":',
    rejectedAt: '2026-11-26T10:00:00.000Z',
  });

  it('appends and lists in order, in a bounded stream', async () => {
    const store = await JetStreamRejectedEventStore.open({ servers: server.url, stream: 'REJECTED_A' });
    try {
      expect(await store.list()).toEqual([]);
      for (let i = 1; i <= 5; i++) await store.put(rejected(i));
      await store.put(rejected(1)); // append-only: the same event twice is kept twice
      expect((await store.list()).map((r) => r.sourceKey)).toEqual([1, 2, 3, 4, 5, 1].map((n) => `js:PROFILES:${n}`));
      expect((await store.list())[0]).toEqual(rejected(1));
    } finally {
      await store.close();
    }
    const nc = await connect({ servers: server.url });
    try {
      const info = await (await jetstreamManager(nc)).streams.info('REJECTED_A');
      expect(info.config.storage).toBe('file');
      expect(info.config.max_age).toBeGreaterThan(0);
      expect(info.config.max_bytes).toBeGreaterThan(0);
      expect(info.config.max_msgs).toBeGreaterThan(0);
    } finally {
      await nc.close();
    }
  });
});

describe('openJetStreamStores', () => {
  it('opens both stores on one connection and closes it', async () => {
    const stores = await openJetStreamStores({ servers: server.url, stream: 'FAILED_S', rejectedStream: 'REJECTED_S' });
    await stores.failed.put(failed('s1', 'flow-1'));
    await stores.rejected.put({ sourceKey: 'k', code: 'ERR_EVENT_SHAPE', reason: 'r', raw: '{}', rejectedAt: 'now' });
    expect(ids(await stores.failed.list())).toEqual(['s1']);
    expect(await stores.rejected.list()).toHaveLength(1);
    await stores.close();
    await expect(stores.failed.list()).rejects.toMatchObject({ code: 'ERR_STORE' });
  });
});
