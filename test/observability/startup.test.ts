/**
 * Startup that tells the truth, through the built command: a worker that cannot reach NATS
 * (or Redis) retries for worker.startupTimeoutMs, logging each try, then exits 1 (nothing it opened keeps
 * it alive, the admin server included); a non-loopback admin bind without admin.token is a
 * usage error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedPort } from '../support/receiver.js';
import { ensureBuilt, logLines, removeTempDirs, runCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';

const base = (natsUrl: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  source: { kind: 'jetstream', servers: natsUrl },
  store: { kind: 'memory' },
  audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
  destinations: [{ id: 'dest-1', endpoint: 'http://127.0.0.1:9/x' }],
  dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
  ...extra,
});

describe('startup', () => {
  beforeAll(() => ensureBuilt());
  afterAll(() => {
    stopAll();
    removeTempDirs();
  });

  it('exits 1 after worker.startupTimeoutMs when NATS does not answer, logging each try', async () => {
    const port = await closedPort();
    const dir = tempDir();
    const cfg = writeConfig(dir, base(`nats://127.0.0.1:${port}`, { worker: { startupTimeoutMs: 2_500 } }));
    // Module loading alone takes a few seconds on a loaded CI machine; what matters is that it exits.
    const r = await runCli(['run', '--config', cfg, '--metrics-port', '0'], { timeoutMs: 40_000 });
    expect(r.code, r.stderr).toBe(1);
    expect(r.durationMs).toBeGreaterThanOrEqual(2_500);
    expect(r.durationMs).toBeLessThan(30_000);
    const tries = logLines(r.stderr).filter((l) => l.msg === 'startup: backbone not reachable yet; retrying');
    expect(tries.length).toBeGreaterThanOrEqual(2);
    expect(r.stderr).toMatch(/error \(ERR_STARTUP\): gave up after \d+ tries in 2500 ms \(worker\.startupTimeoutMs\): cannot connect to NATS/);
  });

  it('exits 1 after worker.startupTimeoutMs when Redis does not answer, logging each try', async () => {
    const port = await closedPort();
    const dir = tempDir();
    writeEvents(dir, []);
    const cfg = writeConfig(dir, {
      ...base('nats://127.0.0.1:4222'),
      source: { kind: 'file', path: 'events.jsonl' },
      store: { kind: 'redis', url: `redis://127.0.0.1:${port}` },
      worker: { startupTimeoutMs: 2_500 },
    });
    const r = await runCli(['run', '--config', cfg, '--metrics-port', '0'], { timeoutMs: 40_000 });
    expect(r.code, r.stderr).toBe(1);
    expect(r.durationMs).toBeGreaterThanOrEqual(2_500);
    expect(logLines(r.stderr).filter((l) => l.msg === 'startup: backbone not reachable yet; retrying').length).toBeGreaterThanOrEqual(2);
    expect(r.stderr).toMatch(/error \(ERR_STARTUP\): gave up after \d+ tries in 2500 ms \(worker\.startupTimeoutMs\): cannot reach redis at redis:\/\/127\.0\.0\.1:\d+/);
  });

  it('refuses --metrics-host beyond loopback without admin.token (exit 2), and accepts it with one', async () => {
    const dir = tempDir();
    const cfg = writeConfig(dir, base('nats://127.0.0.1:1', { worker: { startupTimeoutMs: 0 } }));
    const r = await runCli(['run', '--config', cfg, '--metrics-port', '0', '--metrics-host', '0.0.0.0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--metrics-host 0\.0\.0\.0: .*needs admin\.token/);
    const withToken = writeConfig(dir, base('nats://127.0.0.1:1', { worker: { startupTimeoutMs: 0 }, admin: { token: '${ADMIN_TOKEN}' } }), 'with-token.yaml');
    const ok = await runCli(['run', '--config', withToken, '--metrics-port', '0', '--metrics-host', '0.0.0.0'], { env: { ADMIN_TOKEN: 'tok-123456' } });
    // Past the bind check: it listens, then gives up on NATS (timeout 0) with exit 1.
    expect(ok.code, ok.stderr).toBe(1);
    expect(ok.stderr).toMatch(/"msg":"admin server listening"/);
    expect(ok.stderr).not.toContain('tok-123456');
  });
});
