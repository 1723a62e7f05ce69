/**
 * `tokenBucket`: the in-memory rate limiter of one worker (SPEC §7).
 */
import { asyncScheduler, Observable, type SchedulerLike, type Subscription } from 'rxjs';
import { DEFAULTS } from '../config/schema.js';
import type { RateLimiter } from './rate-limiter.js';
import { WaiterQueue, type Waiter } from './waiter-queue.js';

export interface TokenBucketOptions {
  /** Permits per second; fractional allowed (0.5 = one every 2 s). At most 10,000. */
  rate: number;
  /**
   * Permits that may be granted back to back after an idle spell (the bucket's size).
   * @default max(1, floor(rate * 0.04)) — so a 1-second window never sees more than 4% over `rate`
   */
  burst?: number;
  /** Clock and timer. @default asyncScheduler */
  scheduler?: SchedulerLike;
}

/** The defaults of `tokenBucket`, named in one place. */
export const TOKEN_BUCKET_DEFAULTS = {
  burst: (rate: number): number => Math.max(1, Math.floor(rate * 0.04)),
  scheduler: asyncScheduler as SchedulerLike,
  /** SPEC §7: the default and maximum rate of a dataflow. */
  maxRate: DEFAULTS.maxRateLimit,
} as const;

/**
 * A token bucket: permits accrue continuously at `rate` per second from the scheduler's
 * clock, up to `burst` in store. `acquire()` emits at once while a permit is in store and
 * nobody is waiting; otherwise the caller waits in a FIFO queue. A single timer (never one
 * per waiter) fires when the next permit has accrued and grants every waiter that the
 * accrued permits cover, so a queue is served without idle gaps. Unsubscribing a waiter
 * gives its place up. Over any 1-second window at most `burst + rate − 1` permits are granted
 * (for integer rates) — within SPEC §7's 5% with the default burst.
 *
 * @example
 * const limiter = tokenBucket({ rate: 500 });
 * jobs$.pipe(rateLimit({ limiter }), mergeMap((job) => sink.send(job)))
 */
export function tokenBucket(options: TokenBucketOptions): RateLimiter {
  const { rate } = options;
  if (!(rate > 0 && rate <= TOKEN_BUCKET_DEFAULTS.maxRate)) {
    throw new RangeError(`tokenBucket: rate must be > 0 and ≤ ${TOKEN_BUCKET_DEFAULTS.maxRate}, got ${rate}`);
  }
  const burst = options.burst ?? TOKEN_BUCKET_DEFAULTS.burst(rate);
  if (!(burst >= 1) || !Number.isInteger(burst)) {
    throw new RangeError(`tokenBucket: burst must be an integer ≥ 1, got ${burst}`);
  }
  return new TokenBucket(rate, burst, options.scheduler ?? TOKEN_BUCKET_DEFAULTS.scheduler);
}

/**
 * Floating-point slack, in ms: the timer is set for the instant a permit accrues, but the
 * sums that get there may land a few ulps early.
 */
const EPSILON_MS = 1e-6;

/**
 * Longest timer delay, in ms: Node fires a longer `setTimeout` after 1 ms instead (with a
 * TimeoutOverflowWarning), so a very low rate would spin. A timer clamped to this fires early,
 * finds no permit yet and is set again.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Kept as GCRA (the "virtual scheduling" form of a token bucket): one number, `tat`, the
 * theoretical time the bucket is next empty. A permit may be granted at `now` when
 * `now ≥ tat − tolerance`, with `tolerance = (burst − 1) × interval`; granting moves
 * `tat = max(tat, now) + interval`. Equivalent to a bucket of `burst` tokens refilled
 * continuously at `rate`, without fractional token counts.
 */
class TokenBucket implements RateLimiter {
  private readonly interval: number;
  private readonly tolerance: number;
  private tat = -Infinity;
  private readonly waiters = new WaiterQueue();
  private timer: Subscription | null = null;
  private granting = false;

  constructor(
    rate: number,
    burst: number,
    private readonly scheduler: SchedulerLike,
  ) {
    this.interval = 1000 / rate;
    this.tolerance = (burst - 1) * this.interval;
  }

  acquire(): Observable<void> {
    return new Observable<void>((subscriber) => {
      if (this.waiters.head === null && this.tryTake(this.scheduler.now())) {
        subscriber.next();
        subscriber.complete();
        return undefined;
      }
      const waiter = this.waiters.push(subscriber);
      this.arm();
      return () => {
        if (waiter.queued) this.unlink(waiter);
      };
    });
  }

  tryAcquire(): boolean {
    return this.waiters.head === null && this.tryTake(this.scheduler.now());
  }

  /** Takes a permit if one has accrued by `now`. */
  private tryTake(now: number): boolean {
    if (now + EPSILON_MS < this.tat - this.tolerance) return false;
    this.tat = Math.max(this.tat, now) + this.interval;
    return true;
  }

  private unlink(w: Waiter): void {
    this.waiters.remove(w);
    if (this.waiters.head === null && this.timer !== null) {
      // Nobody waits: no timer left behind (it would keep a process alive for nothing).
      this.timer.unsubscribe();
      this.timer = null;
    }
  }

  /** Ensures the one timer is set for when the head waiter's permit accrues. */
  private arm(): void {
    if (this.timer !== null || this.granting || this.waiters.head === null) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, this.tat - this.tolerance - this.scheduler.now()));
    this.timer = this.scheduler.schedule(() => {
      this.timer = null;
      this.grant();
    }, delay);
  }

  /** Grants waiters, oldest first, while permits have accrued; then re-arms the timer. */
  private grant(): void {
    this.granting = true;
    try {
      const now = this.scheduler.now();
      for (let w = this.waiters.head; w !== null && this.tryTake(now); w = this.waiters.head) {
        this.unlink(w);
        // May re-enter `acquire` (the consumer asks for its next permit): `granting` keeps
        // that from arming a second timer; the newcomer is queued behind and served here.
        w.subscriber.next();
        w.subscriber.complete();
      }
    } finally {
      this.granting = false;
      this.arm();
    }
  }
}
