/**
 * `rateLimit`: holds each value until its rate limiter grants it a send slot.
 */
import { Observable, take, throwIfEmpty, type MonoTypeOperatorFunction, type Observer, type Subscription } from 'rxjs';
import { HttpDestinationError } from '../errors.js';
import type { RateLimiter } from '../stores/rate-limiter.js';
import { step, type StepOutput } from './internal/step.js';

export interface RateLimitOptions<T> {
  /**
   * The limiter of a value (one per dataflow: `tokenBucket` for one worker, the Redis-backed
   * one for a pool), or one limiter for every value.
   */
  limiter: RateLimiter | ((value: T) => RateLimiter);
  /**
   * A value whose limiter errored or completed without granting (it is closing): when given,
   * called (mark the value) and the value goes on; when not, the output errors with it.
   * @default none — the output errors
   */
  refused?: (value: T, err: unknown) => void;
  /**
   * Told how long each value waited for its slot, in ms (0 when one was free at once): the
   * rate-limiter wait metric. Must not throw. @default none
   */
  waited?: (value: T, ms: number) => void;
  /** Clock of `waited`, ms. @default Date.now */
  now?: () => number;
}

/**
 * Emits each value once its limiter has granted it a slot. Every value asks on arrival, so a
 * pooled limiter can serve many at once; a limiter serves its waiters in order, so values of
 * one limiter go out in source order. A limiter with a slot free and nobody waiting grants at
 * once through `tryAcquire()` (no subscription). Completes once the source has completed and
 * every value is out; unsubscribing gives up the places still queued.
 *
 * A limiter that completes without granting refuses with `ERR_RATE_LIMITER`.
 *
 * @example
 * const limiter = tokenBucket({ rate: dataflow.rateLimit });
 * tasks$.pipe(rateLimit({ limiter: (task) => limiters.get(task.job.dataflowId)! }))
 */
export function rateLimit<T>(options: RateLimitOptions<T>): MonoTypeOperatorFunction<T> {
  const { limiter, refused, waited } = options;
  const now = options.now ?? Date.now;
  const limiterOf = typeof limiter === 'function' ? limiter : (): RateLimiter => limiter;
  return step<T, T>(() => (value, out) => {
    const l = limiterOf(value);
    if (l.tryAcquire?.() === true) {
      waited?.(value, 0);
      return out.next(value);
    }
    out.hold();
    const waiter = new Waiter(value, out, refused, waited, now);
    const sub: Subscription = grant(l).subscribe(waiter);
    if (!waiter.over) {
      waiter.sub = sub;
      out.add(sub);
    }
  });
}

/** One value waiting for its slot: the observer of its limiter's `grant`. */
class Waiter<T> implements Observer<void> {
  over = false;
  sub: Subscription | null = null;

  constructor(
    private readonly value: T,
    private readonly out: StepOutput<T>,
    private readonly refused: ((value: T, err: unknown) => void) | undefined,
    private readonly waited: ((value: T, ms: number) => void) | undefined,
    private readonly now: () => number,
    private readonly since = waited === undefined ? 0 : now(),
  ) {}

  next(): void {
    this.end();
    this.waited?.(this.value, this.now() - this.since);
    this.out.next(this.value);
    this.out.release();
  }

  error(err: unknown): void {
    this.end();
    if (this.refused === undefined) return this.out.error(err);
    this.refused(this.value, err);
    this.out.next(this.value);
    this.out.release();
  }

  complete(): void {
    // After `next` (a grant emits once, then completes): nothing left to do.
  }

  private end(): void {
    this.over = true;
    if (this.sub !== null) {
      this.out.remove(this.sub);
      this.sub.unsubscribe();
      this.sub = null;
    }
  }
}

/**
 * The first grant of `limiter.acquire()`: emits once and completes (a second emission of the
 * limiter is ignored); a limiter that completes without granting errors with `ERR_RATE_LIMITER`.
 */
function grant(limiter: RateLimiter): Observable<void> {
  return limiter.acquire().pipe(
    take(1),
    throwIfEmpty(() => new HttpDestinationError('ERR_RATE_LIMITER', 'the rate limiter completed without granting a send slot')),
  );
}

/**
 * One slot of `limiter` as an Observable: emits once and completes; a limiter that completes
 * without granting errors with `ERR_RATE_LIMITER`. For the slow paths (a retry's attempt).
 */
export function slot(limiter: RateLimiter): Observable<void> {
  return new Observable<void>((subscriber) => {
    if (limiter.tryAcquire?.() === true) {
      subscriber.next();
      subscriber.complete();
      return undefined;
    }
    return grant(limiter).subscribe(subscriber);
  });
}
