/**
 * End to end (SPEC §6, issue 13): one destination that never answers does not throttle another
 * dataflow on the same updates. Its failed first attempts go to its dataflow's retry queue
 * and the messages are acknowledged, so the healthy dataflow delivers at its own pace.
 *
 * Not a timing assertion: while the healthy dataflow receives its 3,000 exports, the hanging
 * endpoint must have seen far fewer than 3,000 requests. Before the retry queues, every
 * message made its hanging attempt (and its retries) before it was acknowledged, so 3,000
 * healthy exports implied at least ~3,000 hanging first attempts however fast the machine.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, removeTempDirs, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { startReceiver, type Receiver } from '../support/receiver.js';

const N = 3_000;
let healthy: Receiver;
let hanging: Receiver;

beforeAll(async () => {
  await ensureBuilt();
  healthy = await startReceiver();
  // Never answers (within the test): every attempt times out.
  hanging = await startReceiver({ respond: () => ({ delayMs: 600_000 }) });
}, 120_000);

afterEach(() => stopAll());
afterAll(async () => {
  await Promise.all([healthy.close(), hanging.close()]);
  removeTempDirs();
});

describe('independent dataflows', () => {
  it(`a hanging destination does not hold back a healthy dataflow: ${N} exports arrive while the hanging one saw few requests`, async () => {
    const dir = tempDir();
    const events = Array.from({ length: N }, (_, i) => ({
      profileId: `p-${i}`,
      eventId: `e-${i}`,
      attributes: { name: `n${i}` },
      segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
    }));
    writeEvents(dir, events);
    const config = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      worker: { maxInFlight: 64 },
      audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
      destinations: [
        { id: 'ok', endpoint: `${healthy.url}/ok` },
        { id: 'dead', endpoint: `${hanging.url}/dead`, timeoutMs: 2_000, retry: { minDelayMs: 200, maxDelayMs: 1_000 } },
      ],
      dataflows: [
        { id: 'flow-ok', destination: 'ok', audiences: ['aud-1'], attributes: ['name'] },
        { id: 'flow-dead', destination: 'dead', audiences: ['aud-1'], attributes: ['name'] },
      ],
    });
    const started = Date.now();
    const cli = startCli(['run', '--config', config], { cwd: dir, timeoutMs: 300_000 });
    await healthy.waitFor((r) => r.length >= N, 240_000);
    const elapsed = Date.now() - started;
    const hangingSeen = hanging.requests.length;
    const at = healthy.requests.map((r) => r.at - started);
    // eslint-disable-next-line no-console
    console.log(`healthy arrivals (ms after start): first ${at[0]?.toFixed(0)}, 64th ${at[63]?.toFixed(0)}, 65th ${at[64]?.toFixed(0)}, 1000th ${at[999]?.toFixed(0)}, last ${at.at(-1)?.toFixed(0)}`);
    // eslint-disable-next-line no-console
    console.log(`healthy dataflow: ${N} exports in ${elapsed} ms; the hanging endpoint had received ${hangingSeen} requests`);
    expect(new Set(healthy.requests.map((r) => (r.body as { person?: unknown; name?: string }).name)).size).toBe(N);
    expect(hangingSeen).toBeLessThan(N / 2);
    cli.signal('SIGTERM');
    await cli.exited;
  }, 300_000);
});
