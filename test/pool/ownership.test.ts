/**
 * Ownership (issue 6): three worker processes share 16 partitions. Every partition is owned
 * by exactly one live worker, each owns a fair share, and — sampled in Redis every 25 ms from
 * the first worker's start through two joins and a steady period, and reconstructed from the
 * workers' own logs — no partition ever has two owners: one owner per lease epoch, epochs
 * never go back, and no two workers' tenures of a partition overlap in time. Updates flow
 * meanwhile; every export arrives and the per-profile order holds.
 */
import { describe, expect, it } from 'vitest';
import { partitionConsumerName } from '../../src/worker/pool-source.js';
import {
  coverage,
  oracle,
  runCli,
  sleep,
} from '../support/backbone.js';
import {
  divergedSnapshots,
  explainMissing,
  explainViolations,
  fullyOwnedBy,
  orderViolations,
  overlappingTenures,
  partitionsOf,
  POOL,
  poolLogs,
  redisServerPid,
  seedOf,
  seqWorkload,
  settledOn,
  settlePool,
  startPublisher,
  stopGracefully,
  streamSubjects,
  tenures,
  watchLeases,
  workerOf,
  type PoolWorker,
  usePoolFixture,
} from '../support/pool.js';

interface StatusJson {
  pool: string;
  recordedPartitions?: number;
  workers: Array<{ id: string; live: boolean; partitions: number[] }>;
  partitions: Array<{ partition: number; owner?: string; epoch?: number; ttlMs?: number; desiredOwner?: string }>;
  lag: Array<{ partition: number; consumer?: string; pending?: number; ackPending?: number }>;
}

describe('pool ownership: three workers, 16 partitions', () => {
  const pool = usePoolFixture();

  it('every partition is owned by exactly one live worker, 4–7 each, never two owners at once', async () => {
    const { bb, rx } = pool;
    const seed = seedOf(11);
    const s = pool.flow({ name: 'own' });
    // More updates than the test needs: they flow until the sampling is over.
    const workload = seqWorkload({ profiles: 300, perProfile: 40, prefix: 'o', seed });
    await s.prime();

    const probe = s.probe;
    const leases = watchLeases(probe);
    const workers: PoolWorker[] = [];
    const ended = new Map<string, number>();
    const t0 = Date.now();
    try {
      const pub = startPublisher({ bb, setup: s, events: workload, perSecond: 100 });
      // Staggered starts: the first worker takes every partition, then two joins move some.
      for (let i = 0; i < 3; i++) {
        const w = s.start();
        workers.push(w);
        void w.exited.then(() => ended.set(w.name, Date.now()));
        if (i < 2) await sleep(1_500);
      }
      const stable = await probe.waitFor(
        (x) => fullyOwnedBy(x, workers) === '' && settledOn(x, workers),
        45_000,
        'every partition leased to the owner the assignment over the three live workers gives it',
        { workers },
      );
      const rebalancedAt = stable.at - t0;

      // `pool status --json`: the operator's view of the same thing.
      const st = await runCli(['pool', 'status', '--config', s.cfg, '--json'], { timeoutMs: 20_000 });
      expect(st.code, st.stderr).toBe(0);
      const status = JSON.parse(st.stdout.trim()) as StatusJson;
      expect(status.recordedPartitions).toBe(POOL.partitions);
      expect(status.partitions).toHaveLength(POOL.partitions);
      const live = status.workers.filter((w) => w.live);
      expect(live.map((w) => workerOf(workers, w.id)?.name).sort(), `live workers: ${JSON.stringify(status.workers)}`).toEqual(['w1', 'w2', 'w3']);
      for (const p of status.partitions) {
        expect(p.owner, `partition ${p.partition} has an owner`).toBeDefined();
        expect(live.some((w) => w.id === p.owner), `partition ${p.partition}'s owner ${p.owner} is a live worker`).toBe(true);
        expect(p.epoch, `partition ${p.partition} has an epoch`).toBeGreaterThan(0);
        expect(p.ttlMs, `partition ${p.partition}'s lease ttl`).toBeLessThanOrEqual(POOL.leaseMs);
        expect(p.desiredOwner, `partition ${p.partition} is not moving`).toBe(p.owner);
      }
      // Each partition listed under exactly one worker, and the lists cover all 16.
      const listed = live.flatMap((w) => w.partitions).sort((a, b) => a - b);
      expect(listed).toEqual(Array.from({ length: POOL.partitions }, (_, p) => p));
      for (const w of live) {
        expect(w.partitions.length, `${workerOf(workers, w.id)?.name} owns ${w.partitions.join(',')}`).toBeGreaterThanOrEqual(4);
        expect(w.partitions.length, `${workerOf(workers, w.id)?.name} owns ${w.partitions.join(',')}`).toBeLessThanOrEqual(7);
      }
      expect(status.lag.map((l) => l.partition)).toEqual(Array.from({ length: POOL.partitions }, (_, p) => p));
      // The lag is the current consumer's: the one of the lease's epoch.
      expect(status.lag.map((l) => l.consumer)).toEqual(status.partitions.map((p) => partitionConsumerName(s.durable, p.partition, p.epoch ?? -1)));
      expect(status.lag.every((l) => l.pending !== undefined && l.ackPending !== undefined), JSON.stringify(status.lag)).toBe(true);

      // Keep sampling while the steady pool works, then let the work finish.
      await sleep(3_000);
      const events = await pub.stop();
      expect(partitionsOf(events).size, 'the updates touch every partition').toBe(POOL.partitions);
      const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
      expect(expected.exports).toHaveLength(events.length);
      const got = () => rx.delivered(s.path);
      await settlePool({ bb, rx, setup: s, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 40_000 });
      // Still the same owners: no churn in a steady pool.
      const after = await probe.sample();
      expect(fullyOwnedBy(after, workers)).toBe('');
      await leases.stop();

      const lw = leases.watch;
      console.log(
        `[ownership] seed ${seed}; rebalanced at +${rebalancedAt} ms; ${lw.samples} lease samples; ` +
          `owners: ${live.map((w) => `${workerOf(workers, w.id)?.name}=[${w.partitions.join(',')}]`).join(' ')}`,
      );
      expect(lw.samples, 'lease samples taken').toBeGreaterThan(100);
      expect(lw.problems, 'one owner per (partition, epoch), epochs never go back').toEqual([]);
      // Every lease epoch seen belongs to one of our three workers.
      const strangers = [...lw.owners.values()].filter((o) => !workerOf(workers, o));
      expect(strangers, 'lease owners that are not one of the three workers').toEqual([]);

      const c = coverage(got(), expected);
      expect.soft(c.missing, `exports of a clean run that never arrived${explainMissing(c.missing, expected, events, rx.requests, t0, pub.seqOf)}`).toEqual([]);
      expect.soft(c.unexpected).toEqual([]);
      expect.soft(await divergedSnapshots(bb, s, expected), 'snapshots that differ from the clean run').toEqual([]);
      const v = orderViolations(rx.requests, s.path);
      expect.soft(v, `exports that went back in time${explainViolations(rx.requests, v, t0)}`).toEqual([]);

      // Graceful stop of all three: every lease released, nobody left in the pool.
      for (const code of await Promise.all(workers.map((w) => stopGracefully(w)))) expect(code).toBe(0);
      const gone = await probe.sample();
      expect(gone.leases.filter(Boolean), 'leases left after every worker stopped').toEqual([]);
      expect(gone.live, 'live members after every worker stopped').toEqual([]);

      // The workers' own account: acquired … released/lost, per partition, never overlapping.
      const ts = tenures(workers, (w) => ended.get(w.name));
      expect(ts.length, 'tenures found in the logs').toBeGreaterThanOrEqual(POOL.partitions);
      expect(ts.every((t) => t.to !== undefined), 'every tenure ended by the stop').toBe(true);
      expect(overlappingTenures(ts), 'two workers holding one partition at the same time').toEqual([]);
      // The joins moved partitions: w1 held all 16 first, then released some.
      expect(ts.filter((t) => t.worker === 'w1').length).toBeGreaterThanOrEqual(POOL.partitions);
      expect(ts.filter((t) => t.worker !== 'w1').length).toBeGreaterThanOrEqual(8);
      // Each epoch the workers logged is the one Redis showed for that owner.
      for (const t of ts) {
        const seen = lw.owners.get(`${t.partition}:${t.epoch}`);
        if (seen !== undefined) expect(workerOf(workers, seen)?.name, `owner of partition ${t.partition} epoch ${t.epoch}`).toBe(t.worker);
      }
    } finally {
      await leases.stop();
    }
  }, 180_000);

  it('workers started before the stream exists: `publish` still publishes to the partitions, and the pool exports', async () => {
    const { bb, rx } = pool;
    // The order an operator follows with deploy/: start the pool, then the producers.
    const s = pool.flow({ name: 'first' });
    const w = s.start();
    const probe = s.probe;
    await probe.waitFor((x) => fullyOwnedBy(x, [w]) === '', 45_000, 'the worker owning every partition', { workers: [w] });
    await rx.waitFor(() => w.logs().filter((l) => l.msg === 'pool: partition acquired').length === POOL.partitions, 10_000, 'every partition consumed');
    await sleep(500); // the partition consumers are created
    const events = seqWorkload({ profiles: 20, perProfile: 2, prefix: 'p', seed: 1 });
    const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
    const file = bb.writeJsonl('first.jsonl', events);
    const r = await runCli(['publish', '--config', s.cfg, file]);
    expect(r.code, `publish after the pool created the stream:\n${r.stdout}${r.stderr}\nstream subjects: ${(await streamSubjects(bb, s.stream)).join(' ')}`).toBe(0);
    await rx.waitFor(() => coverage(rx.delivered(s.path), expected).missing.length === 0, 20_000, 'every export');
    expect(orderViolations(rx.requests, s.path)).toEqual([]);
    expect(await stopGracefully(w)).toBe(0);
  }, 60_000);

  it('a worker that starts while Redis does not answer (1.5 s) joins the pool once it does, instead of exiting', async () => {
    const { bb, rx } = pool;
    // A short stall of Redis (a slow fsync, a failover, a loaded host) while a worker starts.
    // The worker survives the same stall once it runs (the coordinator keeps ticking); it must
    // survive it at start too, not exit and wait for systemd or Compose to restart it.
    const s = pool.flow({ name: 'stall' });
    await s.prime();
    const redisPid = redisServerPid(bb.redis.port);
    const probe = s.probe;
    let w: PoolWorker | undefined;
    try {
      process.kill(redisPid, 'SIGSTOP');
      try {
        w = s.start();
        // The worker waits for the backbone at start (logging each try) while Redis is stopped.
        await rx.waitFor(() => w?.logs().some((l) => l.msg === 'worker started' || String(l.msg).startsWith('startup:')) === true || !w?.running, 20_000, 'the worker starting');
        await sleep(1_500);
      } finally {
        process.kill(redisPid, 'SIGCONT');
      }
      const worker = w;
      const end = await probe.waitFor((x) => fullyOwnedBy(x, [worker]) === '' || !worker.running, 20_000, 'the worker owning every partition', { workers: [worker] });
      expect(worker.running, `the worker exited after the Redis stall:${poolLogs([worker])}`).toBe(true);
      expect(fullyOwnedBy(end, [worker])).toBe('');
      expect(await stopGracefully(worker)).toBe(0);
    } finally {
      process.kill(redisPid, 'SIGCONT');
    }
  }, 60_000);
});
