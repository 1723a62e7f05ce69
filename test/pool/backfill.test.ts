/**
 * Backfill in a pool (issue 15, SPEC §8): three workers start with an audience of 3,000
 * members newly mapped to `flow-2` while live updates of those members flow. One elected
 * backfiller publishes one item per member to the member's partition; the partitions' owners
 * export them in stream order with the live updates. Checked on every request the receiver
 * got: each member gets its backfill export (its Idempotency-Key is known: the item's stable
 * key), exactly once in a run without kills, the same key only when a worker was killed; no
 * profile receives an older `bench.seq` after a newer one; a restart exports nothing more.
 * The kill choreography waits for observable states (the backfill's checkpoint and lock in
 * Redis, log lines), never for "it will still be busy then": the backfiller publishes pages of
 * 50 at most 500 items/s (`source.backfillPageSize`, `source.backfillPublishPerSecond`), so
 * its 3,000 items take at least 5.9 s whatever the machine's speed, and the victim — the lock
 * holder — is killed once its checkpoint shows 500 published; the checkpoint read after the
 * kill proves it died mid-publish.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { idempotencyKey } from '../../src/domain/keys.js';
import type { ProfileUpdate } from '../../src/domain/types.js';
import { backfillItemKey } from '../../src/streams/backfill-item.js';
import { backfillLockKeys } from '../../src/worker/backfill-lock.js';
import { runCli, runOnce, sleep } from '../support/backbone.js';
import {
  explainViolations,
  orderViolations,
  poolIdle,
  poolLogs,
  seedOf,
  seqWorkload,
  startPublisher,
  stopGracefully,
  workerOf,
  type PoolWorker,
  usePoolFixture,
} from '../support/pool.js';

const MEMBERS = 3_000;
/** The backfiller's page (one checkpoint each) and pace: 3,000 items take ≥ 5.9 s to publish. */
const PAGE = 50;
const PUBLISH_PER_SECOND = 500;
/** The kill comes once this many are published and checkpointed (≥ 5 s of publishing left). */
const KILL_AT = 500;
const BACKFILL_ID = 'flow-2|aud-2|20';

describe('backfill in a pool of three workers', () => {
  const pool = usePoolFixture();

  async function scenario(name: string, kill: boolean): Promise<void> {
    const { bb, rx } = pool;
    const seed = seedOf(kill ? 151 : 152);
    const s = pool.flow({ name, secondFlow: { rateLimit: 600 } });
    // Until the mapping below, flow-2 maps aud-1 (which nobody enters), not aud-2.
    const flows = s.config.dataflows as Array<{ id: string; audiences: Array<{ id: string; mappingCreatedAt: number }> }>;
    flows[1].audiences[0] = { ...flows[1].audiences[0], id: 'aud-1' };
    Object.assign(s.config.source as object, { backfillPageSize: PAGE, backfillPublishPerSecond: PUBLISH_PER_SECOND });
    bb.writeFile(`${name}.json`, s.config);
    await s.prime();
    // 3,000 profiles enter aud-2 (seq 1); two more updates each (seq 2, 3) flow later.
    const all = seqWorkload({ profiles: MEMBERS, perProfile: 3, prefix: `${name}m`, seed, audience: 'aud-2' });
    const entering = all.filter((u) => u.segmentMembership !== undefined);
    const live = all.filter((u) => u.segmentMembership === undefined);
    await startPublisher({ bb, setup: s, events: entering, perSecond: 100_000 }).done;
    const seeded = await runOnce(s.cfg);
    expect(seeded).toMatchObject({ eventsRead: MEMBERS, failed: 0 });
    expect(rx.delivered(s.path2).length, 'aud-2 is not mapped yet: nothing to flow-2').toBe(0);

    // aud-2 mapped again (a new mapping): its 3,000 members are backfilled to flow-2.
    flows[1].audiences[0] = { ...flows[1].audiences[0], id: 'aud-2', mappingCreatedAt: 20 };
    bb.writeFile(`${name}.json`, s.config);
    const members = entering.map((u) => u.profileId);
    const backfillKeys = new Map(
      members.map((id) => [idempotencyKey({ dataflowId: 'flow-2', profileId: id, event: backfillItemKey({ dataflowId: 'flow-2', audienceId: 'aud-2', profileId: id }) }), id]),
    );
    const liveKeys = new Set(live.map((u) => idempotencyKey({ dataflowId: 'flow-2', profileId: u.profileId, event: `event:${u.eventId}` })));
    const backfillGot = () => rx.delivered(s.path2).filter((r) => backfillKeys.has(r.key));

    const workers: PoolWorker[] = [s.start(), s.start(), s.start()];
    const publisher = startPublisher({ bb, setup: s, events: live, perSecond: 1_500 });
    const redis = new Redis(bb.redis.url, { maxRetriesPerRequest: 1 });
    try {
      const isBackfiller = (w: PoolWorker) => w.logs().some((l) => l.msg === 'backfill: this worker is the backfiller');
      await rx.waitFor(() => workers.some(isBackfiller), 30_000, 'a backfiller elected');
      let killedNote = 'no kill';
      let victim: PoolWorker | undefined;
      if (kill) {
        const { lock: lockKey } = backfillLockKeys({ keyPrefix: s.prefix, pool: s.durable });
        const checkpoint = async () =>
          JSON.parse((await redis.hget(`${s.prefix}backfills`, BACKFILL_ID)) ?? '{}') as { sent?: number; done?: boolean };
        // The backfiller is publishing: its checkpoint shows KILL_AT published, not done.
        let holder: string | null = null;
        for (const deadline = Date.now() + 60_000; holder === null; await sleep(20)) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${KILL_AT} backfill items published${poolLogs(workers)}`);
          const [state, lock] = await Promise.all([checkpoint(), redis.get(lockKey)]);
          if ((state.sent ?? 0) >= KILL_AT && lock !== null) holder = lock.slice(0, lock.lastIndexOf(':'));
        }
        victim = workerOf(workers, holder ?? undefined);
        expect(victim, `the lock holder ${holder} is one of the workers`).toBeDefined();
        victim!.kill('SIGKILL');
        await victim!.exited;
        const atKill = await checkpoint();
        killedNote = `killed backfiller ${victim!.name} at ${atKill.sent ?? 0}/${MEMBERS} published, ${backfillGot().length} backfill exports`;
        expect(atKill.done, `the backfiller died mid-publish (${killedNote})`).not.toBe(true);
        expect(atKill.sent ?? 0).toBeLessThan(MEMBERS);
        workers.push(s.start());
      }
      await publisher.done;
      await rx.waitFor(() => new Set(backfillGot().map((r) => r.key)).size >= MEMBERS, 120_000, 'every member backfilled');
      for (let i = 0; i < 600 && !(await poolIdle(bb, s)); i++) await sleep(100);
      await sleep(300); // room for a (wrong) extra export
      for (const w of workers) if (w.running) await stopGracefully(w);

      const got = rx.delivered(s.path2);
      const byKey = new Map<string, number>();
      for (const r of got) byKey.set(r.key, (byKey.get(r.key) ?? 0) + 1);
      const unknown = [...byKey.keys()].filter((k) => !backfillKeys.has(k) && !liveKeys.has(k));
      const backfillRequests = got.filter((r) => backfillKeys.has(r.key)).length;
      const missing = [...backfillKeys].filter(([k]) => !byKey.has(k)).map(([, id]) => id);
      console.log(`[pool-backfill ${name}] seed ${seed}; ${killedNote}; ${backfillRequests} backfill requests for ${MEMBERS} members (${backfillRequests - MEMBERS} duplicates, each with its member's key), ${got.length} requests to flow-2`);
      expect(missing, `members without a backfill export${poolLogs(workers)}`).toEqual([]);
      expect(unknown, 'every export to flow-2 is a live update or a member backfill').toEqual([]);
      // A member's backfill exports (once, or again after the kill) all carry its own key.
      const strangers = got.filter((r) => backfillKeys.has(r.key) && (r.body as { bench?: { pid?: string } }).bench?.pid !== backfillKeys.get(r.key));
      expect(strangers.map((r) => r.key), 'a backfill export carries the key of the member it exports').toEqual([]);
      if (!kill) expect(backfillRequests, 'no kill: each member exported once by the backfill, no duplicate at all').toBe(MEMBERS);
      if (victim) {
        const takeover = workers.filter((w) => w !== victim).some(isBackfiller);
        expect(takeover, `another worker took the backfill over${poolLogs(workers)}`).toBe(true);
      }
      const violations = orderViolations(rx.requests, s.path2);
      expect(violations, `older state after newer${explainViolations(rx.requests, violations, got[0]?.at ?? 0)}`).toEqual([]);
      // Every live update reached the endpoint too (at least once).
      expect([...liveKeys].filter((k) => !byKey.has(k)).length, 'live updates of flow-2 missing').toBe(0);

      // `pool status` shows the backfill as published, and nobody holding the lock.
      const status = await runCli(['pool', 'status', '--config', s.cfg, '--json']);
      const report = JSON.parse(status.stdout.trim().split('\n').pop() ?? '{}') as { backfills: Array<{ id: string; published: number; total?: number; done: boolean }>; backfiller?: unknown };
      expect(report.backfills.find((b) => b.id === BACKFILL_ID)).toMatchObject({ done: true, total: MEMBERS });
      expect(report.backfiller).toBeUndefined();

      // A restart exports nothing more.
      const before = rx.requests.length;
      expect(await runOnce(s.cfg)).toMatchObject({ delivered: 0, backfilled: 0, failed: 0 });
      expect(rx.requests.length).toBe(before);
    } finally {
      redis.disconnect();
      await publisher.stop();
    }
  }

  it('no kill: every member exported exactly once, in order with its live updates; a restart exports nothing', async () => {
    await scenario('pbf', false);
  }, 240_000);

  it('the backfiller SIGKILLed mid-backfill and a worker started: every member exported, duplicates only with the same key, order holds', async () => {
    await scenario('pbk', true);
  }, 240_000);
});

export type { ProfileUpdate };
