/**
 * The console's routes on the admin server, in process: the page and its files (nothing else
 * of the disk), the security headers, actions refused without (403) or with a wrong (401)
 * token, bad queries answered 400 with the parameter named, answers redacted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConsoleApi } from '../../src/admin/console-api.js';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { Health } from '../../src/observability/health.js';
import { Metrics } from '../../src/observability/metrics.js';
import { createRedactor } from '../../src/observability/redact.js';

const TOKEN = 'routes-admin-token-71c9e2';
const SECRET = 'routes-secret-4a8d0b';
const replayed: string[][] = [];

const api: ConsoleApi = {
  dataflowIds: ['f1'],
  settings: async () => ({ dataflows: [{ id: 'f1', destinationId: 'd1', rateLimit: 10 }], source: 'file', store: 'local' }),
  failed: async (q) => ({ total: 1, items: [{ id: 'r1', lastError: `HTTP 400: echoed ${SECRET}`, q } as never] }),
  explain: async () => ({ ok: true }),
  replaySelected: async (q) => {
    replayed.push([...q.ids]);
    return { stored: 1, selected: q.ids.length, replayed: q.ids.length, delivered: q.ids.length, failed: 0, skipped: 0 };
  },
  close: async () => undefined,
};

let withToken: AdminServer;
let without: AdminServer;
const url = (a: AdminServer, p: string): string => `http://127.0.0.1:${a.port}${p}`;

beforeAll(async () => {
  const common = { port: 0, metrics: new Metrics(), health: new Health(), redact: createRedactor([SECRET, TOKEN]).value };
  withToken = await startAdminServer({ ...common, api: { console: api }, token: TOKEN });
  without = await startAdminServer({ ...common, api: { console: api } });
});
afterAll(async () => {
  await withToken?.close();
  await without?.close();
});

describe('console routes', () => {
  it('serves the page and its files only, with a strict content security policy', async () => {
    const page = await fetch(url(withToken, '/'));
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(await page.text()).toContain('/console/app.js');
    const js = await fetch(url(withToken, '/console/app.js'));
    expect([js.status, js.headers.get('content-type')]).toEqual([200, 'text/javascript; charset=utf-8']);
    for (const p of ['/console/%2e%2e%2fconsole-api.ts', '/console/..%2f..%2fpackage.json', '/console/app.ts', '/console/nope.js', '/console/']) {
      expect((await fetch(url(withToken, p))).status, p).toBe(404);
    }
  });

  it('actions: 403 without admin.token, 401 without or with a wrong bearer, done with the right one', async () => {
    expect((await fetch(url(without, '/api/failed/replay-selected?id=r1'), { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(403);
    expect((await fetch(url(withToken, '/api/failed/replay-selected?id=r1'), { method: 'POST' })).status).toBe(401);
    expect((await fetch(url(withToken, '/api/failed/replay-selected?id=r1'), { method: 'POST', headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(url(withToken, '/api/failed/replay-selected?id=r1'))).status).toBe(405);
    expect(replayed).toEqual([]);
    const ok = await fetch(url(withToken, '/api/failed/replay-selected?id=r1&id=r2'), { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { delivered: number }).delivered).toBe(2);
    expect(replayed).toEqual([['r1', 'r2']]);
    const none = await fetch(url(withToken, '/api/failed/replay-selected'), { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(none.status).toBe(400);
    expect(((await none.json()) as { error: string }).error).toMatch(/^id: /);
  });

  it('answers bad queries with 400 naming the parameter, and redacts answers', async () => {
    const bad = await fetch(url(withToken, '/api/failed/search?since=yesterday'));
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toMatch(/^since: /);
    const noProfile = await fetch(url(withToken, '/api/explain'));
    expect(noProfile.status).toBe(400);
    const list = await (await fetch(url(withToken, '/api/failed/search?status=4xx&limit=9999'))).text();
    expect(list).not.toContain(SECRET);
    expect(list).toContain('"limit":500');
    const settings = (await (await fetch(url(withToken, '/api/console'))).json()) as { actions: boolean };
    expect(settings.actions).toBe(true);
    expect(((await (await fetch(url(without, '/api/console'))).json()) as { actions: boolean }).actions).toBe(false);
    const series = (await (await fetch(url(withToken, '/api/series'))).json()) as { dataflows: Array<{ dataflowId: string }> };
    expect(series.dataflows.map((d) => d.dataflowId)).toEqual(['f1']);
  });
});
