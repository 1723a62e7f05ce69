/**
 * Two worker processes on the same stream, the same durable (they share the work) and the
 * same Redis: every update is applied exactly once in effect and in order — the final
 * snapshots are those of one worker applying the stream in order (the oracle), and every
 * export of a clean run arrives with its body, in per-profile order (SPEC §7: the pool keeps
 * per-profile order).
 *
 * The two configs differ only in the destination's endpoint path (`/w1`, `/w2`), so the
 * receiver tells which worker sent an export (both must have worked), and in the log level.
 */
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  coverage,
  exportingWorkload,
  oracle,
  publish,
  readSnapshots,
  settle,
  singleFlow,
  spawnCli,
  useBackboneAndReceiver,
  type Backbone,
  type CliProcess,
  type Recorded,
  type RecordingReceiver,
} from '../support/backbone.js';

describe('two workers on one stream, one durable, one Redis', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;

  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));

  /** One setup, and a second config identical but for the endpoint path `/<name>-w2`. */
  function twoConfigs(name: string, rateLimit?: number) {
    // A small in-flight window, so partitions that move have little to drain first.
    const s = singleFlow({ bb, rx, name, ackWaitMs: 3_000, rateLimit, worker: { maxInFlight: 256 } });
    const config2 = JSON.parse(JSON.stringify(s.config)) as { destinations: Array<{ endpoint: string }>; log: { level: string } };
    config2.destinations[0].endpoint = `${rx.url}/${name}-w2`;
    // Worker 2 logs at info so the test sees it take a partition ('pool: partition acquired').
    config2.log = { level: 'info' };
    const cfg2 = bb.writeFile(`${name}-w2.json`, config2);
    return { s, cfg2, path2: `/${name}-w2`, start2: (): CliProcess => spawnCli(['run', '--config', cfg2]) };
  }

  async function check(name: string, profiles: number, startSecondAfter: number, rateLimit?: number): Promise<void> {
    const { s, path2, start2 } = twoConfigs(name, rateLimit);
    const { events } = exportingWorkload({ profiles, perProfile: 10, audience: 'aud-1', prefix: name, seed: 11 });
    const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
    expect(expected.exports).toHaveLength(events.length);
    await s.prime();
    // When the second worker joins mid-run, the last part of the stream is published only once
    // it holds a partition: on a fast host the first worker could otherwise finish everything
    // before the handover and the second would have nothing to do.
    const held = startSecondAfter > 0 ? Math.floor(events.length * 0.3) : 0;
    await publish(bb, s.cfg, `${name}.jsonl`, events.slice(0, events.length - held));

    const both = (): Recorded[] => rx.delivered().filter((r) => r.path === s.path || r.path === path2);
    const w1 = s.start();
    if (startSecondAfter > 0) {
      await rx.waitFor(() => both().length >= startSecondAfter || !w1.running, 30_000, `${startSecondAfter} exports`);
    }
    const w2 = start2();
    if (held > 0) {
      await rx.waitFor(() => w2.stderr.includes('pool: partition acquired') || !w2.running, 30_000, 'worker 2 holding a partition');
      await publish(bb, s.cfg, `${name}-rest.jsonl`, events.slice(events.length - held));
    }
    await settle({ bb, rx, stream: s.stream, durable: s.durable, done: () => coverage(both(), expected).missing.length === 0, timeoutMs: 60_000 });

    const got = both();
    const c = coverage(got, expected);
    const by1 = got.filter((r) => r.path === s.path).length;
    const by2 = got.filter((r) => r.path === path2).length;
    console.log(`[two-workers ${name}] ${expected.exports.length - c.missing.length}/${expected.exports.length} exports (worker 1: ${by1}, worker 2: ${by2}), ${c.duplicates} duplicates`);
    expect(w1.running && w2.running, `a worker exited:\n${w1.stderr.slice(-2_000)}\n${w2.stderr.slice(-2_000)}`).toBe(true);
    expect(c.missing, 'exports of a clean run that never arrived').toEqual([]);
    expect(c.unexpected, 'exports a clean run does not make').toEqual([]);
    expect(c.conflictingDuplicates, 'same Idempotency-Key, different body').toEqual([]);
    const wrong = got.filter((r) => !isDeepStrictEqual(r.body, expected.byKey.get(r.key)?.payload));
    expect(wrong.map((r) => r.raw), 'bodies that differ from the clean run').toEqual([]);
    // Per profile, the first arrivals follow the updates' order.
    const order = new Map<string, string[]>();
    for (const r of got) {
      const pid = expected.byKey.get(r.key)!.profileId;
      const keys = order.get(pid) ?? order.set(pid, []).get(pid)!;
      if (!keys.includes(r.key)) keys.push(r.key);
    }
    const outOfOrder = [...order].filter(([pid, keys]) => !isDeepStrictEqual(keys, expected.exports.filter((e) => e.profileId === pid).map((e) => e.key)));
    expect(outOfOrder.map(([pid]) => pid), 'profiles whose exports arrived out of order').toEqual([]);
    // Both workers did part of the work.
    expect(by1, 'exports sent by worker 1').toBeGreaterThan(0);
    expect(by2, 'exports sent by worker 2').toBeGreaterThan(0);

    w1.kill('SIGTERM');
    w2.kill('SIGTERM');
    const [e1, e2] = await Promise.all([w1.exited, w2.exited]);
    expect(e1.code, e1.stderr.slice(-2_000)).toBe(0);
    expect(e2.code, e2.stderr.slice(-2_000)).toBe(0);

    const snaps = await readSnapshots(bb.redis.url, s.prefix, [...expected.snapshots.keys()]);
    const diverged = [...expected.snapshots].filter(([id, snap]) => !isDeepStrictEqual(snaps.get(id), snap)).map(([id]) => id);
    expect(diverged, 'snapshots that differ from one worker applying the stream in order').toEqual([]);
  }

  it('started together: final snapshots equal one worker’s, every export arrives once in order, both worked', async () => {
    await check('pair', 200, 0);
  }, 120_000);

  it('the second worker joins mid-run (partitions move under load): same', async () => {
    // Paced by the pool-wide rate limit so the handover happens while most of the work is left.
    await check('join', 200, 200, 400);
  }, 120_000);
});
