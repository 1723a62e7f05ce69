/**
 * The pool-wide rate limit (issue 6, SPEC §7): three workers, one dataflow with
 * `rateLimit: 300`, a backlog of 1,500 exports. The endpoint never sees more than 300 + 5%
 * (315) in any sliding one-second window — the limit holds for the pool, not per worker (three
 * per-worker limiters would let ~900/s through) — and the backlog still drains at about
 * 300/s: first to last request within 4.5–7 s ((1500 − burst) / 285 ≈ 5.2 s at the pace). Every export
 * arrives, in per-profile order, and each of the three workers sent a share of them.
 *
 * Measured where SPEC §7 counts: the arrival times at the receiver (in this vitest process),
 * the most in any sliding window `[t, t + 1000 ms)` (`maxInWindow`), with no allowance on top
 * of 315. The time from permit to arrival varies (a worker's loop stalls between its permit
 * and the write, the receiver's loop before it reads; a stall squeezes arrivals together):
 * the pool limiter's schedule budgets 50 ms of that (`deliveryJitterMs`) besides the 50 ms a
 * permit may be handed out late (`tokenTtlMs`), and so runs at ≈95% of the rate; a request
 * whose permit is older than that 50 ms right before the socket (credentials, a stalled loop)
 * takes a new one (`HttpSink.attempt`). (It budgeted
 * only the lateness before, and sliding windows at the receiver reached 526 and 532 at
 * `rateLimit: 500`, bound 525.)
 *
 * The machine's own ceiling: three workers on two shared cores export only a few hundred
 * updates per second, so right before, the same pool drains 1,500 exports of a second
 * dataflow at 10,000/s. The 7 s upper bound holds whenever that unthrottled drain took under
 * 4.6 s (above ~330/s); on a machine too busy even for that, the limited drain may take up to
 * 1.3 × the unthrottled one + 1 s. A limiter that throttles below its rate on a machine that
 * can do more still fails; the 4.5 s lower bound and the window bounds never bend.
 */
import { describe, expect, it } from 'vitest';
import {
  coverage,
  oracle,
  publish,
} from '../support/backbone.js';
import type { DataflowRules } from '../../src/domain/types.js';
import { maxInWindow } from '../support/receiver.js';
import {
  explainMissing,
  explainViolations,
  orderViolations,
  partitionsOf,
  POOL,
  seedOf,
  seqWorkload,
  settlePool,
  stopGracefully,
  stoppedSummary,
  usePoolFixture,
} from '../support/pool.js';

const RATE = 300;
const LIMIT = Math.floor(RATE * 1.05);
const N = 1_500;

describe('pool-wide rate limit: three workers, one dataflow at 300/s', () => {
  const pool = usePoolFixture();

  it('never more than 315 in any 1-second window, and a backlog of 1,500 drains at about 300/s', async () => {
    const { bb, rx } = pool;
    const seed = seedOf(51);
    const s = pool.flow({ name: 'rl', rateLimit: RATE, secondFlow: { rateLimit: 10_000 } });
    const rules = [s.rules, s.rules2 as DataflowRules];
    await s.prime();

    // The pool first (no partition moves while the limit is measured), then each backlog,
    // published far faster than it drains.
    const workers = await s.startSharing(3);
    const drain = async (prefix: string, audience: string, path: string) => {
      const events = seqWorkload({ profiles: 300, perProfile: N / 300, prefix, seed, audience });
      expect(partitionsOf(events).size).toBe(POOL.partitions);
      const expected = oracle(events, { audiences: s.audiences, dataflows: rules });
      expect(expected.exports.filter((e) => (e.dataflowId === 'flow-2' ? s.path2 : s.path) === path)).toHaveLength(N);
      const got = () => rx.delivered(path);
      // `publish` (the CLI, another process: publishing in this one would stall the
      // receiver's event loop and squeeze its arrival times).
      const t0 = Date.now();
      await publish(bb, s.cfg, `${prefix}.jsonl`, events);
      const published = Date.now() - t0;
      const deliveredWhenPublished = got().length;
      await settlePool({ bb, rx, setup: s, done: () => coverage(got(), expected).missing.length === 0, timeoutMs: 30_000 });
      const times = rx.requests.filter((r) => r.path === path).map((r) => r.at);
      const span = Math.max(...times) - Math.min(...times);
      return { events, expected, t0, published, deliveredWhenPublished, times, span, c: coverage(got(), expected) };
    };

    // The machine's ceiling: the same pool, a dataflow at 10,000/s.
    const fast = await drain('q', 'aud-2', s.path2 as string);
    expect(fast.c.missing, 'unthrottled exports that never arrived').toEqual([]);
    // The measured one.
    const slow = await drain('r', 'aud-1', s.path);
    const { times, t0, c, events, expected } = slow;
    for (const w of workers) expect(await stopGracefully(w), w.stderr.slice(-2_000)).toBe(0);

    const first = Math.min(...times);
    const last = Math.max(...times);
    const inSecond = maxInWindow(times, 1_000);
    const inTwo = maxInWindow(times, 2_000);
    console.log(
      `[rate-limit] seed ${seed}; unthrottled: ${N} in ${fast.span} ms (${((N * 1000) / fast.span).toFixed(0)}/s); ` +
        `limited: published in ${slow.published} ms (${slow.deliveredWhenPublished} delivered by then); ${times.length} requests from +${first - t0} to +${last - t0} ms ` +
        `(${(last - first) / 1000} s, ${(((times.length - 1) * 1000) / (last - first)).toFixed(1)}/s); ` +
        `most in 1 s: ${inSecond}, in 2 s: ${inTwo}`,
    );

    expect(c.missing, `seed ${seed}: exports that never arrived${explainMissing(c.missing, expected, events, rx.requests, t0)}`).toEqual([]);
    expect(c.unexpected).toEqual([]);
    expect(slow.deliveredWhenPublished, 'exports already delivered when the backlog was published (it must be a backlog)').toBeLessThanOrEqual(N / 2);
    // The limit, pool-wide, over the whole run (SPEC §7), the publisher's run included: a
    // request held between its permit and the socket longer than the schedule budgets for
    // (CPU contention with the publisher on the same two cores once let 330 arrive in one
    // window) takes a new permit first (HttpSink.attempt).
    expect(inSecond, 'most requests in any sliding 1-second window at the receiver').toBeLessThanOrEqual(LIMIT);
    expect(inTwo, 'most requests in any sliding 2-second window at the receiver').toBeLessThanOrEqual(2 * LIMIT);
    // …and the backlog drains at about the limit.
    expect(last - first, 'first to last request (ms)').toBeGreaterThanOrEqual(4_500);
    const upper = Math.max(7_000, Math.round(1.3 * fast.span + 1_000));
    expect(last - first, `first to last request (ms); the unthrottled drain took ${fast.span} ms`).toBeLessThanOrEqual(upper);
    const sorted = [...times].sort((a, b) => a - b);
    const gaps = sorted.slice(1).map((t, i) => t - sorted[i]);
    // No idle gap while work is queued (a loaded machine stalls a worker for a few hundred ms).
    expect(Math.max(...gaps), 'largest gap between two requests (ms)').toBeLessThan(1_000);
    // All three workers sent their share of the limited flow (the limit held with three senders).
    const limited = workers.map((w) => stoppedSummary(w)?.dataflows?.['flow-1']?.delivered ?? -1);
    for (const [i, n] of limited.entries()) expect(n, `${workers[i].name} delivered (flow-1)`).toBeGreaterThanOrEqual(N / 10);
    expect(limited.reduce((a, b) => a + b, 0), 'flow-1 exports delivered by the three').toBeGreaterThanOrEqual(N);
    const v = orderViolations(rx.requests, s.path);
    expect(v, `exports that went back in time${explainViolations(rx.requests, v, t0)}`).toEqual([]);
  }, 180_000);
});
