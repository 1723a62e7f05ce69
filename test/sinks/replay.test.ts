import { describe, it, expect, afterEach } from 'vitest';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, of, defer, type Observable } from 'rxjs';
import type { DestinationConfig } from '../../src/config/load.js';
import { FileFailedRequestStore } from '../../src/sinks/failed-file-store.js';
import { HttpSink } from '../../src/sinks/http/sink.js';
import { replayFailedRequests } from '../../src/sinks/replay.js';
import type { DeliveryOutcome, ExportJob, ExportSender, FailedRequest, FailedRequestStore } from '../../src/sinks/types.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

class MemoryStore implements FailedRequestStore {
  records = new Map<string, FailedRequest>();
  removed: string[][] = [];
  async put(r: FailedRequest): Promise<void> {
    this.records.delete(r.id);
    this.records.set(r.id, structuredClone(r));
  }
  async list(filter?: { dataflowId?: string }): Promise<FailedRequest[]> {
    return [...this.records.values()].filter((r) => !filter?.dataflowId || r.dataflowId === filter.dataflowId);
  }
  async remove(ids: string[]): Promise<void> {
    this.removed.push(ids);
    for (const id of ids) this.records.delete(id);
  }
  async close(): Promise<void> {}
}

function rec(id: string, over: Partial<FailedRequest> = {}): FailedRequest {
  return {
    id,
    dataflowId: 'flow-1',
    destinationId: 'dest-1',
    profileId: `p-${id}`,
    idempotencyKey: id,
    payload: { n: id },
    attempts: 3,
    lastStatus: 500,
    lastErrorCode: 'ERR_HTTP_STATUS',
    lastError: 'HTTP 500',
    failedAt: '2026-11-26T10:00:00.000Z',
    ...over,
  };
}

/** A sink whose answer is chosen per job; records what it was sent and how many ran at once. */
function fakeSink(answer: (job: ExportJob) => DeliveryOutcome): ExportSender & { sent: ExportJob[]; maxActive: number } {
  let active = 0;
  const sink = {
    sent: [] as ExportJob[],
    maxActive: 0,
    send: (job: ExportJob): Observable<DeliveryOutcome> =>
      defer(async () => {
        sink.sent.push(job);
        active += 1;
        sink.maxActive = Math.max(sink.maxActive, active);
        await new Promise((r) => setTimeout(r, 5));
        active -= 1;
        return answer(job);
      }),
    close: async () => undefined,
  };
  return sink;
}

describe('replayFailedRequests', () => {
  it('removes delivered records and updates failed ones', async () => {
    const store = new MemoryStore();
    await store.put(rec('ok1'));
    await store.put(rec('bad', { replays: 2 }));
    await store.put(rec('ok2'));
    const sink = fakeSink((job) =>
      job.idempotencyKey === 'bad'
        ? { status: 'failed', job, attempts: 3, code: 'ERR_HTTP_CONNECTION', error: 'connect ECONNREFUSED 127.0.0.1:1' }
        : { status: 'delivered', job, attempts: 1, statusCode: 200 },
    );
    const now = Date.UTC(2026, 11, 1);
    const summary = await replayFailedRequests({ store, sinkFor: () => sink, now: () => now });
    expect(summary).toMatchObject({ replayed: 3, delivered: 2, failed: 1, skipped: 0 });
    expect([...store.records.keys()]).toEqual(['bad']);
    expect(store.records.get('bad')).toEqual({
      ...rec('bad'),
      attempts: 6,
      lastStatus: undefined,
      lastErrorCode: 'ERR_HTTP_CONNECTION',
      lastError: 'connect ECONNREFUSED 127.0.0.1:1',
      failedAt: '2026-12-01T00:00:00.000Z',
      replays: 3,
    });
    // the same export goes out again: same key, payload, profile and dataflow
    expect(sink.sent.find((j) => j.idempotencyKey === 'ok1')).toEqual({
      dataflowId: 'flow-1',
      destinationId: 'dest-1',
      profileId: 'p-ok1',
      idempotencyKey: 'ok1',
      payload: { n: 'ok1' },
    });
  });

  it('skips and keeps records of unknown dataflows', async () => {
    const store = new MemoryStore();
    await store.put(rec('a', { dataflowId: 'gone' }));
    await store.put(rec('b'));
    const sink = fakeSink((job) => ({ status: 'delivered', job, attempts: 1, statusCode: 200 }));
    const summary = await replayFailedRequests({ store, sinkFor: (id) => (id === 'flow-1' ? sink : undefined) });
    expect(summary).toMatchObject({ replayed: 1, delivered: 1, failed: 0, skipped: 1 });
    expect([...store.records.keys()]).toEqual(['a']);
    expect(store.records.get('a')).toEqual(rec('a', { dataflowId: 'gone' }));
  });

  it('replays only the chosen dataflow', async () => {
    const store = new MemoryStore();
    await store.put(rec('a', { dataflowId: 'flow-2' }));
    await store.put(rec('b'));
    const sink = fakeSink((job) => ({ status: 'delivered', job, attempts: 1, statusCode: 200 }));
    const summary = await replayFailedRequests({ store, sinkFor: () => sink, dataflowId: 'flow-2' });
    expect(summary).toMatchObject({ replayed: 1, delivered: 1, failed: 0, skipped: 0 });
    expect(sink.sent.map((j) => j.idempotencyKey)).toEqual(['a']);
    expect([...store.records.keys()]).toEqual(['b']);
  });

  it('sends at most `concurrency` at once and removes in batches', async () => {
    const store = new MemoryStore();
    for (let i = 0; i < 250; i++) await store.put(rec(`r${i}`));
    const sink = fakeSink((job) => ({ status: 'delivered', job, attempts: 1, statusCode: 200 }));
    const summary = await replayFailedRequests({ store, sinkFor: () => sink, concurrency: 3 });
    expect(summary).toMatchObject({ replayed: 250, delivered: 250, failed: 0, skipped: 0 });
    expect(sink.maxActive).toBe(3);
    expect(store.records.size).toBe(0);
    expect(store.removed.map((b) => b.length)).toEqual([100, 100, 50]);
  });

  it("sends one profile's records one at a time, in the store's order, and other profiles meanwhile", async () => {
    const store = new MemoryStore();
    // p-a and p-b interleaved in the store; p-a also has a record of another dataflow
    const order = ['a1', 'b1', 'a2', 'b2', 'a3', 'b3', 'a4'];
    for (const id of order) await store.put(rec(id, { profileId: `p-${id[0]}` }));
    await store.put(rec('x1', { profileId: 'p-a', dataflowId: 'flow-2' }));
    const active = new Map<string, number>();
    let maxPerProfile = 0;
    let maxActive = 0;
    let running = 0;
    const sent: string[] = [];
    const sink: ExportSender = {
      send: (job) =>
        defer(async () => {
          const k = `${job.dataflowId}/${job.profileId}`;
          active.set(k, (active.get(k) ?? 0) + 1);
          running += 1;
          maxPerProfile = Math.max(maxPerProfile, active.get(k)!);
          maxActive = Math.max(maxActive, running);
          sent.push(job.idempotencyKey);
          // later records answer sooner: if they ran together, they would finish out of order
          await new Promise((r) => setTimeout(r, 40 - 5 * Number(job.idempotencyKey.slice(1))));
          active.set(k, active.get(k)! - 1);
          running -= 1;
          return { status: 'delivered', job, attempts: 1, statusCode: 200 } as DeliveryOutcome;
        }),
    };
    const summary = await replayFailedRequests({ store, sinkFor: () => sink, concurrency: 8 });
    expect(summary).toMatchObject({ stored: 8, selected: 8, replayed: 8, delivered: 8 });
    expect(maxPerProfile).toBe(1);
    expect(maxActive).toBe(3); // p-a, p-b and p-a of flow-2 at once
    expect(sent.filter((k) => k.startsWith('a'))).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(sent.filter((k) => k.startsWith('b'))).toEqual(['b1', 'b2', 'b3']);
  });

  it('--since and --limit choose which records go; the others stay untouched', async () => {
    const store = new MemoryStore();
    await store.put(rec('old', { failedAt: '2026-11-26T08:00:00.000Z' }));
    await store.put(rec('n1', { failedAt: '2026-11-26T10:00:00.000Z' }));
    await store.put(rec('n2', { failedAt: '2026-11-26T11:00:00.000Z' }));
    await store.put(rec('n3', { failedAt: '2026-11-26T12:00:00.000Z' }));
    const sink = fakeSink((job) => ({ status: 'delivered', job, attempts: 1, statusCode: 200 }));
    const since = Date.parse('2026-11-26T10:00:00.000Z');
    const stats = { stored: 0, selected: 0, replayed: 0, delivered: 0, failed: 0, skipped: 0 };
    const summary = await replayFailedRequests({ store, sinkFor: () => sink, since, limit: 2, stats });
    expect(summary).toBe(stats);
    expect(summary).toEqual({ stored: 4, selected: 2, replayed: 2, delivered: 2, failed: 0, skipped: 0 });
    expect(sink.sent.map((j) => j.idempotencyKey).sort()).toEqual(['n1', 'n2']);
    expect([...store.records.keys()]).toEqual(['old', 'n3']);
    const none = await replayFailedRequests({ store, sinkFor: () => sink, limit: 0 });
    expect(none).toMatchObject({ stored: 2, selected: 0, replayed: 0 });
  });

  it('does nothing on an empty store', async () => {
    const store = new MemoryStore();
    const summary = await replayFailedRequests({
      store,
      sinkFor: () => {
        throw new Error('no record, so no sink is asked for');
      },
    });
    expect(summary).toMatchObject({ replayed: 0, delivered: 0, failed: 0, skipped: 0 });
    expect(store.removed).toEqual([]);
  });

  it('end to end: a request stored while the endpoint failed is delivered by replay with the same key', async () => {
    let healthy = false;
    const hits: Array<{ key: string | string[] | undefined; body: string }> = [];
    const server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        hits.push({ key: req.headers['idempotency-key'], body: Buffer.concat(chunks).toString() });
        res.writeHead(healthy ? 200 : 503).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const dir = mkdtempSync(join(tmpdir(), 'hd-replay-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const store = new FileFailedRequestStore({ path: join(dir, 'failed.jsonl') });
    cleanups.push(() => store.close());

    const dest: DestinationConfig = {
      id: 'dest-1',
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/in`,
      headers: {},
      auth: { type: 'bearer', token: 'replay-token-secret' },
      includeSegmentNames: false,
      includeSegmentTimestamps: false,
      retry: { minDelayMs: 5, maxDelayMs: 10, retryAfterMaxMs: 10 },
      timeoutMs: 1_000,
      connections: 1,
    };
    const limiter = { acquire: () => of(undefined) };
    const worker = new HttpSink({ destination: dest, limiter, failedStore: store });
    cleanups.push(() => worker.close());
    const job: ExportJob = {
      dataflowId: 'flow-1',
      destinationId: 'dest-1',
      profileId: 'p-1',
      idempotencyKey: 'flow-1:js:PROFILES:7',
      payload: { person: { name: { firstName: 'John' } } },
    };
    expect(await firstValueFrom(worker.send(job))).toMatchObject({ status: 'failed', attempts: 3 });
    expect((await store.list()).map((r) => r.id)).toEqual([job.idempotencyKey]);

    // a failed replay keeps the record, updated
    const replaySink = new HttpSink({ destination: dest, limiter, failedStore: store, storeFailures: false });
    cleanups.push(() => replaySink.close());
    expect(await replayFailedRequests({ store, sinkFor: () => replaySink })).toMatchObject({
      replayed: 1,
      delivered: 0,
      failed: 1,
      skipped: 0,
    });
    expect(await store.list()).toMatchObject([{ id: job.idempotencyKey, attempts: 6, replays: 1, lastStatus: 503 }]);

    healthy = true;
    expect(await replayFailedRequests({ store, sinkFor: () => replaySink })).toMatchObject({
      replayed: 1,
      delivered: 1,
      failed: 0,
      skipped: 0,
    });
    expect(await store.list()).toEqual([]);
    expect(hits).toHaveLength(7);
    expect(new Set(hits.map((h) => h.key))).toEqual(new Set([job.idempotencyKey]));
    expect(JSON.parse(hits.at(-1)!.body)).toEqual(job.payload);
  });
});
