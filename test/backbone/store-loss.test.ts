/**
 * Store loss during a run (issue 13 item 4), on the real backbone: Redis is flushed while one
 * worker exports. Before the epoch marker, the worker merged the next updates into empty
 * snapshots, saw "no change" and acknowledged them: most versions were silently never
 * exported (30,062 of 40,000 in the issue). Now it stops exporting and acknowledging, logs
 * ERR_STORE_LOST, and resumes after `http-destination pool reset-state`.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  consumerState,
  exportingWorkload,
  publish,
  runCli,
  settle,
  singleFlow,
  sleep,
  useBackboneAndReceiver,
  type Backbone,
  type RecordingReceiver,
} from '../support/backbone.js';

describe('store loss during a run', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;

  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));

  it('Redis flushed mid-run: exports and acks stop with ERR_STORE_LOST logged; pool reset-state resumes them', async () => {
    const name = 'storeloss';
    const s = singleFlow({ bb, rx, name, rateLimit: 200, ackWaitMs: 3_000 });
    const { events } = exportingWorkload({ profiles: 100, perProfile: 8, audience: 'aud-1', prefix: name, seed: 7 });
    await s.prime();
    await publish(bb, s.cfg, `${name}.jsonl`, events);
    const worker = s.start();
    const got = () => rx.delivered(s.path);
    await rx.waitFor(() => got().length >= events.length / 4 || !worker.running, 30_000, 'a quarter of the exports');
    expect(worker.running, worker.stderr.slice(-3_000)).toBe(true);

    const admin = new Redis(bb.redis.url);
    try {
      await admin.flushall();
    } finally {
      admin.disconnect();
    }
    // Requests already past the store may still arrive; then nothing more.
    await sleep(3_000);
    const stoppedAt = got().length;
    await sleep(4_000);
    expect(got().length, 'exports went on after the store lost its data').toBe(stoppedAt);
    expect(stoppedAt).toBeLessThan(events.length);
    expect(worker.stderr).toContain('ERR_STORE_LOST');
    expect(worker.running, worker.stderr.slice(-3_000)).toBe(true);
    // Nothing was acknowledged as "no change": what is left waits in the consumer.
    const waiting = await consumerState(bb.nats.url, s.stream, s.durable);
    expect((waiting?.pending ?? 0) + (waiting?.ackPending ?? 0)).toBeGreaterThan(0);

    const reset = await runCli(['pool', 'reset-state', '--config', s.cfg]);
    expect(reset.code, reset.stderr).toBe(0);
    expect(reset.stdout).toMatch(/store epoch re-initialised \(was lost:/);

    await settle({ bb, rx, stream: s.stream, durable: s.durable, done: () => false, timeoutMs: 60_000 });
    const after = await consumerState(bb.nats.url, s.stream, s.durable);
    expect(after?.pending ?? 0).toBe(0);
    expect(after?.ackPending ?? 0).toBe(0);
    expect(got().length, 'processing resumed after reset-state').toBeGreaterThan(stoppedAt);
    console.log(`[store loss] ${stoppedAt} exports before the stop, ${got().length} after reset-state (of ${events.length} in a clean run)`);
    expect(worker.stderr).toContain('re-initialised by pool reset-state');

    expect(worker.running, worker.stderr.slice(-3_000)).toBe(true);
    worker.kill('SIGTERM');
    const end = await worker.exited;
    expect(end.code, end.stderr.slice(-3_000)).toBe(0);
  }, 150_000);
});
