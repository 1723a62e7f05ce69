/**
 * The admin server against real servers: /readyz follows Redis and NATS going away and coming
 * back, /healthz fails when the event loop was stuck, /metrics is prom-client's text, the API
 * pages failed requests and refuses actions without the admin token.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { Health } from '../../src/observability/health.js';
import { checksFor } from '../../src/observability/health-probes.js';
import { Metrics } from '../../src/observability/metrics.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- test reads arbitrary JSON answers
async function get(admin: AdminServer, path: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(`http://127.0.0.1:${admin.port}${path}`, init);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // text
  }
  return { status: res.status, body };
}

/** Polls `path` until its status is `status`; resolves with the ms it took. */
async function waitForStatus(admin: AdminServer, path: string, status: number, withinMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const r = await get(admin, path);
    if (r.status === status) return Date.now() - t0;
    if (Date.now() - t0 > withinMs) throw new Error(`${path} still ${r.status} after ${withinMs} ms: ${JSON.stringify(r.body)}`);
    await sleep(100);
  }
}

describe('admin server: readiness follows the backbone', () => {
  let redis: RedisServer;
  let nats: NatsServer;
  let admin: AdminServer;
  let health: Health;

  beforeAll(async () => {
    [redis, nats] = await Promise.all([startRedisServer(), startNatsServer()]);
    health = new Health();
    const config = {
      source: { kind: 'jetstream' as const, servers: [nats.url] },
      store: { kind: 'redis' as const, url: redis.url, keyPrefix: 'hd:' },
      failedRequests: { kind: 'jetstream' as const, servers: [nats.url] },
    };
    for (const c of checksFor(config as never, { intervalMs: 250 })) health.add(c);
    health.ready();
    admin = await startAdminServer({ port: 0, metrics: new Metrics(), health });
  });
  afterAll(async () => {
    await admin?.close();
    await health?.close();
    await Promise.allSettled([redis?.stop(), nats?.stop()]);
  });

  it('is ready with Redis and NATS up, 503 naming redis within seconds of Redis going away, ready again when it returns', async () => {
    await waitForStatus(admin, '/readyz', 200, 5_000);
    const up = await get(admin, '/readyz');
    expect(up.body).toMatchObject({ ready: true });
    expect(up.body.checks.map((c: { name: string }) => c.name).sort()).toEqual(['nats', 'redis', 'worker']);

    const restarting = redis.restart({ downMs: 4_000 });
    const wentDown = await waitForStatus(admin, '/readyz', 503, 3_500);
    const down = await get(admin, '/readyz');
    expect(down.body.ready).toBe(false);
    expect(down.body.reason).toMatch(/^redis: /);
    expect(down.body.checks.find((c: { name: string }) => c.name === 'nats').ok).toBe(true);
    await restarting;
    const cameBack = await waitForStatus(admin, '/readyz', 200, 5_000);
    expect(wentDown).toBeLessThan(3_500);
    expect(cameBack).toBeLessThan(5_000);
  });

  it('goes 503 naming nats when NATS goes away, and back to 200 when it returns', async () => {
    await waitForStatus(admin, '/readyz', 200, 5_000);
    nats.kill();
    await waitForStatus(admin, '/readyz', 503, 4_000);
    const down = await get(admin, '/readyz');
    expect(down.body.reason).toMatch(/nats: nats nats:\/\/127\.0\.0\.1:\d+ does not answer/);
    await nats.restart();
    await waitForStatus(admin, '/readyz', 200, 8_000);
  });
});

describe('admin server: liveness, metrics, API', () => {
  let admin: AdminServer | undefined;
  let health: Health | undefined;
  afterEach(async () => {
    await admin?.close();
    await health?.close();
    admin = undefined;
    health = undefined;
  });

  it('/healthz fails after the event loop was stuck, and recovers', async () => {
    health = new Health({ intervalMs: 50, stallMs: 300, holdMs: 1_000 });
    health.ready();
    admin = await startAdminServer({ port: 0, metrics: new Metrics(), health });
    await sleep(200);
    expect((await get(admin, '/healthz')).status).toBe(200);
    const until = Date.now() + 800;
    while (Date.now() < until) {
      // the loop is stuck
    }
    const stuck = await get(admin, '/healthz');
    expect(stuck.status).toBe(503);
    expect(stuck.body.reason).toMatch(/event loop was stuck for \d+ ms/);
    await sleep(1_300);
    expect((await get(admin, '/healthz')).status).toBe(200);
  });

  it('is not ready while starting or stopping', async () => {
    health = new Health();
    admin = await startAdminServer({ port: 0, metrics: new Metrics(), health });
    expect((await get(admin, '/readyz')).body).toMatchObject({ ready: false, reason: 'worker: starting' });
    health.ready();
    expect((await get(admin, '/readyz')).status).toBe(200);
    health.stop();
    expect((await get(admin, '/readyz')).body).toMatchObject({ ready: false, reason: 'worker: stopping' });
  });

  it('serves prom-client text on /metrics', async () => {
    health = new Health();
    const metrics = new Metrics({ defaultMetrics: true });
    metrics.exportSettled('flow-1', 'delivered', 1, 0.1);
    admin = await startAdminServer({ port: 0, metrics, health });
    const res = await fetch(`http://127.0.0.1:${admin.port}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain('http_destination_exports_total{dataflow="flow-1",result="delivered"} 1');
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);
  });

  it('pages /api/failed, masks secrets, and guards the replay action with the admin token', async () => {
    health = new Health();
    const items = Array.from({ length: 7 }, (_, i) => ({ n: i, note: i === 3 ? 'contains s3cret-value' : 'x' }));
    let replays = 0;
    admin = await startAdminServer({
      port: 0,
      metrics: new Metrics(),
      health,
      token: 'the-admin-token',
      redact: (v) => JSON.parse(JSON.stringify(v).replaceAll('s3cret-value', '****')),
      api: {
        failed: async (q) => ({ total: items.length, items: items.slice(q.offset, q.offset + q.limit) }),
        replay: async () => ({ replayed: ++replays }),
      },
    });
    const page = await get(admin, '/api/failed?offset=2&limit=3');
    expect(page.body).toMatchObject({ total: 7, offset: 2, limit: 3 });
    expect(page.body.items.map((i: { n: number }) => i.n)).toEqual([2, 3, 4]);
    expect(JSON.stringify(page.body)).not.toContain('s3cret-value');

    expect((await get(admin, '/api/failed/replay', { method: 'POST' })).status).toBe(401);
    expect((await get(admin, '/api/failed/replay', { method: 'POST', headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect(replays).toBe(0);
    const ok = await get(admin, '/api/failed/replay', { method: 'POST', headers: { authorization: 'Bearer the-admin-token' } });
    expect(ok).toEqual({ status: 200, body: { replayed: 1 } });
    expect((await get(admin, '/api/failed/replay')).status).toBe(405);
    expect((await get(admin, '/api/nothing')).status).toBe(404);
  });

  it('refuses actions when no admin token is configured', async () => {
    health = new Health();
    admin = await startAdminServer({ port: 0, metrics: new Metrics(), health, api: { replay: async () => ({}) } });
    const r = await get(admin, '/api/failed/replay', { method: 'POST', headers: { authorization: 'Bearer anything' } });
    expect(r.status).toBe(403);
  });
});
