/**
 * The pool's retry queues survive a worker's death (issue 13), with real nats-server and
 * redis-server: entries queued by a worker that is SIGKILLed are drained by the partition's next
 * owner; none is lost, and no profile gets an older state after a newer one.
 *
 * Not timing-dependent: the destination's backoff (equal jitter from 20 s: 10–20 s) keeps
 * every failed entry waiting in Redis for at least 10 s after its failed attempt, far longer
 * than the test needs to see the queue full, kill the worker and bring the endpoint back.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { partitionOf } from '../../src/domain/partition.js';
import { publish } from '../support/backbone.js';
import { orderViolations, POOL, seqWorkload, usePoolFixture } from '../support/pool.js';
import { newestSeq, queuedCount, until, waitForLog } from '../support/pool-queue.js';

const PROFILES = 200;
const PER_PROFILE = 3;

describe('pool retry queues and a SIGKILLed worker', () => {
  const pool = usePoolFixture();

  it("every export queued by the killed worker is delivered by the partition's next owner; none older after newer", async () => {
    const { bb, rx } = pool;
    const s = pool.flow({ name: 'rqk', destination: { retry: { minDelayMs: 20_000, maxDelayMs: 30_000 } } });
    await s.prime();
    let failing = true;
    rx.respond = () => (failing ? 503 : 200);
    const w1 = s.start();
    const w2 = s.start();
    await Promise.all([w1, w2].map((w) => waitForLog(w, (l) => l.msg === 'pool: partition acquired', 30_000, 'a partition acquired')));
    const events = seqWorkload({ profiles: PROFILES, perProfile: PER_PROFILE, prefix: 'k', seed: 7 });
    await publish(bb, s.cfg, 'rqk.jsonl', events);
    // Every profile has its export queued (one per profile: the newest supersedes).
    await until(async () => (await queuedCount(bb.redis.url, s.prefix, 'flow-1')) === PROFILES, 60_000, `${PROFILES} queued exports`);

    // The worker to kill holds partitions with queued entries.
    const redis = new Redis(bb.redis.url);
    let victim = w1;
    let victimQueued = 0;
    try {
      const marker = (pid: number | undefined) => `-${pid}-`;
      for (const w of [w1, w2]) {
        let n = 0;
        for (let p = 0; p < POOL.partitions; p++) {
          const owner = await redis.get(s.leaseKey(p));
          if (owner?.includes(marker(w.child.pid))) n += await redis.zcard(`${s.prefix}rq:d:flow-1:${p}`);
        }
        if (n > victimQueued) [victim, victimQueued] = [w, n];
      }
    } finally {
      redis.disconnect();
    }
    expect(victimQueued).toBeGreaterThan(0);
    victim.kill('SIGKILL');
    await victim.exited;
    failing = false;
    const survivor = victim === w1 ? w2 : w1;

    const newest = (): Map<string, number> => newestSeq(rx, s.path);
    const profiles = [...new Set(events.map((e) => e.profileId))];
    await rx.waitFor(() => {
      const m = newest();
      return profiles.every((id) => m.get(id) === PER_PROFILE);
    }, 120_000, 'the newest state of every profile delivered');
    await until(async () => (await queuedCount(bb.redis.url, s.prefix, 'flow-1')) === 0, 30_000, 'an empty queue');
    // eslint-disable-next-line no-console
    console.log(`killed worker had ${victimQueued} queued entries; partitions of the profiles delivered: ${new Set(profiles.map((p) => partitionOf(p, POOL.partitions))).size}`);
    expect(orderViolations(rx.requests, s.path)).toEqual([]);
    expect(survivor.running).toBe(true);
    survivor.kill('SIGKILL');
    await survivor.exited;
  }, 300_000);
});
