/**
 * Dataflow figures (SPEC §10) against real servers: a pool worker (JetStream + Redis) exports
 * to a receiver that fails every attempt of about a quarter of the exports; `status --json` then shows exactly
 * what was delivered, stored as failed, excluded and rejected.
 */
import { describe, expect, it } from 'vitest';
import {
  exportingWorkload,
  publish,
  runCli,
  runOnce,
  singleFlow,
  sleep,
  spawnCli,
  useBackboneAndReceiver,
  type Backbone,
  type RecordingReceiver,
} from '../support/backbone.js';
import { freePort } from '../support/redis-server.js';

describe('status: dataflow figures equal the deliveries', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;
  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));

  it('counts received, exported, excluded, failed and rejected exactly, pool-wide in Redis', async () => {
    const setup = singleFlow({ bb, rx, name: 'figs' });
    await setup.prime();
    const now = Date.now();
    const { events } = exportingWorkload({ profiles: 6, perProfile: 5, audience: 'aud-1', prefix: 'figs', seed: 7 });
    for (const e of events) e.timestamp = new Date(now - 500).toISOString();
    // Updates of a profile in no mapped audience: received, excluded.
    const outsiders = Array.from({ length: 4 }, (_, i) => ({ profileId: `out-${i}`, timestamp: new Date(now).toISOString(), attributes: { person: { name: { firstName: 'X' } } } }));
    // Valid JSON (publish skips lines that are not), bad events: rejected.
    const broken = [{ profileId: 42 }, { timestamp: 'now' }];
    // About a quarter of the exports fail every attempt (decided by the Idempotency-Key, so retries fail too).
    rx.respond = ({ key }) => (/^[0-3]/.test(key) ? 500 : 200);
    await publish(bb, setup.cfg, 'figs.jsonl', [...events, ...outsiders, ...broken]);
    const started = Date.now();
    const summary = await runOnce(setup.cfg);
    const ended = Date.now();

    const delivered = rx.delivered(setup.path).length;
    const failedList = await runCli(['failed', 'list', '--config', setup.cfg, '--json']);
    const failed = failedList.stdout.split('\n').filter((l) => l.trim() !== '').length;
    expect(delivered).toBeGreaterThan(0);
    expect(failed).toBeGreaterThan(0);
    expect(summary).toMatchObject({ delivered, failed, rejected: 2 });

    const st = await runCli(['status', '--config', setup.cfg, '--json']);
    expect(st.code, st.stderr).toBe(0);
    const report = JSON.parse(st.stdout) as {
      rejected: { run: number; total: number };
      dataflows: Array<{ id: string; run: Record<string, number>; total: Record<string, number>; lastDeliveryAt: string | null; latencyMs: { p50: number | null; p95: number | null } }>;
      alerts: unknown[];
    };
    const flow = report.dataflows.find((d) => d.id === 'flow-1')!;
    const received = events.length + outsiders.length;
    // Each workload event makes one export: delivered, stored as failed, or superseded in the
    // retry queue by a newer export of its profile (SPEC §6); the outsiders are excluded.
    const superseded = flow.total.superseded ?? 0;
    expect(flow.total).toEqual({ received, exported: delivered, excluded: outsiders.length, failed, ...(flow.total.superseded !== undefined ? { superseded } : {}) });
    expect(delivered + failed + superseded).toBe(events.length);
    expect(flow.run).toEqual(flow.total);
    expect(report.rejected).toEqual({ run: 2, total: 2 });
    expect(Date.parse(flow.lastDeliveryAt!)).toBeGreaterThanOrEqual(started - 1_000);
    expect(Date.parse(flow.lastDeliveryAt!)).toBeLessThanOrEqual(ended + 1_000);
    // Event time was ~0.5 s before the run: the latencies are at least that, and not minutes.
    expect(flow.latencyMs.p50).toBeGreaterThanOrEqual(500);
    expect(flow.latencyMs.p95).toBeGreaterThanOrEqual(flow.latencyMs.p50!);
    expect(flow.latencyMs.p95).toBeLessThan(120_000);

    const table = await runCli(['status', '--config', setup.cfg]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`flow-1\\s+${received}\\s+${delivered}\\s+${outsiders.length}\\s+${failed}\\s+${superseded}\\s`));
    expect(table.stdout).toContain('rejected input events: 2 this run, 2 in total');

    // A running pool worker's admin server: ready (Redis, NATS, a lease), the same figures on /api/dataflows.
    const port = await freePort();
    const worker = spawnCli(['run', '--config', setup.cfg, '--metrics-port', String(port)]);
    try {
      let ready: { status: number; body: { ready?: boolean; checks?: Array<{ name: string; ok: boolean }> } } = { status: 0, body: {} };
      for (const end = Date.now() + 30_000; Date.now() < end; await sleep(200)) {
        const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
        if (!res) continue;
        ready = { status: res.status, body: (await res.json()) as typeof ready.body };
        if (res.status === 200) break;
      }
      expect(ready.status, JSON.stringify(ready.body) + worker.stderr.slice(-2000)).toBe(200);
      expect(ready.body.checks?.map((c) => c.name).sort()).toEqual(['nats', 'pool', 'redis', 'worker']);
      const api = (await (await fetch(`http://127.0.0.1:${port}/api/dataflows`)).json()) as typeof report;
      expect(api.dataflows.find((d) => d.id === 'flow-1')!.total).toEqual(flow.total);
      expect(api.rejected.total).toBe(2);
    } finally {
      worker.kill('SIGTERM');
      await worker.exited;
    }
  });
});
