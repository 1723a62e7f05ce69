/**
 * The partition consumers of pool workers (bench/README.md, optimisation 5): one NATS
 * connection per worker for all its partitions, each partition's `max_ack_pending` a share of
 * `maxInFlight` over the partitions the worker is assigned (at least 64), kept when a
 * partition moves to a worker with another share (the new owner updates it), and the
 * handovers of a rebalance under load race no consumer calls ("deliver policy can not be
 * updated"): nothing lost, order holds.
 */
import { describe, expect, it } from 'vitest';
import { partitionConsumerName, partitionShare } from '../../src/worker/pool-source.js';
import {
  coverage,
  oracle,
  sleep,
  type Backbone,
} from '../support/backbone.js';
import {
  explainMissing,
  explainViolations,
  fullyOwnedBy,
  orderViolations,
  ownedBy,
  partitionConsumers,
  POOL,
  poolLogs,
  seedOf,
  seqWorkload,
  settledOn,
  settlePool,
  startPublisher,
  stopGracefully,
  type PoolSetup,
  type PoolWorker,
  usePoolFixture,
} from '../support/pool.js';

describe('partitionShare', () => {
  it('splits maxInFlight over the partitions owned, with a floor capped at maxInFlight', () => {
    expect(partitionShare(512, 16)).toBe(64);
    expect(partitionShare(512, 8)).toBe(64);
    expect(partitionShare(512, 4)).toBe(128);
    expect(partitionShare(512, 1)).toBe(512);
    expect(partitionShare(2048, 16)).toBe(128);
    expect(partitionShare(2048, 3)).toBe(682);
    expect(partitionShare(512, 16, 32)).toBe(32);
    expect(partitionShare(16, 16)).toBe(16);
    expect(partitionShare(1, 16)).toBe(1);
    expect(partitionShare(512, 0)).toBe(512);
  });
});

/** Client connections nats-server holds, by name (monitoring endpoint). */
async function connectionNames(bb: Backbone): Promise<string[]> {
  const res = await fetch(`${bb.nats.monitorUrl}/connz?limit=1024`);
  const body = (await res.json()) as { connections?: Array<{ name?: string }> };
  return (body.connections ?? []).map((c) => c.name ?? '');
}

/** `max_ack_pending` of each partition's current consumer (undefined: no consumer yet). */
async function maxAckPending(bb: Backbone, s: PoolSetup): Promise<Array<number | undefined>> {
  return (await partitionConsumers(bb, s)).map((list) => list[0]?.info.config.max_ack_pending);
}

async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

describe('pool partition consumers', () => {
  const pool = usePoolFixture();

  it('one connection per worker; max_ack_pending is the share of the owner; a rebalance under load loses nothing', async () => {
    const { bb, rx } = pool;
    const seed = seedOf(41);
    const maxInFlight = 1_024;
    const s = pool.flow({ name: 'pc', worker: { maxInFlight } });
    const workload = seqWorkload({ profiles: 200, perProfile: 40, prefix: 'c', seed });
    await s.prime();
    const probe = s.probe;
    const workers: PoolWorker[] = [];
    const t0 = Date.now();
    const consumerConnections = async () => (await connectionNames(bb)).filter((n) => n.startsWith(`http-destination:${s.durable}`));
    const w1 = s.start();
    workers.push(w1);
    await probe.waitFor((x) => fullyOwnedBy(x, [w1]) === '', 30_000, 'w1 owning every partition', { workers });
    // Alone, w1 consumes all 16: 1024 / 16 = 64 each, on one connection.
    const alone = partitionShare(maxInFlight, POOL.partitions);
    expect(alone).toBe(64);
    await waitUntil(async () => (await maxAckPending(bb, s)).every((m) => m === alone), 20_000, `every partition consumer at max_ack_pending ${alone}`);
    expect(await consumerConnections()).toHaveLength(1);

    const pub = startPublisher({ bb, setup: s, events: workload, perSecond: 150 });
    const got = () => rx.delivered(s.path);
    await rx.waitFor(() => got().length >= 150, 60_000, 'the first exports');

    // w2 joins under load: the partitions it takes move with their consumers' backlog.
    const w2 = s.start();
    workers.push(w2);
    const both = await probe.waitFor((x) => settledOn(x, workers), 45_000, 'w1 and w2 sharing the partitions', { workers });
    const mine = ownedBy(both, w2);
    const kept = ownedBy(both, w1);
    expect(mine.length + kept.length).toBe(POOL.partitions);
    // w2 was assigned its partitions from the start: its share is over those, not over the
    // few it held when each arrived.
    const joined = partitionShare(maxInFlight, mine.length);
    await waitUntil(async () => {
      const m = await maxAckPending(bb, s);
      return mine.every((p) => m[p] === joined);
    }, 20_000, `w2's consumers at max_ack_pending ${joined}`);
    const after = await maxAckPending(bb, s);
    // w1 keeps the share its running consumers started with.
    expect(kept.map((p) => after[p])).toEqual(kept.map(() => alone));
    expect(await consumerConnections()).toHaveLength(2);

    await sleep(1_500);
    const events = await pub.stop();
    const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
    await settlePool({ bb, rx, setup: s, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 60_000 });
    const c = coverage(got(), expected);
    console.log(`[consumers] seed ${seed}: w1 keeps ${kept.length} at ${alone}, w2 takes ${mine.length} at ${joined}; ${events.length - c.missing.length}/${events.length} covered`);
    expect.soft(c.missing, `seed ${seed}: exports that never arrived${explainMissing(c.missing, expected, events, rx.requests, t0, pub.seqOf)}`).toEqual([]);
    const v = orderViolations(rx.requests, s.path);
    expect.soft(v, `seed ${seed}: exports that went back in time${explainViolations(rx.requests, v, t0)}`).toEqual([]);
    // No start of a partition consumer raced the previous owner's (or failed and retried).
    const raced = workers.flatMap((w) => w.logs().filter((l) => l.msg.startsWith('jetstream:') && /updat|not found|retrying/i.test(l.msg)).map((l) => `${w.name} p${String(l.partition)}: ${l.msg}`));
    expect.soft(raced, poolLogs(workers)).toEqual([]);

    // Each partition has one consumer, named after the epoch of the lease its owner holds:
    // every takeover deleted its predecessor.
    const leased = await probe.sample();
    const consumers = await partitionConsumers(bb, s);
    expect(consumers.map((list) => list.map((c) => c.info.name))).toEqual(
      leased.leases.map((l, p) => [partitionConsumerName(s.durable, p, l?.epoch ?? -1)]),
    );

    const codes = await Promise.all(workers.map((w) => stopGracefully(w)));
    expect(codes, poolLogs(workers)).toEqual([0, 0]);
    // Every consumer connection closed with its worker.
    await waitUntil(async () => (await consumerConnections()).length === 0, 10_000, 'the consumer connections closed');
  }, 180_000);
});
