/**
 * The console's pool section and alerts in a real browser (chromium), against an admin server
 * whose API answers `/api/partitions` (what a pool worker serves: partitions, owners, lag) and
 * has an active alert: the page shows the partitions' tables and the alert with since when; a
 * failing `/api/partitions` is said on the page, not hidden.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAdminServer, type AdminServer } from '../../src/admin/server.js';
import { Health } from '../../src/observability/health.js';
import { figuresReport, zeroCounts } from '../../src/observability/figures.js';
import { Metrics } from '../../src/observability/metrics.js';
import { launchChromium } from '../support/browser.js';
import { ROOT } from '../support/cli.js';

const since = '2026-12-05T10:00:05.000Z';
const alert = { alertId: 'failures:flow-1', rule: 'failures', kind: 'failedRequests', dataflowId: 'flow-1', value: 3, threshold: 1, message: '3 requests stored as failed in the last 60 s', since };
const pool = {
  pool: 'hd-pool',
  workers: [
    { id: 'worker-a', live: true, partitions: [0, 1] },
    { id: 'worker-b', live: true, partitions: [2] },
  ],
  partitions: [
    { partition: 0, owner: 'worker-a', epoch: 4, ttlMs: 9000 },
    { partition: 1, owner: 'worker-a', epoch: 4, ttlMs: 8000 },
    { partition: 2, owner: 'worker-b', epoch: 2, ttlMs: 9500 },
  ],
  lag: [
    { partition: 0, pending: 120, ackPending: 4 },
    { partition: 1, pending: 0, ackPending: 0 },
    { partition: 2, pending: 7, ackPending: 1 },
  ],
};

let partitionsFail = false;
let admin: AdminServer;
let browser: Browser;

beforeAll(async () => {
  const run = { ...zeroCounts(), received: 10, exported: 7, excluded: 1, failed: 2 };
  admin = await startAdminServer({
    port: 0,
    metrics: new Metrics(),
    health: new Health(),
    api: {
      dataflows: async () =>
        figuresReport(
          { rejected: { run: 0, total: 0 }, flows: { 'flow-1': { run, total: run, runLatency: {} } } },
          { dataflowIds: ['flow-1'], runStart: Date.parse('2026-12-05T10:00:00Z'), now: Date.now(), alerts: [alert] },
        ),
      partitions: async () => {
        if (partitionsFail) throw new Error('redis is away');
        return pool;
      },
    },
  });
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await admin?.close();
});

describe('the console in a pool (issue 16)', () => {
  it('shows the partitions, their owners and lag, and the active alert with since when', async () => {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    await page.goto(`http://127.0.0.1:${admin.port}/`);
    await page.waitForSelector('body[data-ready="dataflows"]');
    expect(await page.getAttribute('#pool', 'data-pool')).toBe('available');
    const table = (name: string) => page.locator(`table[data-pool-table="${name}"] tbody tr`);
    expect(await table('partitions').count()).toBe(3);
    expect(await table('lag').count()).toBe(3);
    expect(await table('workers').count()).toBe(2);
    expect(await table('partitions').nth(2).textContent()).toContain('worker-b');
    expect(await table('lag').nth(0).textContent()).toContain('120');
    expect(await page.textContent('#pool')).toContain('hd-pool');
    const shown = await page.textContent('[data-flow="flow-1"] [data-alert="failures:flow-1"]');
    expect(shown).toContain(`since ${since}`);
    expect(shown).toContain('3 requests stored as failed in the last 60 s');
    mkdirSync(join(ROOT, '.data'), { recursive: true });
    await page.screenshot({ path: join(ROOT, '.data', 'console-pool.png'), fullPage: true });

    partitionsFail = true;
    await page.waitForSelector('#pool[data-pool="error"]', { timeout: 20_000 });
    await page.close();
  }, 60_000);
});
