/**
 * `retryWithBackoff`: resubscribe to the source after a retryable error, waiting an
 * exponentially growing, jittered delay, honouring a server's `Retry-After` up to a cap.
 */
import {
  asyncScheduler,
  retry,
  throwError,
  timer,
  type MonoTypeOperatorFunction,
  type Observable,
  type SchedulerLike,
} from 'rxjs';

/** What `onRetry` is told before each wait. */
export interface RetryInfo {
  /** The error that caused this retry. */
  error: unknown;
  /** 1-based number of the retry about to happen (1 = the second attempt). */
  attempt: number;
  /** How long the operator waits before resubscribing, in ms. */
  delayMs: number;
}

export interface RetryWithBackoffOptions {
  /** Retries after the first attempt (so `retries + 1` attempts in all). @default 2 */
  retries?: number;
  /** Base delay before the first retry, in ms. */
  minDelayMs: number;
  /** Largest backoff delay, in ms (before `Retry-After` is considered). */
  maxDelayMs: number;
  /** Longest wait a `Retry-After` can ask for; a longer ask is capped to this. @default maxDelayMs */
  retryAfterMaxMs?: number;
  /** Whether an error is worth a retry; a `false` rethrows it at once. @default () => true */
  isRetryable?: (err: unknown) => boolean;
  /** The wait the server asked for (e.g. `DeliveryError.retryAfterMs`), if any. @default () => undefined */
  retryAfterMs?: (err: unknown) => number | undefined;
  /** Source of randomness for the jitter, in [0, 1). @default Math.random */
  random?: () => number;
  /** Scheduler the waits run on. @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Called before each wait (for metrics); must not throw. @default none */
  onRetry?: (info: RetryInfo) => void;
}

/** The defaults of `retryWithBackoff`, named in one place. */
export const RETRY_WITH_BACKOFF_DEFAULTS = {
  retries: 2,
  isRetryable: (_err: unknown): boolean => true,
  retryAfterMs: (_err: unknown): number | undefined => undefined,
  random: Math.random,
  scheduler: asyncScheduler as SchedulerLike,
} as const;

/**
 * The one backoff of the project (HTTP retries, the snapshot-store step, backfill restarts,
 * the Redis limiter): the wait before retry `attempt` (1-based) is
 * `min(maxDelayMs, minDelayMs * 2^(attempt-1))` with equal jitter (uniform in [d/2, d]); when
 * the server asked for `retryAfter` ms, the wait is `min(retryAfterMaxMs, max(retryAfter,
 * jittered))`. Rounded to whole ms.
 *
 * @example backoffDelay({ attempt: 1, minDelayMs: 1_000, maxDelayMs: 60_000 }) // 500…1000
 * @param options.retryAfterMaxMs @default maxDelayMs
 * @param options.random @default Math.random
 */
export function backoffDelay(options: {
  attempt: number;
  minDelayMs: number;
  maxDelayMs: number;
  retryAfterMaxMs?: number;
  random?: () => number;
  retryAfter?: number;
}): number {
  const { attempt, minDelayMs, maxDelayMs, retryAfter } = options;
  const retryAfterMaxMs = options.retryAfterMaxMs ?? maxDelayMs;
  const random = options.random ?? Math.random;
  const exp = Math.min(maxDelayMs, minDelayMs * 2 ** Math.max(0, attempt - 1));
  const jittered = exp / 2 + random() * (exp / 2);
  const wait =
    retryAfter !== undefined && Number.isFinite(retryAfter) && retryAfter >= 0
      ? Math.min(retryAfterMaxMs, Math.max(retryAfter, jittered))
      : jittered;
  return Math.max(0, Math.round(wait));
}

/**
 * Retries the source on retryable errors with exponential backoff and equal jitter, built
 * on RxJS `retry({ count, delay })` and `timer(delay, scheduler)`. A non-retryable error
 * (or one after the last retry) is rethrown unchanged. Values emitted before an error pass
 * through (the source is resubscribed, so a cold source starts again). A callback that
 * throws errors the result with what it threw.
 *
 * @example
 * ```ts
 * send$.pipe(
 *   retryWithBackoff({
 *     minDelayMs: 1_000,
 *     maxDelayMs: 60_000,
 *     retryAfterMaxMs: 120_000,
 *     isRetryable: (e) => e instanceof DeliveryError && e.retryable,
 *     retryAfterMs: (e) => (e instanceof DeliveryError ? e.retryAfterMs : undefined),
 *   }),
 * );
 * ```
 *
 * @param options.retries retries after the first attempt. @default 2
 * @param options.minDelayMs base delay of the first retry (required)
 * @param options.maxDelayMs cap of the exponential delay (required)
 * @param options.retryAfterMaxMs cap of a server's Retry-After. @default maxDelayMs
 * @param options.isRetryable @default every error is retryable
 * @param options.retryAfterMs @default never a Retry-After
 * @param options.random @default Math.random
 * @param options.scheduler @default asyncScheduler
 * @param options.onRetry @default none
 */
export function retryWithBackoff<T>(options: RetryWithBackoffOptions): MonoTypeOperatorFunction<T> {
  const d = RETRY_WITH_BACKOFF_DEFAULTS;
  const retries = options.retries ?? d.retries;
  const isRetryable = options.isRetryable ?? d.isRetryable;
  const retryAfterMs = options.retryAfterMs ?? d.retryAfterMs;
  const random = options.random ?? d.random;
  const scheduler = options.scheduler ?? d.scheduler;
  const retryAfterMaxMs = options.retryAfterMaxMs ?? options.maxDelayMs;
  const { minDelayMs, maxDelayMs, onRetry } = options;

  return (source: Observable<T>) =>
    source.pipe(
      retry({
        count: retries,
        resetOnSuccess: false,
        delay: (error: unknown, attempt: number) => {
          if (!isRetryable(error)) return throwError(() => error);
          const delayMs = backoffDelay({
            attempt,
            minDelayMs,
            maxDelayMs,
            retryAfterMaxMs,
            random,
            retryAfter: retryAfterMs(error),
          });
          onRetry?.({ error, attempt, delayMs });
          return timer(delayMs, scheduler);
        },
      }),
    );
}
