/**
 * The windowed alert rules through the built command against a real receiver (the delay rule:
 * delay-e2e.test.ts): `latencyP95` fires for a dataflow whose receiver answers slowly (every
 * answer held 1.5 s, so every latency is above the 1-s threshold whatever the machine's speed),
 * `failureRate` for one whose receiver fails every attempt (once 20 exports ended), and
 * neither for the other dataflow.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRecordingReceiver, type RecordingReceiver } from '../support/backbone.js';
import { parseLogs } from '../support/pool.js';
import { ensureBuilt, removeTempDirs, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';

const AUD1 = { id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };

describe('latencyP95 and failureRate against a slow and a failing receiver', () => {
  let rx: RecordingReceiver;
  beforeAll(async () => {
    await ensureBuilt();
    rx = await startRecordingReceiver();
    rx.respond = ({ path }) => (path === '/rules-fail' ? 500 : new Promise<number>((r) => setTimeout(() => r(200), 1_500)));
  });
  afterAll(async () => {
    stopAll();
    await rx?.close();
    removeTempDirs();
  });

  it('raises slow for the slow dataflow and error-rate for the failing one, each once', async () => {
    const dir = tempDir();
    const timestamp = new Date().toISOString();
    writeEvents(dir, Array.from({ length: 24 }, (_, i) => ({ profileId: `r-${i}`, timestamp, segmentMembership: { ups: { 'aud-1': { status: 'realized' } } } })));
    const retry = { minDelayMs: 10, maxDelayMs: 20 };
    const cfg = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      audiences: [AUD1],
      destinations: [
        { id: 'slow', endpoint: `${rx.url}/rules-slow`, timeoutMs: 60_000, retry },
        { id: 'fail', endpoint: `${rx.url}/rules-fail`, retry },
      ],
      dataflows: [
        { id: 'flow-slow', destination: 'slow', audiences: ['aud-1'] },
        { id: 'flow-fail', destination: 'fail', audiences: ['aud-1'] },
      ],
      alerts: {
        rules: [
          { id: 'slow', kind: 'latencyP95', thresholdMs: 1_000, windowMs: 60_000 },
          { id: 'error-rate', kind: 'failureRate', threshold: 0.05, windowMs: 60_000 },
        ],
        evaluateEveryMs: 200,
      },
      log: { level: 'info' },
    });
    const worker = startCli(['run', '--config', cfg]);
    const raised = (): string[] => parseLogs(worker.stderr).filter((l) => l.msg.startsWith('alert raised')).map((l) => String(l.alertId)).sort();
    for (const end = Date.now() + 60_000; raised().length < 2 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
    // Every export settled: nothing else can fire afterwards; a few more evaluations (200 ms each).
    await rx.waitFor(() => rx.delivered('/rules-slow').length === 24, 60_000, 'the slow deliveries');
    await new Promise((r) => setTimeout(r, 1_000));
    worker.signal('SIGTERM');
    const { code, stderr } = await worker.exited;
    expect(code, stderr.slice(-2_000)).toBe(0);
    expect(raised()).toEqual(['error-rate:flow-fail', 'slow:flow-slow']);
    const slow = parseLogs(stderr).find((l) => l.alertId === 'slow:flow-slow')!;
    expect(slow.value as number).toBeGreaterThanOrEqual(1_500);
    const rate = parseLogs(stderr).find((l) => l.alertId === 'error-rate:flow-fail')!;
    expect(rate.value).toBe(1);
  }, 120_000);
});
