/**
 * `redisSendSlots`: the rate limiter of a pool of workers (SPEC §7) — one schedule of send
 * slots in Redis, shared by every worker of the pool, handed out in small batches.
 */
import type { Redis } from 'ioredis';
import { asyncScheduler, type SchedulerLike } from 'rxjs';
import type { StoreError } from '../errors.js';
import { TOKEN_BUCKET_DEFAULTS } from './memory-rate-limiter.js';
import type { RateLimiter } from './rate-limiter.js';
import { RedisSlotHolder } from './redis-slot-holder.js';

export interface RedisSendSlotsOptions {
  /** The client (not closed by `close()`). Reconnection and command timeouts are its own. */
  redis: Redis;
  /** The bucket's key, one per dataflow, the same in every worker, e.g. `hd:rl:<dataflowId>`. */
  key: string;
  /** Permits per second for the whole pool; fractional allowed. At most 10,000. */
  rate: number;
  /**
   * The pool's slack: any 1-second window holds at most `ceil(rate) + burst − 1` permits, and
   * — as long as the time from permit to arrival varies by at most `deliveryJitterMs` — as
   * many requests at the endpoint, whatever the number of workers, the round trip or the
   * event-loop lag. It pays for `tokenTtlMs + deliveryJitterMs`; where it is short of that,
   * the pool runs a little below `rate` (see the bound below).
   * @default max(1, floor(rate * 0.05)) — SPEC §7's 5%: `ceil(rate) + burst − 1 ≤ floor(1.05 × rate)`
   */
  burst?: number;
  /**
   * How much the time from a permit to the request's arrival at the endpoint may vary (the
   * worker's event loop between the permit and the write, the network, the endpoint's own
   * loop before it reads), in ms: the schedule leaves room for it, so the 1-second bound holds
   * where the endpoint counts, not only where the permits are handed out. Only the variation
   * counts; a constant delay shifts every window alike. It is also the limiter's
   * `maxPermitAgeMs`: the HTTP sink takes a new permit for a request whose permit is older
   * than this right before the socket. @default 50
   */
  deliveryJitterMs?: number;
  /**
   * Most slots one worker takes per round trip (it asks for fewer when fewer wait). Small,
   * so that one worker cannot hoard what the others wait for.
   * @default max(1, ceil(rate / 100)) — 10 ms worth of permits
   */
  reserve?: number;
  /**
   * How long after its slot (a time on the Redis server's clock) a permit may still be
   * handed out: how long a worker's event loop may stall without losing the slots it holds.
   * Slots not handed out by then are dropped, never used later. @default 50
   */
  tokenTtlMs?: number;
  /** A Redis call without a reply after this long counts as failed. @default 1000 */
  requestTimeoutMs?: number;
  /** First pause after a failed Redis call; it doubles with every failure in a row. @default 25 */
  retryMinDelayMs?: number;
  /** Longest pause between two attempts while Redis fails. @default 1000 */
  retryMaxDelayMs?: number;
  /**
   * Timers. Time itself is read from the system clock (`performance`), since slots are times
   * on the Redis server's clock. @default asyncScheduler
   */
  scheduler?: SchedulerLike;
  /** Told of every failed Redis call (a `StoreError` with the cause attached). @default ignore */
  onError?: (err: StoreError) => void;
}

/** The defaults of `redisSendSlots`, named in one place. */
export const REDIS_SEND_SLOTS_DEFAULTS = {
  burst: (rate: number): number => Math.max(1, Math.floor(rate * 0.05)),
  deliveryJitterMs: 50,
  reserve: (rate: number): number => Math.max(1, Math.ceil(rate / 100)),
  tokenTtlMs: 50,
  /**
   * How far behind Redis's clock the first slot of an idle schedule may lie: after an idle
   * spell, or a stall of every worker, the pool catches up that much at once. The rest of
   * `tokenTtlMs` is the time the reply has to be handled in before those slots are too old.
   */
  catchUpMs: (tokenTtlMs: number): number => Math.max(tokenTtlMs / 2, tokenTtlMs - 10),
  /**
   * How far ahead of Redis's clock a batch may start: a worker gets its next batch before its
   * last one runs out, and the pool's schedule runs on through a stall of every worker of up to
   * `aheadMs + catchUpMs` (only the slots more than `tokenTtlMs` old by its end are lost).
   */
  aheadMs: (tokenTtlMs: number): number => tokenTtlMs / 2,
  requestTimeoutMs: 1_000,
  retryMinDelayMs: 25,
  retryMaxDelayMs: 1_000,
  scheduler: asyncScheduler as SchedulerLike,
  maxRate: TOKEN_BUCKET_DEFAULTS.maxRate,
  /**
   * The most permits per second the pool hands out with the defaults at `rate` (a queue that
   * never empties): `min(rate, 1000 × M / (1000 + tokenTtlMs + deliveryJitterMs))`, with
   * `M = ceil(rate) + burst − 1`.
   */
  pace: (rate: number): number => {
    const d = REDIS_SEND_SLOTS_DEFAULTS;
    return 1000 / slotIntervalMs({ rate, burst: d.burst(rate), tokenTtlMs: d.tokenTtlMs, deliveryJitterMs: d.deliveryJitterMs });
  },
} as const;

/** A pool-wide limiter; `close()` stops it (waiters error with `ERR_RATE_LIMITER`). */
export type RedisSendSlots = RateLimiter & { close(): void };

/**
 * The send slots of a whole pool, kept in Redis as a schedule (GCRA): Redis hands out send
 * slots — times on its own clock, spaced `I` ms apart, pool-wide — and each worker hands its
 * slots to its `acquire()` waiters, first in, first out, each no earlier than its slot and no
 * later than `tokenTtlMs` (T) after it. A Lua script gives `reserve` slots at a time (fewer
 * when fewer wait), from the next free one, or from up to `catchUpMs` back when the schedule
 * is idle, as long as that is at most `aheadMs` ahead; otherwise it says how long until it is.
 * A worker asks for no more slots than it has waiters beyond the slots it holds (one request
 * in flight), so slots rarely go unused; it waits for a held slot with one timer, and for the
 * advised time with another, through `scheduler`.
 *
 * Slots are times on the Redis clock, so a worker measures the offset to its own: every reply
 * carries Redis's `TIME`, read inside the script, which ran after the request was sent and
 * before its reply was handled, so the offset lies in `[redisTime − handled, redisTime − sent]`.
 * The worker intersects these intervals (each widened by 500 ppm per ms of age for drift; an
 * empty intersection — a clock step — starts over) and hands slot `s` out only between
 * `s − offsetLow` and `s + T − offsetHigh` on its own clock: within `[s, s + T]` on Redis's,
 * whatever the offset truly is. A reply handled late (an event loop stalled on a loaded
 * machine) therefore costs nothing by being late, and a stall costs only the slots that are
 * more than T old when it ends. (Before, tokens lived 20 ms from the request's send: every
 * stall longer than that discarded the tokens in flight, and a pool stalled often by a loaded
 * machine delivered a third of its rate.)
 *
 * The bound: any two slots are at least `I = max(1000/rate, (1000 + T + J)/M)` ms apart, with
 * `M = ceil(rate) + burst − 1` and `J = deliveryJitterMs`, and a permit is handed out within T
 * after its slot. So the permits the whole pool hands out in any 1-second window
 * `[a, a + 1000)` have their slots in `[a − T, a + 1000)`, which holds at most `M` of them; and
 * if the time from permit to arrival at the endpoint lies in `[d, d + J]` for some d, the
 * requests arriving in any 1-second window `[a, a + 1000)` have their slots in
 * `[a − d − T − J, a − d + 1000)`, a span of `1000 + T + J`, which holds at most
 * `ceil((1000 + T + J)/I) ≤ M` of them: at most `ceil(rate) + burst − 1` requests in any sliding
 * 1-second window at the endpoint, whatever the number of workers, the reservation size
 * (`reserve`, `aheadMs`, `catchUpMs` only decide who gets which slot), the round trip or the
 * lag — as long as the clocks drift apart by less than 500 ppm and do not step while a slot is
 * held. With the default burst (`max(1, floor(0.05 × rate))`) `M ≤ floor(1.05 × rate)`:
 * SPEC §7's 5%, where the endpoint counts (a fractional rate under 20/s gets `ceil(rate)`: a
 * window holds whole requests).
 *
 * Why J: before, the schedule paid only for T and the burst left 1% for everything after the
 * permit; the endpoint of a loaded pool at `rateLimit: 500` counted 526 and 532 in sliding
 * 1-second windows (bound 525), slots spread over 1062–1074 ms arriving within one second:
 * permits handed out late by a stalled worker (≤ T) and then written or read late again.
 *
 * The price of `T + J` is the pace, `min(rate, 1000 × M/(1000 + T + J))` per second
 * (`REDIS_SEND_SLOTS_DEFAULTS.pace`): with the defaults (T = J = 50 ms) 94.5% of the rate at
 * 100/s, 95.2% at 300/s, 95.3% at 500/s, 95.4% at 10,000/s, and 1000/1100 = 90.9% below 40/s
 * (where `M = ceil(rate)`: a slack of one request is already more than 5%).
 * Round trips: about one per `reserve` permits per worker, plus the ones that find no slot
 * close enough yet (about one per batch per other waiting worker).
 *
 * While Redis fails or does not answer, waiters wait (no permit without a slot: fail closed;
 * the slots already held are still handed out in their time, so until at most
 * `aheadMs + reserve × I + T` after the last reply), `onError` is told, and the worker retries
 * with a doubling pause (`retryMinDelayMs` … `retryMaxDelayMs`) until Redis answers again.
 * Unsubscribing a waiter gives its place up.
 *
 * @example
 * const limiter = redisSendSlots({ redis, key: `hd:rl:${dataflow.id}`, rate: dataflow.rateLimit });
 * jobs$.pipe(rateLimit({ limiter }), mergeMap((job) => sink.send(job)))
 * // on shutdown
 * limiter.close();
 */
export function redisSendSlots(options: RedisSendSlotsOptions): RedisSendSlots {
  const d = REDIS_SEND_SLOTS_DEFAULTS;
  const { rate } = options;
  if (!(rate > 0 && rate <= d.maxRate)) {
    throw new RangeError(`redisSendSlots: rate must be > 0 and ≤ ${d.maxRate}, got ${rate}`);
  }
  const burst = options.burst ?? d.burst(rate);
  if (!(burst >= 1) || !Number.isInteger(burst)) {
    throw new RangeError(`redisSendSlots: burst must be an integer ≥ 1, got ${burst}`);
  }
  const tokenTtlMs = options.tokenTtlMs ?? d.tokenTtlMs;
  if (!(tokenTtlMs > 0 && Number.isFinite(tokenTtlMs))) {
    throw new RangeError(`redisSendSlots: tokenTtlMs must be > 0, got ${tokenTtlMs}`);
  }
  const reserve = options.reserve ?? d.reserve(rate);
  if (!(reserve >= 1) || !Number.isInteger(reserve)) {
    throw new RangeError(`redisSendSlots: reserve must be an integer ≥ 1, got ${reserve}`);
  }
  if (!options.key) throw new RangeError('redisSendSlots: key must not be empty');
  const deliveryJitterMs = options.deliveryJitterMs ?? d.deliveryJitterMs;
  if (!(deliveryJitterMs >= 0 && Number.isFinite(deliveryJitterMs))) {
    throw new RangeError(`redisSendSlots: deliveryJitterMs must be ≥ 0, got ${deliveryJitterMs}`);
  }
  return new RedisSlotHolder({
    redis: options.redis,
    key: options.key,
    intervalMs: slotIntervalMs({ rate, burst, tokenTtlMs, deliveryJitterMs }),
    reserve,
    tokenTtlMs,
    catchUpMs: d.catchUpMs(tokenTtlMs),
    aheadMs: d.aheadMs(tokenTtlMs),
    deliveryJitterMs,
    requestTimeoutMs: options.requestTimeoutMs ?? d.requestTimeoutMs,
    retryMinDelayMs: options.retryMinDelayMs ?? d.retryMinDelayMs,
    retryMaxDelayMs: options.retryMaxDelayMs ?? d.retryMaxDelayMs,
    scheduler: options.scheduler ?? d.scheduler,
    onError: options.onError,
  });
}

/**
 * Margin (ms) by which the slots' spacing is widened, for sums of floating-point times (Redis
 * keeps µs times near 1.7e15, to a quarter µs).
 */
const SPACING_MARGIN_MS = 0.001;

/**
 * The spacing (ms) of the pool's send slots: `max(1000/rate, (1000 + T + J)/M)` with
 * `M = ceil(rate) + burst − 1`, widened by a float margin. Any span of `1000 + T + J` ms then
 * holds at most M slots (see `redisSendSlots` for why that bounds every sliding 1-second
 * window at the endpoint).
 */
export function slotIntervalMs(o: { rate: number; burst: number; tokenTtlMs: number; deliveryJitterMs: number }): number {
  const perWindow = Math.ceil(o.rate) + o.burst - 1;
  return Math.max(1000 / o.rate, (1000 + o.tokenTtlMs + o.deliveryJitterMs) / perWindow) + SPACING_MARGIN_MS;
}
