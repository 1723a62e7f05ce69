/**
 * Test doubles for the chain's tail: an ExportSink whose attempts answer as a test says, and
 * a rate limiter that always has a slot; and, in virtual time, the sink and tasks of the
 * delivery stages' marble tests.
 */
import { of } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import { later } from './virtual-time.js';
import { DeliveryError, StoreError } from '../../src/errors.js';
import type { ExportTask } from '../../src/operators/deliver-exports.js';
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

// ---- In virtual time: the delivery stages' marble tests (marbles/*-exports.test.ts) ----

/** A job of dataflow `f` whose profile id and idempotency key are `id`. */
export const markedJob = (id: string): ExportJob => ({ dataflowId: 'f', destinationId: 'd', profileId: id, idempotencyKey: id, payload: {} });

/** A task of `markedJob(id)`. */
export const markedTask = (id: string, over: Partial<ExportTask> = {}): ExportTask => ({ job: markedJob(id), attempts: 0, ...over });

/** The error of an HTTP answer: retryable for 5xx. */
export const httpError = (status: number): DeliveryError =>
  new DeliveryError('ERR_HTTP_STATUS', `HTTP ${status}`, { retryable: status >= 500, statusCode: status });

/**
 * An ExportSink in virtual time: each attempt logs `<frame> attempt <id>#<n>`, attaches a
 * cancellation that logs `<frame> cancel <id>#<n>`, and answers `answer(id, n)` 2 frames later
 * (a status: 2xx delivered, else `httpError`; an Error: thrown). `fail` logs
 * `<frame> fail <id> after <attempts>` and answers a `failed` outcome 1 frame later, or rejects
 * at once with a `StoreError` when `failStore`.
 */
export function markedSink(
  ts: TestScheduler,
  log: string[],
  answer: (id: string, n: number) => number | Error,
  opts: { failStore?: boolean } = {},
): ExportSink {
  const n = new Map<string, number>();
  return {
    retryDelays: { minDelayMs: 10, maxDelayMs: 40, retryAfterMaxMs: 40 },
    attempt(j, cancellation) {
      const k = (n.get(j.profileId) ?? 0) + 1;
      n.set(j.profileId, k);
      log.push(`${ts.now()} attempt ${j.profileId}#${k}`);
      cancellation.attach({ cancel: () => log.push(`${ts.now()} cancel ${j.profileId}#${k}`) });
      return later(ts, 2, () => {
        const a = answer(j.profileId, k);
        if (a instanceof Error) throw a;
        if (a >= 300) throw httpError(a);
        return { statusCode: a };
      });
    },
    fail(j, attempts, err) {
      log.push(`${ts.now()} fail ${j.profileId} after ${attempts}`);
      if (opts.failStore) {
        return later(ts, 0, () => {
          throw new StoreError('store down');
        });
      }
      return later(ts, 1, (): DeliveryOutcome => ({ status: 'failed', job: j, attempts, code: 'ERR_HTTP_STATUS', error: String(err) }));
    },
    close: () => Promise.resolve(),
  };
}

/** A task in one word: `<id>:delivered/<attempts>`, `failed/…`, `abandoned <code>`, `error/<attempts>` or `open`. */
export const brief = (t: ExportTask): string =>
  `${t.job.profileId}:${
    t.outcome
      ? `${t.outcome.status}/${t.outcome.attempts}`
      : t.abandoned
        ? `abandoned ${(t.abandoned as { code?: string }).code}`
        : t.error
          ? `error/${t.attempts}`
          : 'open'
  }`;
