/**
 * Outages on the real backbone, each during a `run` (not --once) of one worker process:
 * - the receiver refuses connections for several seconds: requests are retried, those that
 *   exhaust their retries are stored as failed, `failed replay` delivers them: nothing lost;
 * - Redis restarts (down 2 s): the worker recovers by itself and every export arrives;
 * - nats-server is killed and restarted with its data folder: same.
 * Expected exports come from the oracle (every update of the workload exports once).
 */
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  coverage,
  exportingWorkload,
  oracle,
  publish,
  readSnapshots,
  runCli,
  settle,
  singleFlow,
  sleep,
  useBackboneAndReceiver,
  type Backbone,
  type CliProcess,
  type FlowSetup,
  type Oracle,
  type RecordingReceiver,
} from '../support/backbone.js';

describe('outages during a run', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;

  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));

  /**
   * Primes a single-flow setup, publishes a workload of `profiles` × 8 updates (each exports
   * once), starts a worker paced by the dataflow's rate limit, and resolves once a quarter of
   * the exports arrived.
   */
  async function startRun(name: string, profiles: number, rateLimit: number) {
    const s = singleFlow({ bb, rx, name, rateLimit, ackWaitMs: 3_000 });
    const { events } = exportingWorkload({ profiles, perProfile: 8, audience: 'aud-1', prefix: name, seed: profiles });
    const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
    expect(expected.exports).toHaveLength(events.length);
    await s.prime();
    await publish(bb, s.cfg, `${name}.jsonl`, events);
    const worker = s.start();
    const got = () => rx.delivered(s.path);
    await rx.waitFor(() => got().length >= events.length / 4 || !worker.running, 30_000, 'a quarter of the exports');
    expect(worker.running, worker.stderr.slice(-3_000)).toBe(true);
    return { s, worker, expected, got };
  }

  /** The worker is still the same process, drains, and exits 0 on SIGTERM. */
  async function stopGracefully(worker: CliProcess): Promise<void> {
    expect(worker.running, `the worker exited by itself:\n${worker.stderr.slice(-3_000)}`).toBe(true);
    worker.kill('SIGTERM');
    const end = await worker.exited;
    expect(end.code, end.stderr.slice(-3_000)).toBe(0);
  }

  function expectAllDelivered(s: FlowSetup, expected: Oracle, what: string): void {
    const got = rx.delivered(s.path);
    const c = coverage(got, expected);
    console.log(`[outages ${s.path}] ${what}: ${expected.exports.length - c.missing.length}/${expected.exports.length} exports, ${c.duplicates} duplicates`);
    expect(c.missing, `${what}: exports that never arrived`).toEqual([]);
    expect(c.unexpected, `${what}: exports a clean run does not make`).toEqual([]);
  }

  it('receiver refusing connections for 3 s: retried, then stored as failed, then replayed — nothing lost', async () => {
    const { s, worker, expected, got } = await startRun('rxdown', 120, 300);
    await rx.down();
    const downAt = Date.now();
    await sleep(3_000);
    await rx.up();
    const downFor = Date.now() - downAt;
    await settle({ bb, rx, stream: s.stream, durable: s.durable, done: () => false, quietMs: 2_000, timeoutMs: 60_000 });
    await stopGracefully(worker);

    const list = await runCli(['failed', 'list', '--config', s.cfg, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const failed = list.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { idempotencyKey: string; attempts: number; lastStatus?: number; lastErrorCode: string; payload: unknown });
    console.log(`[outages /rxdown] receiver down ${downFor} ms: ${failed.length} exports stored as failed`);
    expect(failed.length, 'exports that exhausted their retries while the receiver was down').toBeGreaterThan(0);
    for (const f of failed) {
      expect(f.attempts).toBe(3);
      expect(f.lastStatus).toBeUndefined();
      expect(f.payload).toEqual(expected.byKey.get(f.idempotencyKey)?.payload);
    }
    // Delivered or stored: every export is accounted for.
    const deliveredKeys = new Set(got().map((r) => r.key));
    const failedKeys = new Set(failed.map((f) => f.idempotencyKey));
    expect(expected.exports.filter((e) => !deliveredKeys.has(e.key) && !failedKeys.has(e.key)).map((e) => e.key), 'neither delivered nor stored').toEqual([]);

    const replay = await runCli(['failed', 'replay', '--config', s.cfg]);
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toContain(`replayed ${failed.length}: delivered ${failed.length}, failed 0`);
    expectAllDelivered(s, expected, 'after failed replay');
    for (const r of got()) expect(r.body).toEqual(expected.byKey.get(r.key)?.payload);
    const after = await runCli(['failed', 'list', '--config', s.cfg]);
    expect(after.stdout).toMatch(/^0 failed requests/);
  }, 120_000);

  it('Redis restarted during a run (down 2 s): the worker recovers without a restart and every export arrives', async () => {
    const { s, worker, expected, got } = await startRun('redisdown', 120, 300);
    await bb.redis.restart({ downMs: 2_000 });
    await settle({ bb, rx, stream: s.stream, durable: s.durable, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 60_000 });
    expectAllDelivered(s, expected, 'after a Redis restart');
    const c = coverage(got(), expected);
    expect(c.conflictingDuplicates, 'same Idempotency-Key, different body').toEqual([]);
    const wrong = got().filter((r) => !isDeepStrictEqual(r.body, expected.byKey.get(r.key)?.payload));
    expect(wrong.map((r) => r.raw), 'bodies that differ from the clean run').toEqual([]);
    await stopGracefully(worker);
    const snaps = await readSnapshots(bb.redis.url, s.prefix, [...expected.snapshots.keys()]);
    const diverged = [...expected.snapshots].filter(([id, snap]) => !isDeepStrictEqual(snaps.get(id), snap)).map(([id]) => id);
    expect(diverged, 'snapshots that differ from the clean run').toEqual([]);
  }, 120_000);

  it('nats-server killed and restarted with its data folder during a run: the worker recovers without a restart and every export arrives', async () => {
    const { s, worker, expected, got } = await startRun('natsdown', 120, 300);
    bb.nats.kill();
    await sleep(1_000);
    await bb.nats.restart();
    await settle({ bb, rx, stream: s.stream, durable: s.durable, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 60_000 });
    expectAllDelivered(s, expected, 'after a nats-server restart');
    await stopGracefully(worker);
  }, 120_000);
});
