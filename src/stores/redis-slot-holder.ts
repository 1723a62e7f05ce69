/**
 * One worker's side of the pool's send slots (redis-rate-limiter.ts): its `acquire()` waiters,
 * the slots it holds, and the requests for more that it sends to Redis (with their timeout and
 * the pause after a failure).
 */
import type { Redis } from 'ioredis';
import { Observable, type SchedulerLike, type Subscription } from 'rxjs';
import { HttpDestinationError, StoreError } from '../errors.js';
import { ClockOffset, systemClock } from './clock-offset.js';
import { HeldSlots } from './held-slots.js';
import { MAX_TIMER_MS } from './memory-rate-limiter.js';
import type { RateLimiter } from './rate-limiter.js';
import { TAKE_SLOTS_LUA, type SendSlotsCommands } from './redis-send-slots-script.js';
import { WaiterQueue } from './waiter-queue.js';

/** What `redisSendSlots` resolved from its options. */
export interface SlotHolderSettings {
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
 * Hands the slots it holds to its waiters, first in, first out; asks Redis for no more slots
 * than it has waiters beyond the slots it holds (one request in flight); waits for a held slot
 * with one timer, and for the time Redis advised (or the backoff after a failure) with another.
 */
export class RedisSlotHolder implements RateLimiter {
  /** A permit older than the schedule's delivery jitter is not used (the sink takes a new one). */
  readonly maxPermitAgeMs: number;
  private readonly scripts: SendSlotsCommands;
  /** Script arguments that never change. */
  private readonly intervalArg: string;
  private readonly backArg: string;
  private readonly aheadArg: string;
  private readonly offset = new ClockOffset();
  private readonly waiters = new WaiterQueue();
  private readonly slots: HeldSlots;
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

  constructor(private readonly s: SlotHolderSettings) {
    this.maxPermitAgeMs = s.deliveryJitterMs;
    this.slots = new HeldSlots(s.intervalMs, s.tokenTtlMs);
    s.redis.defineCommand('hdRateLimitSlots', { numberOfKeys: 1, lua: TAKE_SLOTS_LUA });
    // defineCommand adds methods ioredis can only type through module augmentation.
    this.scripts = s.redis as unknown as SendSlotsCommands;
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
      if (this.waiters.head === null && this.slots.take(systemClock(), this.offset)) {
        subscriber.next();
        subscriber.complete();
        return undefined;
      }
      const waiter = this.waiters.push(subscriber);
      this.pump();
      return () => {
        if (waiter.queued) {
          this.waiters.remove(waiter);
          if (this.waiters.head === null) {
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
    this.slots.clear();
    const err = closedError();
    for (let w = this.waiters.head; w !== null; w = this.waiters.head) {
      this.waiters.remove(w);
      w.subscriber.error(err);
    }
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
    const due = this.slots.nextDue(this.offset);
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
        while (this.waiters.head !== null && this.slots.take(systemClock(), this.offset)) this.waiters.grantHead();
      } while (this.again);
    } finally {
      this.pumping = false;
    }
    if (this.closed) return;
    if (this.waiters.head === null) {
      this.cancelSlotTimer();
      return;
    }
    this.armSlotTimer();
    if (this.inFlight !== 0 || this.pause !== null) return;
    const want = Math.min(this.s.reserve, this.waiters.size - this.slots.size);
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
        if (n > 0) this.slots.add(redisNow + delta, n);
        else {
          // Ask again when, on Redis's clock, a slot is close enough (best guess of the offset;
          // a ms more, as a timer may fire early and one asking too soon costs a round trip).
          this.pauseFor(Math.max(0, redisNow + delta - this.offset.middle(handledAt) - handledAt) + 1);
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
    if (this.closed || (this.waiters.head === null && !backoff)) return;
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
