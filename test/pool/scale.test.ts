/**
 * Scaling (issue 6): one worker, then three while updates flow, then back to one — two of
 * them stopped gracefully with SIGTERM (drain, release, leave). Nothing is lost (every export
 * of a clean run arrives, every snapshot ends as a clean run leaves it), the ORDER check
 * holds on every received export, both stopped workers exit 0, and the survivor ends up
 * owning every partition.
 */
import { describe, expect, it } from 'vitest';
import {
  coverage,
  oracle,
  sleep,
} from '../support/backbone.js';
import {
  divergedSnapshots,
  explainMissing,
  explainViolations,
  fullyOwnedBy,
  orderViolations,
  ownedBy,
  overlappingTenures,
  partitionsOf,
  POOL,
  seedOf,
  seqWorkload,
  settlePool,
  startPublisher,
  stopGracefully,
  tenures,
  watchLeases,
  type PoolWorker,
  usePoolFixture,
} from '../support/pool.js';

describe('pool scaling: 1 → 3 → 1 workers while updates flow', () => {
  const pool = usePoolFixture();

  it('adds two workers, then stops two with SIGTERM: nothing lost, order holds, the survivor owns every partition', async () => {
    const { bb, rx } = pool;
    const seed = seedOf(31);
    const s = pool.flow({ name: 'sc' });
    // More updates than the test needs: they flow until the choreography is over.
    const workload = seqWorkload({ profiles: 300, perProfile: 40, prefix: 's', seed });
    await s.prime();

    const probe = s.probe;
    const leases = watchLeases(probe);
    const ended = new Map<string, number>();
    const track = (w: PoolWorker): PoolWorker => {
      void w.exited.then(() => ended.set(w.name, Date.now()));
      return w;
    };
    const t0 = Date.now();
    const log: string[] = [];
    try {
      const w1 = track(s.start());
      await probe.waitFor((x) => fullyOwnedBy(x, [w1]) === '', 45_000, 'w1 owning every partition', { workers: [w1] });
      const pub = startPublisher({ bb, setup: s, events: workload, perSecond: 120 });
      const got = () => rx.delivered(s.path);
      const distinct = () => new Set(got().map((r) => r.key)).size;
      await rx.waitFor(() => distinct() >= 240, 60_000, 'the first exports');
      log.push(`scale up at +${Date.now() - t0} ms after ${pub.published()} published, ${distinct()} exports`);

      // Scale up: two more while updates flow.
      const w2 = track(s.start());
      const w3 = track(s.start());
      const all = [w1, w2, w3];
      // The first worker drains each partition it gives up (its in-flight work) first.
      const up = await s.sharedBy(all);
      log.push(`three share at +${up.at - t0} ms (${all.map((w) => `${w.name}=${ownedBy(up, w).length}`).join(' ')}) after ${distinct()} exports`);
      await sleep(1_000);

      // Scale down: w1 (the first) and w2 stop gracefully, at the same time.
      const stopAt = Date.now();
      const codes = await Promise.all([stopGracefully(w1), stopGracefully(w2)]);
      const down = await probe.waitFor((x) => fullyOwnedBy(x, [w3]) === '', 30_000, 'w3 owning every partition', { workers: all });
      log.push(`w1, w2 stopped (exit ${codes.join(', ')}) ${Math.max(ended.get('w1') ?? 0, ended.get('w2') ?? 0) - stopAt} ms after SIGTERM; w3 owns all ${down.at - stopAt} ms after SIGTERM, after ${distinct()} exports`);
      expect(codes, `exit codes of the stopped workers:\n${w1.stderr.slice(-1_500)}\n${w2.stderr.slice(-1_500)}`).toEqual([0, 0]);

      // Updates keep flowing a while on the one survivor, then stop.
      await sleep(2_000);
      const events = await pub.stop();
      expect(partitionsOf(events).size).toBe(POOL.partitions);
      const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
      expect(expected.exports).toHaveLength(events.length);
      await settlePool({ bb, rx, setup: s, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 60_000 });
      const end = await probe.sample();
      await leases.stop();
      const c = coverage(got(), expected);
      log.push(`${events.length - c.missing.length}/${events.length} updates published and covered at +${Date.now() - t0} ms, ${c.duplicates} duplicates`);
      console.log(`[scale] seed ${seed}; ${log.join('; ')}`);

      expect(fullyOwnedBy(end, [w3]), 'the survivor owns every partition at the end').toBe('');
      expect(end.live.filter((id) => !w3.owns(id)), 'live members besides the survivor').toEqual([]);
      expect.soft(leases.watch.problems, 'one owner per (partition, epoch)').toEqual([]);
      expect.soft(c.missing, `seed ${seed}: exports of a clean run that never arrived${explainMissing(c.missing, expected, events, rx.requests, t0, pub.seqOf)}`).toEqual([]);
      expect.soft(c.unexpected, 'exports a clean run does not make').toEqual([]);
      const v = orderViolations(rx.requests, s.path);
      expect.soft(v, `seed ${seed}: exports that went back in time${explainViolations(rx.requests, v, t0)}`).toEqual([]);
      expect.soft(await divergedSnapshots(bb, s, expected), `seed ${seed}: snapshots that differ from the clean run`).toEqual([]);

      expect(await stopGracefully(w3), w3.stderr.slice(-2_000)).toBe(0);
      const ts = tenures(all, (w) => ended.get(w.name));
      expect(overlappingTenures(ts), 'two workers holding one partition at the same time (their logs)').toEqual([]);
    } finally {
      await leases.stop();
    }
  }, 180_000);
});
