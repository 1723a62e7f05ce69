/**
 * `redisTokenBucket`: the rate limiter of a pool of workers (SPEC §7) — one schedule of send
 * slots in Redis, shared by every worker of the pool, handed out in small batches.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { asyncScheduler, Observable, type SchedulerLike, type Subscriber, type Subscription } from 'rxjs';
import { HttpDestinationError, StoreError } from '../errors.js';
import { MAX_TIMER_MS, TOKEN_BUCKET_DEFAULTS } from './memory-rate-limiter.js';
import type { RateLimiter } from './rate-limiter.js';

export interface RedisTokenBucketOptions {
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

/** The defaults of `redisTokenBucket`, named in one place. */
export const REDIS_TOKEN_BUCKET_DEFAULTS = {
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
    const d = REDIS_TOKEN_BUCKET_DEFAULTS;
    return 1000 / slotIntervalMs({ rate, burst: d.burst(rate), tokenTtlMs: d.tokenTtlMs, deliveryJitterMs: d.deliveryJitterMs });
  },
} as const;

/** A pool-wide limiter; `close()` stops it (waiters error with `ERR_RATE_LIMITER`). */
export type RedisTokenBucket = RateLimiter & { close(): void };

/**
 * Hands out ARGV[2] send slots, spaced ARGV[1] µs apart on the Redis server's clock (`TIME`:
 * every worker shares it), if the first is at most ARGV[4] µs ahead of now. KEYS[1] is a hash
 * whose field `tat` is the next free slot (µs); a key gone is an idle schedule. The first slot
 * is the next free one, or ARGV[3] µs before now if that is later (an idle schedule lends no
 * more than that). Slots only ever move forward, so any two are at least ARGV[1] apart.
 * Returns { slots granted, Redis time in µs, µs from then to the first slot (a string: it has
 * a fraction) } — when nothing is granted, the last is how long until the next free slot is
 * close enough. Nothing is written then. The key lives until the schedule is idle again
 * (`tat` behind `now − ARGV[3]`) and a second more, so a key that expires never lets a new slot
 * come closer than ARGV[1] to one handed out. (At most 2^40 ms, ≈ 35 years: a tiny rate's
 * schedule runs that far ahead, past what PEXPIRE takes.)
 */
const TAKE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local back = tonumber(ARGV[3])
local ahead = tonumber(ARGV[4])
local first = now - back
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '')
if tat ~= nil and tat > first then
  first = tat
end
if first > now + ahead then
  return { 0, now, string.format('%.17g', first - ahead - now) }
end
tat = first + want * interval
redis.call('HSET', KEYS[1], 'tat', string.format('%.17g', tat))
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil((tat - now + back) / 1000) + 1000, 1099511627776))
return { want, now, string.format('%.17g', first - now) }
`;

/** The script registered with `defineCommand` (sent as EVALSHA, EVAL on NOSCRIPT). */
interface ScriptCommands {
  hdRateLimitSlots(key: string, intervalUs: string, want: string, backUs: string, aheadUs: string): Promise<[number, number, string]>;
}

/** A queued `acquire()`: a doubly linked node, so giving the place up is O(1). */
interface Waiter {
  subscriber: Subscriber<void>;
  prev: Waiter | null;
  next: Waiter | null;
  /** Still in the queue (false once granted or given up). */
  queued: boolean;
}

/** Slots `first + i × interval` (Redis clock, ms) for `i` in `used … count − 1`. */
interface Batch {
  first: number;
  count: number;
  used: number;
}

/**
 * Margins (ms) for sums of floating-point times: a slot's usable span is narrowed by
 * `EPSILON_MS` on both sides, and the slots' spacing is widened by `SPACING_MARGIN_MS` (Redis
 * keeps µs times near 1.7e15, to a quarter µs).
 */
const EPSILON_MS = 0.01;
const SPACING_MARGIN_MS = 0.001;
/**
 * How fast the offset between this host's clock and the Redis server's may drift, as a
 * fraction (500 ppm: more than NTP ever slews); a measured offset widens by it as it ages.
 */
const MAX_DRIFT = 5e-4;

/** Wall-clock time in ms with sub-ms precision, monotonic (the offset to Redis is measured). */
const systemClock = (): number => performance.timeOrigin + performance.now();

/**
 * A token bucket in Redis for a whole pool, kept as a schedule (GCRA): Redis hands out send
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
 * (`REDIS_TOKEN_BUCKET_DEFAULTS.pace`): with the defaults (T = J = 50 ms) 94.5% of the rate at
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
 * const limiter = redisTokenBucket({ redis, key: `hd:rl:${dataflow.id}`, rate: dataflow.rateLimit });
 * jobs$.pipe(rateLimit({ limiter }), mergeMap((job) => sink.send(job)))
 * // on shutdown
 * limiter.close();
 */
export function redisTokenBucket(options: RedisTokenBucketOptions): RedisTokenBucket {
  const d = REDIS_TOKEN_BUCKET_DEFAULTS;
  const { rate } = options;
  if (!(rate > 0 && rate <= d.maxRate)) {
    throw new RangeError(`redisTokenBucket: rate must be > 0 and ≤ ${d.maxRate}, got ${rate}`);
  }
  const burst = options.burst ?? d.burst(rate);
  if (!(burst >= 1) || !Number.isInteger(burst)) {
    throw new RangeError(`redisTokenBucket: burst must be an integer ≥ 1, got ${burst}`);
  }
  const tokenTtlMs = options.tokenTtlMs ?? d.tokenTtlMs;
  if (!(tokenTtlMs > 0 && Number.isFinite(tokenTtlMs))) {
    throw new RangeError(`redisTokenBucket: tokenTtlMs must be > 0, got ${tokenTtlMs}`);
  }
  const reserve = options.reserve ?? d.reserve(rate);
  if (!(reserve >= 1) || !Number.isInteger(reserve)) {
    throw new RangeError(`redisTokenBucket: reserve must be an integer ≥ 1, got ${reserve}`);
  }
  if (!options.key) throw new RangeError('redisTokenBucket: key must not be empty');
  const deliveryJitterMs = options.deliveryJitterMs ?? d.deliveryJitterMs;
  if (!(deliveryJitterMs >= 0 && Number.isFinite(deliveryJitterMs))) {
    throw new RangeError(`redisTokenBucket: deliveryJitterMs must be ≥ 0, got ${deliveryJitterMs}`);
  }
  return new RedisBucket({
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
 * The spacing (ms) of the pool's send slots: `max(1000/rate, (1000 + T + J)/M)` with
 * `M = ceil(rate) + burst − 1`, widened by a float margin. Any span of `1000 + T + J` ms then
 * holds at most M slots (see `redisTokenBucket` for why that bounds every sliding 1-second
 * window at the endpoint).
 */
export function slotIntervalMs(o: { rate: number; burst: number; tokenTtlMs: number; deliveryJitterMs: number }): number {
  const perWindow = Math.ceil(o.rate) + o.burst - 1;
  return Math.max(1000 / o.rate, (1000 + o.tokenTtlMs + o.deliveryJitterMs) / perWindow) + SPACING_MARGIN_MS;
}

interface Settings {
  redis: Redis;
  key: string;
  /** Spacing of the slots (ms), the same in Redis and here. */
  intervalMs: number;
  reserve: number;
  tokenTtlMs: number;
  catchUpMs: number;
  aheadMs: number;
  deliveryJitterMs: number;
  requestTimeoutMs: number;
  retryMinDelayMs: number;
  retryMaxDelayMs: number;
  scheduler: SchedulerLike;
  onError: ((err: StoreError) => void) | undefined;
}

/**
 * What is known of `offset = Redis clock − this host's clock` (ms): it lies in `[lo, hi]` as
 * of local time `at`, and that interval widens by `MAX_DRIFT` per ms since.
 */
class ClockOffset {
  private lo = -Infinity;
  private hi = Infinity;
  private at = 0;

  /** The least the offset can be at local time `now`. */
  low(now: number): number {
    return this.lo - MAX_DRIFT * Math.max(0, now - this.at);
  }

  /** The most the offset can be at local time `now`. */
  high(now: number): number {
    return this.hi + MAX_DRIFT * Math.max(0, now - this.at);
  }

  /** Redis read `redisNow` on its clock after local time `sentAt` and before `handledAt`. */
  sample(sentAt: number, handledAt: number, redisNow: number): void {
    const drift = MAX_DRIFT * (handledAt - sentAt);
    const lo = redisNow - handledAt - drift;
    const hi = redisNow - sentAt + drift;
    const jointLo = Math.max(this.low(handledAt), lo);
    const jointHi = Math.min(this.high(handledAt), hi);
    // Disjoint: a clock stepped (or drifted faster than allowed); only the new sample holds.
    if (jointLo <= jointHi) {
      this.lo = jointLo;
      this.hi = jointHi;
    } else {
      this.lo = lo;
      this.hi = hi;
    }
    this.at = handledAt;
  }
}

class RedisBucket implements RedisTokenBucket {
  /** A permit older than the schedule's delivery jitter is not used (the sink takes a new one). */
  readonly maxPermitAgeMs: number;
  private readonly scripts: ScriptCommands;
  /** Script arguments that never change. */
  private readonly intervalArg: string;
  private readonly backArg: string;
  private readonly aheadArg: string;
  private readonly offset = new ClockOffset();
  private head: Waiter | null = null;
  private tail: Waiter | null = null;
  private waiting = 0;
  /** Slots this worker holds, oldest first (`batches[0 … batchHead − 1]` are spent). */
  private batches: Batch[] = [];
  private batchHead = 0;
  /** Slots held and not yet handed out or dropped. */
  private held = 0;
  /** The timer for the first held slot, and when (local clock) it fires. */
  private slotTimer: Subscription | null = null;
  private slotTimerAt = Infinity;
  /** Number of the request in flight (0: none); a reply to an abandoned one is ignored. */
  private inFlight = 0;
  private requests = 0;
  private timeout: Subscription | null = null;
  /** The pause before the next request (advised by Redis, or after a failure). */
  private pause: Subscription | null = null;
  /** The pause is a backoff after a failure: it runs on even when nobody waits. */
  private backoff = false;
  private failures = 0;
  private pumping = false;
  private again = false;
  private closed = false;

  constructor(private readonly s: Settings) {
    this.maxPermitAgeMs = s.deliveryJitterMs;
    s.redis.defineCommand('hdRateLimitSlots', { numberOfKeys: 1, lua: TAKE_LUA });
    // defineCommand adds methods ioredis can only type through module augmentation.
    this.scripts = s.redis as unknown as ScriptCommands;
    this.intervalArg = String(s.intervalMs * 1000);
    this.backArg = String(Math.floor(s.catchUpMs * 1000));
    this.aheadArg = String(Math.floor(s.aheadMs * 1000));
  }

  acquire(): Observable<void> {
    return new Observable<void>((subscriber) => {
      if (this.closed) {
        subscriber.error(closedError());
        return undefined;
      }
      if (this.head === null && this.takeLocal(systemClock())) {
        subscriber.next();
        subscriber.complete();
        return undefined;
      }
      const waiter: Waiter = { subscriber, prev: this.tail, next: null, queued: true };
      if (this.tail === null) this.head = waiter;
      else this.tail.next = waiter;
      this.tail = waiter;
      this.waiting++;
      this.pump();
      return () => {
        if (waiter.queued) {
          this.unlink(waiter);
          if (this.head === null) {
            // Nobody waits: no timer left behind, unless it spaces out attempts on a failing Redis.
            this.cancelSlotTimer();
            if (!this.backoff) this.cancelPause();
          }
        }
      };
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.timeout?.unsubscribe();
    this.timeout = null;
    this.cancelPause();
    this.cancelSlotTimer();
    this.inFlight = 0;
    this.batches = [];
    this.batchHead = 0;
    this.held = 0;
    const err = closedError();
    while (this.head !== null) {
      const w = this.head;
      this.unlink(w);
      w.subscriber.error(err);
    }
  }

  /**
   * Takes the first held slot if it is due at `now`; drops the ones that are past their
   * `tokenTtlMs` (never used late).
   */
  private takeLocal(now: number): boolean {
    if (this.held === 0) return false;
    const { intervalMs, tokenTtlMs } = this.s;
    const lo = this.offset.low(now);
    const hi = this.offset.high(now);
    while (this.batchHead < this.batches.length) {
      const b = this.batches[this.batchHead];
      if (b.used === b.count) {
        if (++this.batchHead >= 64) {
          this.batches = this.batches.slice(this.batchHead);
          this.batchHead = 0;
        }
        continue;
      }
      const slot = b.first + b.used * intervalMs;
      if (now > slot + tokenTtlMs - hi - EPSILON_MS) {
        b.used++;
        this.held--;
        continue;
      }
      if (now < slot - lo + EPSILON_MS) return false;
      b.used++;
      this.held--;
      return true;
    }
    this.batches = [];
    this.batchHead = 0;
    return false;
  }

  /** Local time from which the first held slot may be handed out (Infinity: none held). */
  private nextDue(): number {
    for (let i = this.batchHead; i < this.batches.length; i++) {
      const b = this.batches[i];
      if (b.used < b.count) return b.first + b.used * this.s.intervalMs - this.offset.low(systemClock()) + EPSILON_MS;
    }
    return Infinity;
  }

  private unlink(w: Waiter): void {
    w.queued = false;
    this.waiting--;
    if (w.prev === null) this.head = w.next;
    else w.prev.next = w.next;
    if (w.next === null) this.tail = w.prev;
    else w.next.prev = w.prev;
    w.prev = w.next = null;
  }

  private cancelPause(): void {
    this.pause?.unsubscribe();
    this.pause = null;
    this.backoff = false;
  }

  private cancelSlotTimer(): void {
    this.slotTimer?.unsubscribe();
    this.slotTimer = null;
    this.slotTimerAt = Infinity;
  }

  /** Ensures a timer fires when the first held slot is due (waiters wait for it). */
  private armSlotTimer(): void {
    const due = this.nextDue();
    if (due === Infinity) {
      this.cancelSlotTimer();
      return;
    }
    if (this.slotTimer !== null && this.slotTimerAt <= due) return;
    this.cancelSlotTimer();
    this.slotTimerAt = due;
    this.slotTimer = this.s.scheduler.schedule(
      () => {
        this.slotTimer = null;
        this.slotTimerAt = Infinity;
        this.pump();
      },
      Math.min(MAX_TIMER_MS, Math.max(0, due - systemClock())),
    );
  }

  /**
   * Hands due slots to waiters, oldest first, then waits for the next held slot and asks
   * Redis for more if waiters outnumber the slots held (unless a request is in flight or a
   * pause runs). Safe to re-enter: a waiter may ask for its next permit from inside its grant;
   * it is queued behind and served by the running loop.
   */
  private pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        while (this.head !== null && this.takeLocal(systemClock())) {
          const w = this.head;
          this.unlink(w);
          w.subscriber.next();
          w.subscriber.complete();
        }
      } while (this.again);
    } finally {
      this.pumping = false;
    }
    if (this.closed) return;
    if (this.head === null) {
      this.cancelSlotTimer();
      return;
    }
    this.armSlotTimer();
    if (this.inFlight !== 0 || this.pause !== null) return;
    const want = Math.min(this.s.reserve, this.waiting - this.held);
    if (want > 0) this.request(want);
  }

  private request(want: number): void {
    const { scheduler } = this.s;
    const id = ++this.requests;
    const sentAt = systemClock();
    this.inFlight = id;
    this.timeout = scheduler.schedule(() => {
      this.timeout = null;
      if (this.inFlight !== id) return;
      this.failed(new StoreError(`redis rate limiter: no reply from Redis in ${this.s.requestTimeoutMs} ms`));
    }, this.s.requestTimeoutMs);
    let call: Promise<[number, number, string]>;
    try {
      call = this.scripts.hdRateLimitSlots(this.s.key, this.intervalArg, String(want), this.backArg, this.aheadArg);
    } catch (err) {
      call = Promise.reject(err);
    }
    call.then(
      ([granted, redisNowUs, deltaUs]) => {
        if (this.inFlight !== id) return;
        const handledAt = systemClock();
        this.settle();
        this.failures = 0;
        const redisNow = Number(redisNowUs) / 1000;
        const delta = Number(deltaUs) / 1000;
        this.offset.sample(sentAt, handledAt, redisNow);
        const n = Number(granted);
        if (n > 0) {
          this.batches.push({ first: redisNow + delta, count: n, used: 0 });
          this.held += n;
        } else {
          // Ask again when, on Redis's clock, a slot is close enough (best guess of the offset;
          // a ms more, as a timer may fire early and one asking too soon costs a round trip).
          const offset = (this.offset.low(handledAt) + this.offset.high(handledAt)) / 2;
          this.pauseFor(Math.max(0, redisNow + delta - offset - handledAt) + 1);
        }
        this.pump();
      },
      (err: unknown) => {
        if (this.inFlight !== id) return;
        const reason = err instanceof Error ? err.message : String(err);
        this.failed(new StoreError(`redis rate limiter: taking slots failed: ${reason}`, { cause: err }));
      },
    );
  }

  private settle(): void {
    this.inFlight = 0;
    this.timeout?.unsubscribe();
    this.timeout = null;
  }

  private failed(err: StoreError): void {
    this.settle();
    this.failures++;
    try {
      this.s.onError?.(err);
    } catch {
      // A throwing error callback must not stop the limiter.
    }
    const delay = Math.min(this.s.retryMaxDelayMs, this.s.retryMinDelayMs * 2 ** (this.failures - 1));
    this.pauseFor(delay, true);
    this.pump();
  }

  /** No request for `ms`; then serve the waiters (if any are left). */
  private pauseFor(ms: number, backoff = false): void {
    this.cancelPause();
    if (this.closed || (this.head === null && !backoff)) return;
    this.backoff = backoff;
    this.pause = this.s.scheduler.schedule(() => {
      this.pause = null;
      this.backoff = false;
      this.pump();
    }, Math.min(MAX_TIMER_MS, ms));
  }
}

function closedError(): HttpDestinationError {
  return new HttpDestinationError('ERR_RATE_LIMITER', 'the redis rate limiter is closed');
}
