/**
 * No loss under crash (SPEC §6, issue 3): updates published to JetStream; the worker (`run`,
 * not --once) is killed with SIGKILL twice while it works and restarted at once each time.
 * Every export a single clean run makes reaches the receiver at least once, and a duplicate
 * carries the same body (same Idempotency-Key, same payload).
 *
 * The clean run's exports come from the oracle (the domain's pure functions applied in source
 * order, test/support/backbone.ts): each workload is built so that every update exports once.
 * The source's ack wait is short (`source.ackWaitMs`), so unacknowledged messages come back
 * within seconds, not 30 s.
 */
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { ProfileUpdate } from '../../src/domain/types.js';
import {
  consumerState,
  coverage,
  exportingWorkload,
  oracle,
  prng,
  publish,
  readSnapshots,
  settle,
  singleFlow,
  sleep,
  useBackboneAndReceiver,
  type Backbone,
  type Oracle,
  type RecordingReceiver,
} from '../support/backbone.js';

const ACK_WAIT_MS = 2_000;

describe('no loss under crash: SIGKILL while working, restart at once', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;

  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));

  /**
   * A single-flow config on its own stream, durable, Redis prefix and receiver path. The pool
   * lease is short too: a killed worker's partitions are free again after 2.5 s.
   */
  const setup = (name: string) => singleFlow({ bb, rx, name, ackWaitMs: ACK_WAIT_MS, source: { leaseMs: 2_500 } });

  /**
   * Publishes `events`, runs a worker, SIGKILLs it when 15–25 % and 55–65 % of the expected
   * exports have arrived, restarts it at once each time, and waits until every expected
   * export arrived (or the consumer is drained and nothing arrives for 3 s). Then checks.
   */
  async function crashTwice(name: string, events: ProfileUpdate[], seed: number): Promise<{ expected: Oracle; log: string[] }> {
    const rand = prng(seed);
    const s = setup(name);
    const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
    expect(expected.exports, 'the workload makes every update export once').toHaveLength(events.length);
    await s.prime();
    await publish(bb, s.cfg, `${name}.jsonl`, events);

    const got = () => rx.delivered(s.path);
    const distinct = (): number => new Set(got().map((r) => r.key)).size;
    const log: string[] = [];
    const started = Date.now();
    let worker = s.start();
    for (const fraction of [0.15 + rand() * 0.1, 0.55 + rand() * 0.1]) {
      const threshold = Math.floor(fraction * expected.exports.length);
      await rx.waitFor(() => distinct() >= threshold || !worker.running, 60_000, `${threshold} exports`);
      expect(worker.running, `worker exited before the kill:\n${worker.stderr.slice(-3_000)}`).toBe(true);
      worker.kill('SIGKILL');
      expect((await worker.exited).signal).toBe('SIGKILL');
      log.push(`killed at +${Date.now() - started} ms after ${distinct()} distinct exports`);
      worker = s.start();
    }
    await settle({ bb, rx, stream: s.stream, durable: s.durable, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 90_000 });
    const c = coverage(got(), expected);
    log.push(`${expected.exports.length - c.missing.length}/${expected.exports.length} covered at +${Date.now() - started} ms, ${c.duplicates} duplicates`);
    console.log(`[crash ${name}] seed ${seed}; ${log.join('; ')}`);

    // Why a key is missing or wrong: that profile's requests in arrival order.
    const eventOf = (key: string): string => events[expected.exports.findIndex((x) => x.key === key)]?.eventId ?? '?';
    const explain = (keys: string[]): string =>
      keys
        .slice(0, 2)
        .map((k) => {
          const e = expected.byKey.get(k);
          const history = got()
            .filter((r) => expected.byKey.get(r.key)?.profileId === e?.profileId)
            .map((r) => `  +${r.at - started}ms ${r.key === k ? '*' : ' '}${eventOf(r.key)} ${r.raw}`);
          return `\n${eventOf(k)} expected ${JSON.stringify(e?.payload)}; requests of ${e?.profileId}:\n${history.join('\n')}`;
        })
        .join('');
    const about = `seed ${seed} (HD_CRASH_SEED=${seed} reproduces the workload); ${log.join('; ')}`;
    expect(c.missing, `${about}: exports of the clean run that never arrived${explain(c.missing)}`).toEqual([]);
    expect(c.unexpected, `${about}: exports a clean run does not make`).toEqual([]);
    expect(c.conflictingDuplicates, `${about}: same Idempotency-Key, different body${explain(c.conflictingDuplicates)}`).toEqual([]);
    const wrong = got().filter((r) => !isDeepStrictEqual(r.body, expected.byKey.get(r.key)?.payload)).map((r) => r.key);
    expect(wrong, `${about}: bodies that differ from the clean run's${explain(wrong)}`).toEqual([]);

    // The last worker drains the consumer and stops gracefully on SIGTERM.
    expect(worker.running, worker.stderr.slice(-3_000)).toBe(true);
    worker.kill('SIGTERM');
    const end = await worker.exited;
    expect(end.code, end.stderr.slice(-3_000)).toBe(0);
    expect(await consumerState(bb.nats.url, s.stream, s.durable)).toMatchObject({ pending: 0, ackPending: 0 });
    return { expected, log };
  }

  const seedOf = (salt: number): number => Number(process.env.HD_CRASH_SEED ?? (Date.now() + salt) % 1_000_000);

  it('1,500 profiles, one membership entry each: every export arrives at least once, duplicates identical', async () => {
    // No update depends on another: this isolates at-least-once delivery and the replay of
    // an update merged before the crash but not yet delivered (a membership-only update
    // applied again would look like "no change").
    const seed = seedOf(1);
    const events: ProfileUpdate[] = Array.from({ length: 1_500 }, (_, i) => ({
      profileId: `one-${i}`,
      eventId: `one-${i}-e0`,
      segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-01-01T00:00:00Z' } } },
    }));
    const { expected } = await crashTwice('crashone', events, seed);
    const snaps = await readSnapshots(bb.redis.url, 'crashone:', [...expected.snapshots.keys()]);
    const diverged = [...expected.snapshots].filter(([id, snap]) => !isDeepStrictEqual(snaps.get(id), snap)).map(([id]) => id);
    expect(diverged, 'snapshots that differ from the clean run').toEqual([]);
  }, 150_000);

  it('5,000 updates of 500 profiles (entries, exits, identities, mapped writes): every export of a clean run arrives, with its body', async () => {
    // Each profile's updates depend on the ones before (an attribute write exports only
    // while the profile is in the audience), so this also needs per-profile order to hold
    // across the redelivery of the messages that were in flight at the kill.
    const seed = seedOf(2);
    const { events } = exportingWorkload({ profiles: 500, perProfile: 10, audience: 'aud-1', prefix: 'c', seed });
    expect(events).toHaveLength(5_000);
    const { expected } = await crashTwice('crashmany', events, seed);
    const snaps = await readSnapshots(bb.redis.url, 'crashmany:', [...expected.snapshots.keys()]);
    const diverged = [...expected.snapshots].filter(([id, snap]) => !isDeepStrictEqual(snaps.get(id), snap)).map(([id]) => id);
    expect(diverged, `seed ${seed}: snapshots that differ from the clean run`).toEqual([]);
  }, 150_000);

  it("after a restart, a newer update of a profile does not overtake its updates that were in flight at the kill", async () => {
    // m1 (enter) is merged and its export is held by the receiver; m2 (exit) waits behind it
    // in the profile's actor. SIGKILL. m3 (enter again, membership only) is published after
    // the kill and the worker restarts at once: m3 must still come after m1 and m2.
    const s = setup('crashorder');
    const t = (n: number) => `2026-01-01T00:00:0${n}Z`;
    const m1: ProfileUpdate = { profileId: 'x', eventId: 'x-m1', attributes: { person: { name: { firstName: 'A' } } }, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(1) } } } };
    const m2: ProfileUpdate = { profileId: 'x', eventId: 'x-m2', segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: t(2) } } } };
    const m3: ProfileUpdate = { profileId: 'x', eventId: 'x-m3', segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: t(3) } } } };
    const expected = oracle([m1, m2, m3], { audiences: s.audiences, dataflows: [s.rules] });
    expect(expected.exports).toHaveLength(3);
    const [k1, k2, k3] = expected.exports.map((e) => e.key);

    let released = false;
    let release!: () => void;
    const held = new Promise<number>((r) => (release = () => r(200)));
    rx.respond = ({ path, key }) => (path === s.path && key === k1 && !released ? held : 200);
    try {
      await s.prime();
      await publish(bb, s.cfg, 'crashorder-1.jsonl', [m1, m2]);
      const first = s.start();
      await rx.waitFor(() => rx.requests.some((r) => r.key === k1), 20_000, 'the export of m1');
      await sleep(300); // m2 is delivered to the worker and waits behind m1
      first.kill('SIGKILL');
      await first.exited;
      released = true;
      release();

      await publish(bb, s.cfg, 'crashorder-2.jsonl', [m3]);
      const second = s.start();
      await rx
        .waitFor(() => [k1, k2, k3].every((k) => rx.delivered(s.path).some((r) => r.key === k)), ACK_WAIT_MS * 3 + 5_000, 'the exports of m1, m2, m3')
        .catch(() => undefined);
      // Let anything else (a late duplicate) arrive, then stop.
      await sleep(500);
      second.kill('SIGTERM');
      await second.exited;

      const seen = rx.delivered(s.path);
      const name = new Map([[k1, 'm1'], [k2, 'm2'], [k3, 'm3']]);
      const firstArrivals = [...new Set(seen.map((r) => name.get(r.key) ?? r.key))];
      expect(firstArrivals, `exports in arrival order: ${seen.map((r) => `${name.get(r.key)} ${r.raw}`).join(' | ')}`).toEqual(['m1', 'm2', 'm3']);
      for (const r of seen) expect(r.body, `body of ${name.get(r.key)}`).toEqual(expected.byKey.get(r.key)?.payload);
      const snap = (await readSnapshots(bb.redis.url, 'crashorder:', ['x'])).get('x');
      expect(snap, 'final snapshot: back in the audience (m3 last)').toEqual(expected.snapshots.get('x'));
    } finally {
      released = true;
      release();
      rx.respond = () => 200;
    }
  }, 60_000);
});
