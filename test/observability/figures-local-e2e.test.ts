/**
 * Dataflow figures (SPEC §10) on the embedded default, through the built command: `run --once`
 * on the local store (nothing configured but the source, audiences, a destination and a
 * dataflow) exports to a real receiver that fails every attempt of about a quarter of the
 * exports; `status --json` then shows exactly what was delivered, stored as failed, excluded and
 * rejected. A second `run --once` over more events adds to the totals: the figures are durable,
 * kept in the store folder. Beside a running `run` with an alert rule, `status` shows the figures
 * so far and the active alert, which that run raised in the same folder.
 */
import { appendFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, jsonLines, removeTempDirs, runCli, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { startReceiver, type Receiver } from '../support/receiver.js';

const RETRY = { minDelayMs: 10, maxDelayMs: 50 };
const AUD1 = { id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };
const HOUR = 3_600_000;
const PATH = '/figures-local';
const FAILING = '/figures-local-failing';

let rx: Receiver;
beforeAll(async () => {
  await ensureBuilt();
  // About a quarter of the exports fail every attempt (decided by the Idempotency-Key, so the retries fail too).
  // Every attempt to FAILING fails.
  rx = await startReceiver({ respond: (r) => ((r.path === PATH && /^[0-3]/.test(r.key)) || r.path === FAILING ? { status: 500 } : undefined) });
});
afterEach(() => stopAll());
afterAll(async () => {
  await rx?.close();
  removeTempDirs();
});

interface Report {
  runStart: string;
  rejected: { run: number; total: number };
  dataflows: Array<{ id: string; run: Record<string, number>; total: Record<string, number>; lastDeliveryAt: string | null; latencyMs: { p50: number | null; p95: number | null }; alerts: unknown[] }>;
  alerts: unknown[];
}

/** `tag`'s events: `n` profiles entering aud-1 (exported or failed), `outsiders` in no mapped audience (excluded), two bad lines (rejected). */
function events(tag: string, n: number, outsiders: number): { lines: unknown[]; valid: number } {
  const timestamp = new Date(Date.now() - 500).toISOString();
  const enter = Array.from({ length: n }, (_, i) => ({
    profileId: `${tag}-${i}`,
    timestamp,
    segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
  }));
  const out = Array.from({ length: outsiders }, (_, i) => ({ profileId: `${tag}-out-${i}`, timestamp, attributes: { person: { name: { firstName: 'X' } } } }));
  return { lines: [...enter, ...out, '{not json', JSON.stringify({ profileId: 42 })], valid: n + outsiders };
}

const summaryOf = (stdout: string): Record<string, number> => JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, number>;

async function status(cfg: string): Promise<Report> {
  const st = await runCli(['status', '--config', cfg, '--json']);
  expect(st.code, st.stderr).toBe(0);
  return JSON.parse(st.stdout) as Report;
}

/** Delivered (answered 2xx) and failed (stored) so far, from the receiver and `failed list`. */
async function outcome(cfg: string): Promise<{ delivered: number; failed: number }> {
  const delivered = rx.at(PATH).filter((r) => r.status !== undefined && r.status < 300).length;
  const list = await runCli(['failed', 'list', '--config', cfg, '--json']);
  expect(list.code, list.stderr).toBe(0);
  return { delivered, failed: jsonLines(list.stdout).length };
}

describe('status on the local store: figures equal the deliveries, durable across runs', () => {
  it('counts received, exported, excluded, failed and rejected exactly, and a second run adds to them', async () => {
    const dir = tempDir();
    const first = events('a', 40, 6);
    const file = writeEvents(dir, first.lines);
    const cfg = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      audiences: [AUD1],
      destinations: [{ id: 'dest-1', endpoint: `${rx.url}${PATH}`, retry: RETRY }],
      dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
      log: { level: 'warn' },
    });

    const started = Date.now();
    const run1 = await runCli(['run', '--config', cfg, '--once', '--json']);
    const ended = Date.now();
    expect(run1.code, run1.stderr).toBe(0);
    const o1 = await outcome(cfg);
    expect(o1.delivered).toBeGreaterThan(0);
    expect(o1.failed).toBeGreaterThan(0);
    expect(o1.delivered + o1.failed).toBe(40);
    expect(summaryOf(run1.stdout)).toMatchObject({ delivered: o1.delivered, failed: o1.failed, rejected: 2 });

    const r1 = await status(cfg);
    const f1 = r1.dataflows.find((d) => d.id === 'flow-1')!;
    expect(f1.total).toEqual({ received: first.valid, exported: o1.delivered, excluded: first.valid - o1.delivered - o1.failed, failed: o1.failed });
    expect(r1.rejected.total).toBe(2);
    const sameRun = (from: number): boolean => Math.floor(from / HOUR) === Math.floor(Date.now() / HOUR);
    if (sameRun(started)) {
      expect(f1.run).toEqual(f1.total);
      expect(r1.rejected.run).toBe(2);
      // Event time was ~0.5 s before the run: the latencies are at least that, and not minutes.
      expect(f1.latencyMs.p50).toBeGreaterThanOrEqual(500);
      expect(f1.latencyMs.p95).toBeGreaterThanOrEqual(f1.latencyMs.p50!);
      expect(f1.latencyMs.p95).toBeLessThan(120_000);
    }
    expect(Date.parse(f1.lastDeliveryAt!)).toBeGreaterThanOrEqual(started - 1_000);
    expect(Date.parse(f1.lastDeliveryAt!)).toBeLessThanOrEqual(ended + 1_000);

    const table = await runCli(['status', '--config', cfg]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`\\n\\s+total\\s+${first.valid}\\s+${o1.delivered}\\s+${first.valid - o1.delivered - o1.failed}\\s+${o1.failed}\\s+${f1.total.superseded ?? 0}\\s*\\n`));
    expect(table.stdout).toContain('2 in total');

    // More events, a second run: the totals grow by exactly what it did.
    const second = events('b', 30, 4);
    appendFileSync(file, `${second.lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n')}\n`);
    const started2 = Date.now();
    const run2 = await runCli(['run', '--config', cfg, '--once', '--json']);
    const ended2 = Date.now();
    expect(run2.code, run2.stderr).toBe(0);
    expect(summaryOf(run2.stdout)).toMatchObject({ eventsRead: second.lines.length, rejected: 2 });
    const o2 = await outcome(cfg);
    expect(o2.delivered + o2.failed).toBe(70);

    const r2 = await status(cfg);
    const f2 = r2.dataflows.find((d) => d.id === 'flow-1')!;
    const received = first.valid + second.valid;
    expect(f2.total).toEqual({ received, exported: o2.delivered, excluded: received - o2.delivered - o2.failed, failed: o2.failed });
    expect(r2.rejected.total).toBe(4);
    if (sameRun(started)) {
      expect(f2.run).toEqual(f2.total);
      expect(r2.rejected.run).toBe(4);
    }
    expect(Date.parse(f2.lastDeliveryAt!)).toBeGreaterThanOrEqual(started2 - 1_000);
    expect(Date.parse(f2.lastDeliveryAt!)).toBeLessThanOrEqual(ended2 + 1_000);
    expect(r2.alerts).toEqual([]);
  }, 120_000);

  it('beside a running run: the figures so far and the alert it raised', async () => {
    const dir = tempDir();
    writeEvents(dir, events('c', 5, 2).lines);
    const cfg = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      audiences: [AUD1],
      destinations: [{ id: 'dest-1', endpoint: `${rx.url}${FAILING}`, retry: RETRY }],
      dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
      alerts: { rules: [{ id: 'failures', kind: 'failedRequests', threshold: 3, windowMs: 60_000 }], evaluateEveryMs: 200 },
      log: { level: 'warn' },
    });
    const worker = startCli(['run', '--config', cfg]);
    await worker.waitForOutput(/alert raised/, 30_000);
    let report: Report | undefined;
    for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
      report = await status(cfg);
      if (report.dataflows[0].total.failed === 5) break;
    }
    const flow = report!.dataflows.find((d) => d.id === 'flow-1')!;
    expect(flow.total).toEqual({ received: 7, exported: 0, excluded: 2, failed: 5 });
    expect(flow.lastDeliveryAt).toBeNull();
    expect(report!.rejected.total).toBe(2);
    expect(report!.alerts).toMatchObject([{ alertId: 'failures:flow-1', rule: 'failures', kind: 'failedRequests', dataflowId: 'flow-1' }]);
    expect(flow.alerts).toEqual(report!.alerts);
    const table = await runCli(['status', '--config', cfg]);
    expect(table.stdout).toMatch(/1 active alert:\n\s+failures:flow-1\s+since /);
    worker.signal('SIGTERM');
    expect((await worker.exited).code).toBe(0);
  }, 60_000);
});
