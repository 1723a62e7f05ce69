/**
 * Fencing (issue 6): one of three workers is frozen with SIGSTOP while it works, past its
 * lease: the two others take its partitions over. Then SIGCONT, in two cases:
 *
 * - at once, updates still flowing: its queued work meets leases the others now hold and is
 *   refused (ERR_FENCED in its log: a snapshot write refused by Redis, or an export not sent);
 *   it logs every lease lost; the watermarks in Redis end at each profile's last update;
 * - after the new owners got its unacknowledged messages (after the ack wait) and finished
 *   everything: Redis does not change at all after it resumed (snapshot, version and
 *   watermark of every profile), and it logs every lease lost.
 *
 * In both, no stale export reaches the endpoint after a newer one: the ORDER check
 * (`bench.seq` per profile never goes down) over every received export, including those
 * the resumed worker still had queued. The dataflow's rate limit (below the publishing rate)
 * keeps exports queued behind the limiter, built from applied updates, when the worker is
 * frozen: the case where a resumed worker could still send an old state. */
import { afterEach, describe, expect, it } from 'vitest';
import type { ProfileUpdate } from '../../src/domain/types.js';
import {
  coverage,
  oracle,
  prng,
  sleep,
} from '../support/backbone.js';
import {
  divergedSnapshots,
  explainMissing,
  explainViolations,
  fullyOwnedBy,
  orderViolations,
  ownedBy,
  partitionsOf,
  POOL,
  poolIdle,
  poolLogs,
  redeliveries,
  seedOf,
  seqWorkload,
  settlePool,
  startPublisher,
  stopGracefully,
  watchLeases,
  type PoolWorker,
  usePoolFixture,
} from '../support/pool.js';

/** The dataflow's rate limit, below the publishing rate: exports queue behind the limiter. */
const RATE = 150;
const PUBLISH_RATE = 200;

describe('pool fencing: a worker frozen past its lease, then resumed', () => {
  const pool = usePoolFixture();

  /**
   * The setup, three workers sharing the partitions, updates flowing (more than the test
   * needs: each test stops the publisher), one worker frozen and its partitions taken over.
   */
  async function frozenWorker(name: string, salt: number) {
    const { bb, rx } = pool;
    const seed = seedOf(salt);
    const rand = prng(seed);
    const s = pool.flow({ name, rateLimit: RATE });
    const workload = seqWorkload({ profiles: 100, perProfile: 60, prefix: name, seed });
    await s.prime();
    const probe = s.probe;
    const leases = watchLeases(probe);
    const t0 = Date.now();
    const workers = await s.startSharing(3);
    const pub = startPublisher({ bb, setup: s, events: workload, perSecond: PUBLISH_RATE });
    const got = () => rx.delivered(s.path);
    const distinct = () => new Set(got().map((r) => r.key)).size;
    const threshold = 200 + Math.floor(rand() * 100);
    await rx.waitFor(() => distinct() >= threshold, 60_000, `${threshold} exports`);
    // Freeze one worker while exports are queued behind the rate limiter.
    const f = workers[Math.floor(rand() * 3)];
    const others = workers.filter((w) => w !== f);
    const held = ownedBy(await probe.sample(), f);
    expect(held.length, `${f.name} owns partitions`).toBeGreaterThan(0);
    const stoppedAt = Date.now();
    f.child.kill('SIGSTOP');
    cleanups.push(() => f.child.kill('SIGCONT'));
    const log = [`${f.name} (partitions ${held.join(',')}) frozen at +${stoppedAt - t0} ms after ${distinct()} exports`];
    const taken = await probe.waitFor((x) => fullyOwnedBy(x, others) === '', 15_000, `the two others owning ${f.name}'s partitions`, { workers });
    log.push(`its partitions taken ${taken.at - stoppedAt} ms later`);
    // Nobody took a lease before it expired.
    expect(taken.at - stoppedAt, 'freeze → takeover (ms)').toBeGreaterThanOrEqual(POOL.leaseMs - POOL.tickMs - 100);
    /** Stops the updates; the oracle of what was published. */
    const stopUpdates = async () => {
      const events = await pub.stop();
      expect(partitionsOf(events).size).toBe(POOL.partitions);
      const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
      expect(expected.exports).toHaveLength(events.length);
      return { events, expected, ids: [...expected.snapshots.keys()], perProfile: perProfileCounts(events) };
    };
    return { seed, s, probe, leases, t0, workers, pub, got, f, held, stoppedAt, log, stopUpdates };
  }

  /** Updates per profile. */
  function perProfileCounts(events: readonly ProfileUpdate[]): Map<string, number> {
    const n = new Map<string, number>();
    for (const e of events) n.set(e.profileId, (n.get(e.profileId) ?? 0) + 1);
    return n;
  }

  /** The frozen worker's log after it resumed: leases lost, writes refused. */
  function afterResume(f: PoolWorker, resumedAt: number) {
    const logs = f.logs();
    const lost = logs.filter((l) => l.msg.startsWith('pool: partition lease lost') && l.time >= resumedAt - 50);
    const fenced = logs.filter((l) => l.code === 'ERR_FENCED' || (l.err as { code?: string } | undefined)?.code === 'ERR_FENCED');
    return { lost, fenced, text: `${f.name} logged ${lost.length} lost leases (${lost.map((l) => l.partition).join(',')}), ${fenced.length} ERR_FENCED warnings` };
  }

  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });

  it('resumed right after the takeover, with updates still flowing: its queued work is refused (ERR_FENCED), order holds', async () => {
    const { bb, rx } = pool;
    const r = await frozenWorker('fa', 41);
    const { s, f, held, probe, leases, pub, got, t0, seed, log } = r;
    try {
      // Resume at once: its queued updates (behind exports waiting for the rate limiter) now
      // try to write with leases the others hold.
      f.child.kill('SIGCONT');
      const resumedAt = Date.now();
      log.push(`resumed after ${resumedAt - r.stoppedAt} ms frozen`);
      await sleep(2_000);
      const { events, expected, ids, perProfile } = await r.stopUpdates();
      await settlePool({ bb, rx, setup: s, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 60_000 });
      await leases.stop();
      const c = coverage(got(), expected);
      const seen = afterResume(f, resumedAt);
      log.push(seen.text, `${events.length - c.missing.length}/${events.length} updates published and covered`, `redeliveries ${await redeliveries(bb, s)}`);
      console.log(`[fencing: short freeze] seed ${seed}; ${log.join('; ')}`);

      expect(held.filter((p) => !seen.lost.some((l) => l.partition === p)), `partitions whose loss ${f.name} did not log:\n${f.stderr.slice(-3_000)}`).toEqual([]);
      expect(seen.fenced.length, `${f.name}'s fencing refusals (ERR_FENCED) in its log:\n${f.stderr.slice(-3_000)}`).toBeGreaterThan(0);
      // The snapshots are the owners' applications: each profile's watermark is the stream
      // sequence of its last update, and no update was applied twice.
      const final = await probe.profiles(ids);
      const lastEvent = new Map(events.map((e) => [e.profileId, e.eventId as string]));
      expect.soft(ids.filter((id) => final.get(id)?.w !== pub.seqOf.get(lastEvent.get(id) as string)), 'profiles whose watermark is not their last update').toEqual([]);
      expect.soft(ids.filter((id) => (final.get(id)?.v ?? 0) > (perProfile.get(id) ?? 0)), 'profiles applied more often than they have updates').toEqual([]);
      const v = orderViolations(rx.requests, s.path);
      expect.soft(v, `seed ${seed}: exports that went back in time${explainViolations(rx.requests, v, t0)}`).toEqual([]);
      expect.soft(leases.watch.problems, 'one owner per (partition, epoch)').toEqual([]);
      expect.soft(c.missing, `seed ${seed}: exports of a clean run that never arrived${explainMissing(c.missing, expected, events, rx.requests, t0, pub.seqOf)}\n${log.join('; ')}${poolLogs(r.workers, 40)}`).toEqual([]);
      expect.soft(await divergedSnapshots(bb, s, expected), `seed ${seed}: snapshots that differ from the clean run`).toEqual([]);
      for (const w of r.workers) expect(await stopGracefully(w), w.stderr.slice(-2_000)).toBe(0);
    } finally {
      await leases.stop();
    }
  }, 180_000);

  it('resumed after the new owners finished everything: Redis does not change, no stale export after a newer one', async () => {
    const { bb, rx } = pool;
    const r = await frozenWorker('fb', 43);
    const { s, f, held, probe, leases, pub, got, t0, seed, log } = r;
    try {
      // Stay frozen while updates go on for a while (the new owners export newer states of
      // its profiles), then while the new owners get its unacknowledged messages (after the
      // ack wait) and work through everything published.
      await sleep(2_000);
      const { events, expected, ids, perProfile } = await r.stopUpdates();
      await sleep(POOL.ackWaitMs + 500);
      const idleBy = Date.now() + 60_000;
      let quietSince = Date.now();
      let count = rx.requests.length;
      while (Date.now() < idleBy) {
        if (rx.requests.length !== count) {
          count = rx.requests.length;
          quietSince = Date.now();
        }
        if (Date.now() - quietSince > 1_500 && (await poolIdle(bb, s))) break;
        await sleep(100);
      }
      expect(await poolIdle(bb, s), 'the new owners worked through everything').toBe(true);
      const before = await probe.profiles(ids);
      const requestsBeforeResume = rx.requests.length;

      f.child.kill('SIGCONT');
      const resumedAt = Date.now();
      log.push(`resumed after ${resumedAt - r.stoppedAt} ms frozen`);
      // It finds its leases lost and its queued work stale, and joins again (a rebalance).
      await probe.waitFor((x) => fullyOwnedBy(x, r.workers) === '' && ownedBy(x, f).length > 0, 30_000, `${f.name} back in the pool`, { workers: r.workers });
      await sleep(2_000);
      const after = await probe.profiles(ids);
      await leases.stop();
      const c = coverage(got(), expected);
      const seen = afterResume(f, resumedAt);
      log.push(seen.text, `${rx.requests.length - requestsBeforeResume} requests after the resume`, `${events.length - c.missing.length}/${events.length} updates published and covered`);
      console.log(`[fencing: long freeze] seed ${seed}; ${log.join('; ')}`);

      expect(held.filter((p) => !seen.lost.some((l) => l.partition === p)), `partitions whose loss ${f.name} did not log:\n${f.stderr.slice(-3_000)}`).toEqual([]);
      // Its late writes were refused: not one profile changed after it resumed.
      const changed = ids.filter((id) => JSON.stringify(after.get(id)) !== JSON.stringify(before.get(id)));
      expect(changed, 'profiles whose snapshot, version or watermark changed after the frozen worker resumed').toEqual([]);
      const lastEvent = new Map(events.map((e) => [e.profileId, e.eventId as string]));
      expect.soft(ids.filter((id) => after.get(id)?.w !== pub.seqOf.get(lastEvent.get(id) as string)), 'profiles whose watermark is not their last update').toEqual([]);
      expect.soft(ids.filter((id) => (after.get(id)?.v ?? 0) > (perProfile.get(id) ?? 0)), 'profiles applied more often than they have updates').toEqual([]);
      // No stale export after a newer one — in particular none of those it still had queued.
      const v = orderViolations(rx.requests, s.path);
      const late = v.filter((x) => x.index >= requestsBeforeResume).length;
      expect.soft(v, `seed ${seed}: exports that went back in time (${late} of them sent after the resume)${explainViolations(rx.requests, v, t0)}`).toEqual([]);
      expect.soft(leases.watch.problems, 'one owner per (partition, epoch)').toEqual([]);
      expect.soft(c.missing, `seed ${seed}: exports of a clean run that never arrived${explainMissing(c.missing, expected, events, rx.requests, t0, pub.seqOf)}`).toEqual([]);
      expect.soft(await divergedSnapshots(bb, s, expected), `seed ${seed}: snapshots that differ from the clean run`).toEqual([]);
      for (const w of r.workers) expect(await stopGracefully(w), w.stderr.slice(-2_000)).toBe(0);
    } finally {
      await leases.stop();
    }
  }, 180_000);
});
