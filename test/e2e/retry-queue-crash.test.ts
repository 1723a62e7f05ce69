/**
 * End to end (issue 13): the retry queue is durable. A `run` acknowledges messages whose
 * exports failed once and were queued; it is killed with SIGKILL while they wait. The next
 * `run --once` on the same local store delivers every one of them: nothing acknowledged is lost.
 * Waits on an observable state (the run's queued-exports counter), never on timing.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, removeTempDirs, runCli, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { closedPort, startReceiver, type Receiver } from '../support/receiver.js';

const N = 200;
let rx: Receiver;
let down = true;

beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver({ respond: () => (down ? { status: 503 } : undefined) });
}, 120_000);
afterEach(() => stopAll());
afterAll(async () => {
  await rx.close();
  removeTempDirs();
});

async function queuedCount(port: number): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('http_destination_exports_queued_total{'));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  } catch {
    return 0;
  }
}

describe('retry queue durability', () => {
  it('exports queued (their messages acked) before a SIGKILL are delivered by the next run', async () => {
    const dir = tempDir();
    writeEvents(
      dir,
      Array.from({ length: N }, (_, i) => ({
        profileId: `p-${i}`,
        eventId: `e-${i}`,
        attributes: { name: `n${i}` },
        segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
      })),
    );
    // Long backoff: the queued exports are still waiting when the worker is killed.
    const config = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
      destinations: [{ id: 'dest', endpoint: `${rx.url}/in`, retry: { minDelayMs: 20_000, maxDelayMs: 20_000 } }],
      dataflows: [{ id: 'flow', destination: 'dest', audiences: ['aud-1'], attributes: ['name'] }],
    });
    const port = await closedPort();
    const cli = startCli(['run', '--config', config, '--metrics-port', String(port)], { cwd: dir, timeoutMs: 120_000 });
    const deadline = Date.now() + 100_000;
    while ((await queuedCount(port)) < N) {
      if (Date.now() > deadline) throw new Error(`queued ${await queuedCount(port)} of ${N}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    cli.signal('SIGKILL');
    await cli.exited;
    expect(new Set(rx.at('/in').map((r) => r.key)).size).toBe(N);
    expect(rx.at('/in').every((r) => r.status === 503)).toBe(true);

    // The endpoint is back: the next run drains the queue (lines whose read position was not yet
    // written when the worker was killed are read again and found settled: nothing twice).
    down = false;
    const again = await runCli(['run', '--config', config, '--once', '--json'], { cwd: dir, timeoutMs: 120_000 });
    expect(again.code, again.stderr).toBe(0);
    const summary = JSON.parse(again.stdout.trim()) as { eventsRead: number; delivered: number; failed: number };
    expect(summary).toMatchObject({ delivered: N, failed: 0 });
    const delivered = rx.at('/in').filter((r) => r.status === 200);
    expect(new Set(delivered.map((r) => r.key)).size).toBe(N);
  }, 300_000);
});
