/**
 * The web console (issue 16, SPEC §13) in a real browser: Debian's chromium driven by
 * playwright-core, against the built command `run --metrics-port 0` on the embedded default
 * (file source followed, local store), exporting to a real HTTP receiver that refuses some
 * profiles (HTTP 400: stored as failed). The Dataflows page shows what `status --json` prints,
 * its chart moves when more exports go out, the Failed requests page filters and pages the
 * failed requests and explains a profile, an action without the token is refused, and a
 * replay from the page (one, a selection, all of a dataflow) reaches the receiver. Screenshots
 * of each page go to .data/console-*.png.
 *
 * Nothing here waits for "long enough": every step waits for a state it can see (the worker's
 * figures, the receiver's requests, an attribute of the page), with generous deadlines.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminPortFrom, launchChromium } from '../support/browser.js';
import { ensureBuilt, removeTempDirs, ROOT, runCli, startCli, stopAll, tempDir, writeConfig, writeEvents, type RunningCli } from '../support/cli.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../support/receiver.js';

/** The browser globals used inside `page.evaluate` / `waitForFunction` (the project's TypeScript has no DOM lib). */
interface El {
  getAttribute(name: string): string | null;
  readonly textContent: string | null;
  readonly className: string;
  querySelector(selector: string): El | null;
  querySelectorAll(selector: string): Iterable<El>;
}
declare const document: { getElementById(id: string): El | null; querySelector(selector: string): El | null; querySelectorAll(selector: string): Iterable<El> };

const SECRETS = { HD_TOKEN: 'console-bearer-0f3a9c7e51d2', HD_KEY: 'console-apikey-8be14d90c7aa', HD_ADMIN: 'console-admin-5c2e7f1b9d04' };
const OK = Array.from({ length: 20 }, (_, i) => `ok-${i}`);
const BAD = Array.from({ length: 6 }, (_, i) => `bad-${i}`);
const MORE = Array.from({ length: 10 }, (_, i) => `more-${i}`);
const SHOTS = join(ROOT, '.data');

const enter = (p: string): unknown => ({
  profileId: p,
  timestamp: new Date().toISOString(),
  attributes: { person: { name: { firstName: p } } },
  segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
});

const firstName = (r: ReceivedRequest): string => (r.body as { person?: { name?: { firstName?: string } } } | undefined)?.person?.name?.firstName ?? '';
const delivered = (path: string, name: string): boolean => rx.at(path).some((r) => firstName(r) === name && r.status === 200);

let rx: Receiver;
let failing = true;
let dir: string;
let configPath: string;
let eventsPath: string;
let worker: RunningCli;
let base: string;
let browser: Browser;
let page: Page;

type Report = {
  generatedAt: string;
  runStart: string;
  rejected: { run: number; total: number };
  dataflows: Array<{ id: string; run: Record<string, number>; total: Record<string, number>; lastDeliveryAt: string | null; latencyMs: { p50: number | null; p95: number | null }; alerts: unknown[] }>;
};

async function api<T>(path: string, init?: RequestInit): Promise<{ status: number; body: T }> {
  const res = await fetch(`${base}${path}`, init);
  return { status: res.status, body: (await res.json()) as T };
}

/** Polls until `check` holds (a state the test can see); fails with the last value after `ms`. */
async function until<T>(what: string, read: () => Promise<T>, check: (v: T) => boolean, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: T | undefined;
  for (;;) {
    last = await read();
    if (check(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not reached in ${ms} ms; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function shot(name: string): Promise<void> {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `console-${name}.png`), fullPage: true });
}

/** Opens a page of the console and waits until it has rendered from the API. */
async function open(hash: string, ready: string): Promise<void> {
  await page.goto(`${base}/${hash}`);
  await page.waitForSelector(`body[data-ready="${ready}"]`, { timeout: 30_000 });
}

/** What the Dataflows page shows: its figures read from the rendered page (values and text). */
async function pageFigures(): Promise<{ generatedAt: string; runStart: string; rejected: { run: number; total: number }; flows: Array<Record<string, unknown>> }> {
  return page.evaluate(() => {
    const num = (e: El | null): number => Number(e?.getAttribute('data-value'));
    const text = (e: El | null): string => (e?.textContent ?? '').replace(/,/g, '');
    const root = document.getElementById('dataflows')!;
    const flows = [...document.querySelectorAll('section[data-flow]')].map((s) => {
      const fig: Record<string, unknown> = { id: s.getAttribute('data-flow') };
      for (const cell of s.querySelectorAll('[data-figure]')) {
        const k = cell.getAttribute('data-figure')!;
        fig[k] = num(cell);
        fig[`${k}:text`] = text(cell);
      }
      fig.lastDeliveryAt = s.querySelector('[data-last-delivery]')?.getAttribute('data-last-delivery') || null;
      fig.lastDeliveryText = s.querySelector('[data-last-delivery]')?.textContent;
      for (const q of ['p50', 'p95']) {
        const v = s.querySelector(`[data-latency="${q}"]`)?.getAttribute('data-value');
        fig[q] = v === '' || v === undefined || v === null ? null : Number(v);
      }
      fig.alerts = Number(s.querySelector('[data-alerts]')?.getAttribute('data-alerts'));
      fig.rateLimit = Number(s.querySelector('[data-rate-limit]')?.getAttribute('data-rate-limit'));
      return fig;
    });
    return {
      generatedAt: root.getAttribute('data-generated-at') ?? '',
      runStart: (document.querySelector('.summary')?.textContent ?? '').replace(/^Run since (\S+).*$/s, '$1'),
      rejected: { run: num(document.querySelector('[data-rejected="run"]')), total: num(document.querySelector('[data-rejected="total"]')) },
      flows,
    };
  });
}

beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver({ respond: (r) => (failing && firstName(r).startsWith('bad') ? { status: 400, body: `refused ${firstName(r)}` } : undefined) });
  dir = tempDir('hd-e2e-console-');
  eventsPath = writeEvents(dir, [...[...OK, ...BAD].map(enter), '{"profileId": ']); // one rejected line
  const destination = (id: string, path: string) => ({
    id,
    endpoint: `${rx.url}${path}`,
    headers: 'x-api-key:${HD_KEY},x-tenant:acme',
    auth: { type: 'bearer', token: '${HD_TOKEN}' },
    retry: { minDelayMs: 10, maxDelayMs: 30 },
  });
  configPath = writeConfig(dir, {
    source: { kind: 'file', path: eventsPath },
    store: { kind: 'local', path: join(dir, 'state') },
    failedRequests: { kind: 'local' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [destination('dest-a', '/a'), destination('dest-b', '/b')],
    dataflows: [
      { id: 'flow-a', destination: 'dest-a', audiences: ['aud-1'], attributes: ['person.name.firstName'], rateLimit: 50 },
      { id: 'flow-b', destination: 'dest-b', audiences: ['aud-1'], attributes: ['person.name.firstName'], rateLimit: 1000 },
    ],
    admin: { token: '${HD_ADMIN}' },
  });
  worker = startCli(['run', '--config', configPath, '--metrics-port', '0'], { env: SECRETS });
  await worker.waitForOutput(/admin server listening/, 30_000);
  base = `http://127.0.0.1:${adminPortFrom(worker.stderr)}`;
  // every export settled (20 delivered and 6 stored as failed per dataflow), the bad line rejected
  await until(
    'the first exports',
    async () => (await api<Report>('/api/dataflows')).body,
    (r) => r.rejected.total === 1 && r.dataflows.every((d) => d.total.exported === OK.length && d.total.failed === BAD.length),
  );
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  if (worker) {
    worker.signal('SIGTERM');
    await worker.exited;
  }
  stopAll();
  await rx?.close();
  removeTempDirs();
});

describe('the console in a real browser (issue 16)', () => {
  it('the Dataflows page shows the figures of status --json', async () => {
    await open('#/dataflows', 'dataflows');
    // status reads the store beside the running worker; the page reads the worker's API. Both
    // are read with nothing moving (every export settled); an hour boundary between the two
    // reads changes the run, so the two are compared within one run.
    let status: Report | undefined;
    let shown: Awaited<ReturnType<typeof pageFigures>> | undefined;
    for (let i = 0; i < 3; i++) {
      const r = await runCli(['status', '--json', '--config', configPath], { env: SECRETS });
      expect(r.code, r.stderr).toBe(0);
      status = JSON.parse(r.stdout) as Report;
      const after = status.generatedAt;
      await page.waitForFunction((t) => (document.getElementById('dataflows')?.getAttribute('data-generated-at') ?? '') > t, after, { timeout: 20_000 });
      shown = await pageFigures();
      if (shown.runStart === status.runStart) break;
    }
    expect(shown!.runStart).toBe(status!.runStart);
    expect(shown!.rejected).toEqual(status!.rejected);
    expect(shown!.flows.map((f) => f.id)).toEqual(status!.dataflows.map((d) => d.id));
    for (const d of status!.dataflows) {
      const f = shown!.flows.find((x) => x.id === d.id)!;
      for (const scope of ['run', 'total'] as const) {
        for (const k of ['received', 'exported', 'excluded', 'failed']) {
          expect(f[`${scope}.${k}`], `${d.id} ${scope}.${k}`).toBe(d[scope][k]);
          expect(f[`${scope}.${k}:text`], `${d.id} ${scope}.${k} as shown`).toBe(String(d[scope][k]));
        }
      }
      expect(f.lastDeliveryAt).toBe(d.lastDeliveryAt);
      expect(f.lastDeliveryText).toBe(d.lastDeliveryAt);
      expect(f.p50).toBe(d.latencyMs.p50);
      expect(f.p95).toBe(d.latencyMs.p95);
      expect(f.alerts).toBe(d.alerts.length);
    }
    // what was set up, so the comparison is not between two empty answers
    expect(status!.dataflows.map((d) => [d.total.exported, d.total.failed])).toEqual([
      [OK.length, BAD.length],
      [OK.length, BAD.length],
    ]);
    expect(status!.rejected.total).toBe(1);
    expect(shown!.flows.map((f) => f.rateLimit)).toEqual([50, 1000]);
    // no pool here: the section shows the one worker's source and its lag (/api/partitions, mode single)
    expect(await page.getAttribute('#pool', 'data-pool')).toBe('single');
    await page.waitForSelector('#pool [data-lag="pending"]', { timeout: 15_000 });
    expect(await page.textContent('#pool h2')).toContain('Source: file');
    await shot('dataflows');
  }, 60_000);

  it('the chart moves when more exports go out', async () => {
    await open('#/dataflows', 'dataflows');
    const chart = '[data-chart="flow-a:rate"]';
    const before = Number(await page.getAttribute(chart, 'data-sum-exported'));
    appendFileSync(eventsPath, `${MORE.map((p) => JSON.stringify(enter(p))).join('\n')}\n`);
    await rx.waitFor(() => MORE.every((p) => delivered('/a', p) && delivered('/b', p)), 60_000);
    // the page refreshes itself: wait for the chart to hold the new exports
    await page.waitForFunction(([sel, b]) => Number(document.querySelector(sel as string)?.getAttribute('data-sum-exported')) > (b as number), [chart, before] as const, { timeout: 30_000 });
    const after = Number(await page.getAttribute(chart, 'data-sum-exported'));
    expect(after).toBeGreaterThan(before);
    // the per-second samples the chart draws, from the API: the new exports are in them
    const series = await api<{ dataflows: Array<{ dataflowId: string; exported: number[] }> }>('/api/series?dataflow=flow-a');
    expect(series.body.dataflows.map((d) => d.dataflowId)).toEqual(['flow-a']);
    expect(series.body.dataflows[0].exported.some((v) => v > 0)).toBe(true);
    expect(await page.locator(`${chart} path.line.ok`).count()).toBe(1);
    await shot('dataflows-live');
  }, 90_000);

  it('the Failed requests page lists, filters, pages and explains', async () => {
    await open('#/failed', 'failed');
    const rows = (): Promise<number> => page.locator('tr[data-failed-id]').count();
    expect(await page.getAttribute('#page-info', 'data-total')).toBe(String(BAD.length * 2));
    expect(await rows()).toBe(BAD.length * 2);
    expect(await page.locator('tr[data-failed-id] [data-status="400"]').count()).toBe(BAD.length * 2);
    expect(await page.locator('td.error-text').first().textContent()).toMatch(/^HTTP 400: refused bad-\d$/);
    await shot('failed');

    await page.selectOption('select[name="dataflow"]', 'flow-a');
    await page.waitForFunction(() => document.getElementById('page-info')?.getAttribute('data-total') === '6');
    expect(await page.locator('tr[data-dataflow="flow-b"]').count()).toBe(0);
    expect(await rows()).toBe(BAD.length);
    await page.fill('input[name="status"]', '5xx');
    await page.press('input[name="status"]', 'Enter');
    await page.waitForFunction(() => document.getElementById('page-info')?.getAttribute('data-total') === '0');
    await page.fill('input[name="status"]', '400');
    await page.press('input[name="status"]', 'Enter');
    await page.waitForFunction(() => document.getElementById('page-info')?.getAttribute('data-total') === '6');
    await page.selectOption('select[name="range"]', '15m');
    await page.waitForFunction(() => document.getElementById('page-info')?.getAttribute('data-total') === '6');
    // the same filters through the JSON API (what the page uses), with a page of 4
    const paged = await api<{ total: number; items: Array<{ profileId: string }> }>('/api/failed/search?dataflow=flow-a&status=4xx&limit=4&offset=4');
    expect(paged.body.total).toBe(6);
    expect(paged.body.items).toHaveLength(2);
    const future = await api<{ total: number }>(`/api/failed/search?since=${encodeURIComponent(new Date(Date.now() + 3_600_000).toISOString())}`);
    expect(future.body.total).toBe(0);

    // a profile's explain view
    await page.click('tr[data-profile="bad-0"] a');
    await page.waitForSelector('body[data-ready="explain"]');
    expect(await page.getAttribute('[data-explain-flow="flow-a"]', 'data-verdict')).toBe('export');
    const request = (await page.textContent('[data-explain-flow="flow-a"] pre.request')) ?? '';
    expect(request).toContain(`POST ${rx.url}/a`);
    expect(request).toContain('"firstName": "bad-0"');
    expect(request).toMatch(/authorization: Bearer \[REDACTED\]|authorization: \[REDACTED\]/);
    expect(request).toMatch(/x-api-key: \[REDACTED\]/);
    await shot('explain');
    const missing = await api<{ code: string }>('/api/explain?profile=nobody');
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('ERR_PROFILE_NOT_FOUND');
  }, 60_000);

  it('an action without the token is refused, from the page and with curl-like requests', async () => {
    const before = rx.requests.length;
    await open('#/failed', 'failed');
    await page.click('tr[data-profile="bad-0"][data-dataflow="flow-a"] [data-replay-one]');
    await page.waitForSelector('#action-result.error');
    expect(await page.getAttribute('#action-result', 'data-status')).toBe('401');
    expect(await page.textContent('#action-result')).toMatch(/refused \(401\)/);
    const anyId = (await api<{ items: Array<{ id: string }> }>('/api/failed/search')).body.items[0].id;
    const wrong = { authorization: 'Bearer not-the-token' };
    expect((await fetch(`${base}/api/failed/replay-selected?id=${anyId}`, { method: 'POST' })).status).toBe(401);
    expect((await fetch(`${base}/api/failed/replay-selected?id=${anyId}`, { method: 'POST', headers: wrong })).status).toBe(401);
    expect((await fetch(`${base}/api/failed/replay?dataflow=flow-a`, { method: 'POST', headers: wrong })).status).toBe(401);
    expect((await fetch(`${base}/api/failed/replay-selected?id=${anyId}`)).status).toBe(405);
    // nothing was sent, nothing left the store
    expect(rx.requests.length).toBe(before);
    expect((await api<{ total: number }>('/api/failed/search')).body.total).toBe(BAD.length * 2);
  }, 60_000);

  it('a replay from the page delivers: one, a selection, then all of a dataflow', async () => {
    failing = false;
    await open('#/failed', 'failed');
    await page.fill('#token', SECRETS.HD_ADMIN);
    await page.click('#token-save');
    await page.waitForFunction(() => document.getElementById('token-state')?.textContent === 'set for this tab');
    // kept in this tab's sessionStorage, never in the URL or the page
    expect(page.url()).not.toContain(SECRETS.HD_ADMIN);
    expect(await page.content()).not.toContain(SECRETS.HD_ADMIN);

    // one
    await page.click('tr[data-profile="bad-0"][data-dataflow="flow-a"] [data-replay-one]');
    await page.waitForSelector('#action-result.ok');
    expect(await page.textContent('#action-result')).toMatch(/delivered 1\b/);
    await rx.waitFor(() => delivered('/a', 'bad-0'), 30_000);
    expect(delivered('/b', 'bad-0')).toBe(false);
    expect(rx.at('/a').find((r) => firstName(r) === 'bad-0' && r.status === 200)?.headers.authorization).toBe(`Bearer ${SECRETS.HD_TOKEN}`);

    // a selection of two
    await page.selectOption('select[name="dataflow"]', 'flow-a');
    await page.waitForFunction(() => document.getElementById('page-info')?.getAttribute('data-total') === '5');
    // Selecting updates the page in place, at once: no request, the count right after each click.
    const fetched: string[] = [];
    const onRequest = (r: { url(): string }): void => void fetched.push(r.url());
    page.on('request', onRequest);
    for (const [i, p] of ['bad-1', 'bad-2'].entries()) {
      await page.check(`tr[data-profile="${p}"] input[type="checkbox"]`);
      expect(await page.textContent('#replay-selected')).toBe(`Replay selected (${i + 1})`);
    }
    await page.check('th input[type="checkbox"]');
    expect(await page.textContent('#replay-selected')).toBe('Replay selected (5)');
    expect(await page.locator('tbody input[type="checkbox"]:checked').count()).toBe(5);
    await page.uncheck('th input[type="checkbox"]');
    expect(await page.textContent('#replay-selected')).toBe('Replay selected (0)');
    expect(await page.isDisabled('#replay-selected')).toBe(true);
    for (const p of ['bad-1', 'bad-2']) await page.check(`tr[data-profile="${p}"] input[type="checkbox"]`);
    expect(await page.textContent('#replay-selected')).toBe('Replay selected (2)');
    expect(await page.isChecked('th input[type="checkbox"]')).toBe(false);
    page.off('request', onRequest);
    expect(fetched).toEqual([]);
    await page.click('#replay-selected');
    await page.waitForFunction(() => document.getElementById('action-result')?.className === 'ok' && document.getElementById('page-info')?.getAttribute('data-total') === '3');
    expect(await page.textContent('#action-result')).toMatch(/delivered 2\b/);
    expect(delivered('/a', 'bad-1') && delivered('/a', 'bad-2')).toBe(true);

    // all of flow-a; flow-b's stay
    await page.click('#replay-all');
    await page.waitForFunction(() => document.getElementById('page-info')?.getAttribute('data-total') === '0');
    expect(await page.textContent('#action-result')).toMatch(/delivered 3\b/);
    expect(BAD.every((p) => delivered('/a', p))).toBe(true);
    expect(BAD.some((p) => delivered('/b', p))).toBe(false);
    expect((await api<{ total: number }>('/api/failed/search?dataflow=flow-b')).body.total).toBe(BAD.length);
    await shot('failed-replayed');
  }, 90_000);
});
