/**
 * `retryExports`: the retries of each failed export — RxJS `retry` with backoff on the
 * scheduler, every retry through the dataflow's rate limiter.
 */
import {
  asyncScheduler,
  catchError,
  concatMap,
  defer,
  Observable,
  throwError,
  type MonoTypeOperatorFunction,
  type SchedulerLike,
  type Subscription,
} from 'rxjs';
import { DeliveryError, hasCode } from '../errors.js';
import type { RateLimiter } from '../stores/rate-limiter.js';
import type { ExportJob, ExportSink } from '../sinks/types.js';
import { AttemptHandle } from './attempt-exports.js';
import { isOpen, type ExportTask } from './deliver-exports.js';
import { slot } from './rate-limit.js';
import { retryWithBackoff, type RetryInfo } from './retry-with-backoff.js';
import { step } from './internal/step.js';

export interface RetryExportsOptions {
  /** The sink of a dataflow (its `attempt` and `retryDelays`). */
  sinkFor: (dataflowId: string) => ExportSink;
  /** The rate limiter of a dataflow: every retry takes a send slot. */
  limiterFor: (dataflowId: string) => RateLimiter;
  /** Retries after the first attempt. @default 2 (SPEC §6: three attempts in all) */
  retries?: number;
  /** Clock of the waits. @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Jitter source in [0, 1). @default Math.random */
  random?: () => number;
  /** Called before each wait (metrics). Must not throw. @default none */
  onRetry?: (info: RetryInfo & { job: ExportJob }) => void;
}

/** The defaults of `retryExports`, named in one place. */
export const RETRY_EXPORTS_DEFAULTS = {
  retries: 2,
  scheduler: asyncScheduler as SchedulerLike,
  random: Math.random,
} as const;

/** Whether a failed attempt is worth another one (connection errors, timeouts, 408, 425, 429, 5xx). */
export function isRetryable(err: unknown): boolean {
  return err instanceof DeliveryError && err.retryable;
}

/**
 * For each open task whose attempt failed with a retryable error, retries it: `retries` more
 * attempts, each after an exponential, jittered wait (`Retry-After` honoured up to the
 * destination's cap) and a send slot of the dataflow's limiter. A 401 answered to credentials
 * that were just renewed is resent once at once, as part of the same attempt. The task goes on
 * with `outcome: delivered`, or with the last `error` (the next stage stores it), or
 * `abandoned` when fenced. Tasks that need no retry pass through at once, with no
 * subscription; only a retried task builds its RxJS `retry` chain. Unsubscribing cancels the
 * waits and the requests.
 *
 * This stage is the seam where retries can leave the message: a stage that settles the task as
 * "queued" in a durable per-dataflow queue can take its place.
 *
 * @example
 * tasks$.pipe(attemptExports({ sinkFor }), retryExports({ sinkFor, limiterFor }), storeFailedExports({ sinkFor }))
 */
export function retryExports(options: RetryExportsOptions): MonoTypeOperatorFunction<ExportTask> {
  const d = RETRY_EXPORTS_DEFAULTS;
  const { sinkFor, limiterFor, onRetry } = options;
  const retries = options.retries ?? d.retries;
  const scheduler = options.scheduler ?? d.scheduler;
  const random = options.random ?? d.random;
  return step<ExportTask, ExportTask>(() => (task, out) => {
    const first = task.error;
    if (!isOpen(task) || first === undefined || !(isRetryable(first) || renewed(first))) return out.next(task);
    const { job } = task;
    const sink = sinkFor(job.dataflowId);
    const limiter = limiterFor(job.dataflowId);
    const once = (renewOn401: boolean): Observable<{ statusCode: number }> =>
      slot(limiter).pipe(concatMap(() => attempt(sink, job, renewOn401)));
    let subscriptions = 0;
    const retried = defer(() => {
      subscriptions++;
      // The first subscription stands for the attempt already made: its renewal resend, or its error.
      if (subscriptions === 1) return renewed(first) ? once(false) : throwError(() => first);
      task.attempts++;
      return once(true).pipe(catchError((err: unknown) => (renewed(err) ? once(false) : throwError(() => err))));
    }).pipe(
      retryWithBackoff({
        retries,
        ...sink.retryDelays,
        isRetryable,
        retryAfterMs: (err) => (err instanceof DeliveryError ? err.retryAfterMs : undefined),
        random,
        scheduler,
        onRetry: onRetry ? (info) => onRetry({ ...info, job }) : undefined,
      }),
    );
    out.hold();
    let sub: Subscription | null = null;
    let over = false;
    const end = (): void => {
      over = true;
      if (sub !== null) out.remove(sub);
      out.next(task);
      out.release();
    };
    sub = retried.subscribe({
      next: (res) => {
        task.error = undefined;
        task.outcome = { status: 'delivered', job, attempts: task.attempts, statusCode: res.statusCode };
      },
      error: (err: unknown) => {
        if (hasCode(err, 'ERR_FENCED')) task.abandoned = err;
        else task.error = err;
        end();
      },
      complete: () => end(),
    });
    if (!over) out.add(sub);
  });
}

function renewed(err: unknown): boolean {
  return err instanceof DeliveryError && err.credentialsRenewed === true;
}

/** One attempt as a cold Observable; unsubscribing cancels the request. */
function attempt(sink: ExportSink, job: ExportJob, renewOn401: boolean): Observable<{ statusCode: number }> {
  return new Observable((subscriber) => {
    const cancellation = new AttemptHandle();
    let done = false;
    sink.attempt(job, cancellation, { renewOn401 }).then(
      (res) => {
        done = true;
        subscriber.next(res);
        subscriber.complete();
      },
      (err: unknown) => {
        done = true;
        subscriber.error(err);
      },
    );
    return () => {
      if (!done) cancellation.cancel();
    };
  });
}
