/**
 * Outages on the real backbone, each during a `run` (not --once) of one worker process:
 * - the receiver refuses connections for several seconds: exports wait in the dataflow's
 *   retry queue (a newer export of a profile supersedes its queued one, SPEC §6), and once it
 *   is back every profile arrives at its newest state, never an older after a newer; what
 *   exhausted its retries is stored as failed and a replay does not send it (superseded);
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

  it('receiver refusing connections for 3 s: exports wait in the retry queue, newer ones supersede them, every profile ends at its newest state — nothing lost, nothing older after newer', async () => {
    const { s, worker, expected, got } = await startRun('rxdown', 120, 300);
    await rx.down();
    const downAt = Date.now();
    await sleep(3_000);
    const upAt = Date.now();
    await rx.up();
    // Settled: the newest export of every profile arrived (what is older may be superseded).
    const newest = new Map<string, string>();
    for (const e of expected.exports) newest.set(e.profileId, e.key);
    const arrived = (): Set<string> => new Set(got().map((r) => r.key));
    await settle({ bb, rx, stream: s.stream, durable: s.durable, done: () => [...newest.values()].every((k) => arrived().has(k)), quietMs: 2_000, timeoutMs: 60_000 });
    await stopGracefully(worker);

    const list = await runCli(['failed', 'list', '--config', s.cfg, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const failed = list.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { idempotencyKey: string; attempts: number; lastStatus?: number; payload: unknown });
    console.log(`[outages /rxdown] receiver down ${upAt - downAt} ms: ${got().length} requests delivered for ${expected.exports.length} exports, ${failed.length} stored as failed`);
    for (const f of failed) {
      expect(f.attempts).toBe(3);
      expect(f.lastStatus).toBeUndefined();
      expect(f.payload).toEqual(expected.byKey.get(f.idempotencyKey)?.payload);
    }
    // Nothing arrived while the receiver refused connections; what arrived is what a clean run sends.
    expect(got().filter((r) => r.at > downAt + 100 && r.at < upAt - 100).map((r) => r.key)).toEqual([]);
    for (const r of got()) expect(r.body, r.key).toEqual(expected.byKey.get(r.key)?.payload);
    // Per profile, in arrival order, never an older export after a newer one (SPEC §6).
    const rank = new Map(expected.exports.map((e, i) => [e.key, i] as const));
    const last = new Map<string, number>();
    const backwards: string[] = [];
    for (const r of got()) {
      const e = expected.byKey.get(r.key)!;
      const i = rank.get(r.key)!;
      if ((last.get(e.profileId) ?? -1) > i) backwards.push(r.key);
      last.set(e.profileId, Math.max(i, last.get(e.profileId) ?? -1));
    }
    expect(backwards, 'older after newer').toEqual([]);
    // Nothing lost: every export arrived, or a newer one of its profile arrived (it was
    // superseded in the queue), or it is stored as failed.
    const failedKeys = new Set(failed.map((f) => f.idempotencyKey));
    const keys = arrived();
    const lost = expected.exports.filter((e) => !keys.has(e.key) && !failedKeys.has(e.key) && (last.get(e.profileId) ?? -1) <= rank.get(e.key)!);
    expect(lost.map((e) => e.key), 'neither delivered, superseded nor stored').toEqual([]);
    for (const k of newest.values()) expect(keys.has(k), `newest export ${k}`).toBe(true);

    // A replay now sends nothing older: every stored record is superseded by the newest state.
    const replay = await runCli(['failed', 'replay', '--config', s.cfg]);
    expect(replay.code, replay.stderr).toBe(0);
    if (failed.length > 0) expect(replay.stdout).toMatch(new RegExp(`superseded ${failed.length}\\b`));
    const before = got().length;
    const after = await runCli(['failed', 'list', '--config', s.cfg]);
    expect(after.stdout).toMatch(/^0 failed requests/);
    expect(got().length, 'requests sent by the replay').toBe(before);
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
