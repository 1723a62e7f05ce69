/**
 * Test doubles for the chain's tail: an ExportSink whose attempts answer as a test says, and
 * a rate limiter that always has a slot.
 */
import { of } from 'rxjs';
import { DeliveryError } from '../../src/errors.js';
import type { AttemptCancellation, DeliveryOutcome, ExportJob, ExportSink } from '../../src/sinks/types.js';
import type { RateLimiter } from '../../src/stores/rate-limiter.js';

/** What one attempt does: answer a status after `delayMs` (real time), or throw. */
export interface FakeAnswer {
  delayMs?: number;
  /** 2xx: delivered; other: a DeliveryError (5xx / 429 retryable). @default 200 */
  status?: number;
  /** Thrown instead of answering. */
  error?: unknown;
}

export interface FakeSink extends ExportSink {
  /** Every attempt, in order. */
  readonly attempts: ExportJob[];
  /** Failed records given to `fail`. */
  readonly failed: Array<{ job: ExportJob; attempts: number; err: unknown }>;
  /** Attempts cancelled while in flight. */
  cancelled: number;
}

/**
 * An ExportSink whose `attempt` answers `answer(job, n)` (`n`: 1-based attempt of that job);
 * `fail` records and returns a `failed` outcome (or rejects when `failStore` says so).
 */
export function fakeSink(
  answer: (job: ExportJob, n: number) => FakeAnswer = () => ({}),
  opts: { failStore?: () => unknown; retryDelays?: ExportSink['retryDelays']; onAttempt?: (job: ExportJob) => void } = {},
): FakeSink {
  const counts = new Map<string, number>();
  const sink: FakeSink = {
    attempts: [],
    failed: [],
    cancelled: 0,
    retryDelays: opts.retryDelays ?? { minDelayMs: 1, maxDelayMs: 4, retryAfterMaxMs: 10 },
    attempt: (job: ExportJob, cancellation: AttemptCancellation) => {
      sink.attempts.push(job);
      opts.onAttempt?.(job);
      const n = (counts.get(job.idempotencyKey) ?? 0) + 1;
      counts.set(job.idempotencyKey, n);
      const a = answer(job, n);
      return new Promise((resolve, reject) => {
        const settle = (): void => {
          if (a.error !== undefined) return reject(a.error);
          const status = a.status ?? 200;
          if (status >= 200 && status < 300) return resolve({ statusCode: status });
          reject(new DeliveryError('ERR_HTTP_STATUS', `HTTP ${status}`, { retryable: status >= 500 || status === 429, statusCode: status }));
        };
        if (!a.delayMs) return settle();
        const t = setTimeout(settle, a.delayMs);
        cancellation.attach({
          cancel: () => {
            clearTimeout(t);
            sink.cancelled++;
            reject(new DeliveryError('ERR_HTTP_CONNECTION', 'cancelled', { retryable: false }));
          },
        });
      });
    },
    fail: (job, attempts, err) => {
      const refused = opts.failStore?.();
      if (refused !== undefined) return Promise.reject(refused);
      sink.failed.push({ job, attempts, err });
      const statusCode = err instanceof DeliveryError ? err.statusCode : undefined;
      const outcome: DeliveryOutcome = { status: 'failed', job, attempts, statusCode, code: 'ERR_HTTP_STATUS', error: String(err) };
      return Promise.resolve(outcome);
    },
    close: () => Promise.resolve(),
  };
  return sink;
}

/** A limiter that always grants at once. */
export const openLimiter: RateLimiter = { acquire: () => of(undefined), tryAcquire: () => true };
