/**
 * What the sinks consume and produce: export jobs, delivery outcomes, stored failed
 * requests and rejected events.
 */
import type { Observable } from 'rxjs';
import type { ExportPayload } from '../domain/types.js';

/** One HTTP request to make: one profile's payload for one dataflow. */
export interface ExportJob {
  dataflowId: string;
  destinationId: string;
  profileId: string;
  /** Stable across retries and replays of this export. */
  idempotencyKey: string;
  payload: ExportPayload;
  /** Upstream event time (ms since epoch), for end-to-end latency. */
  eventTime?: number;
  /**
   * The version of the state this export carries (increasing per (dataflow, profile); set by
   * `queueBehind`): a send of a version at or below the newest delivered one is superseded.
   */
  version?: number;
  /**
   * Pool mode: checked before every attempt; `false` means this worker lost the partition
   * (paused past its lease), so the export must not go out: the sink errors with
   * `FencedError` and the message is left to the new owner.
   */
  guard?: () => boolean;
}

export type DeliveryOutcome =
  | { status: 'delivered'; job: ExportJob; attempts: number; statusCode: number }
  /** Durably queued in its dataflow's retry queue (the message may be acked; the queue finishes it). */
  | { status: 'queued'; job: ExportJob; attempts: number }
  | {
      status: 'failed';
      job: ExportJob;
      attempts: number;
      statusCode?: number;
      /** Stable error code (DeliveryError.code). */
      code: string;
      /** Secret-free reason. */
      error: string;
    };

/**
 * Cancels one attempt in flight: the chain cancels it when it is unsubscribed (shutdown, a
 * lost partition); the sink attaches what to cancel (the HTTP transport's `Cancellation` fits).
 */
export interface AttemptCancellation {
  readonly cancelled: boolean;
  cancel(): void;
  /** The sink's hook: `target.cancel()` runs when (or if already) cancelled. */
  attach(target: { cancel(): void }): void;
}

/** The retry waits of a sink's destination (config `destinations[].retry`). */
export interface RetryDelays {
  minDelayMs: number;
  maxDelayMs: number;
  /** Longest `Retry-After` honoured. */
  retryAfterMaxMs: number;
}

/**
 * Delivers export jobs to one destination for one dataflow, as the stages of the chain's tail
 * use it (see `deliverExports`): the rate limit and the retries are the chain's operators,
 * not the sink's.
 */
export interface ExportSink {
  /**
   * ONE attempt: credentials, request, fence check (`job.guard()`) right before the request
   * is handed to the transport. Call it as its send permit is granted (in the same
   * synchronous run): a sink may measure the permit's age from the call and take a new one
   * when it grew too old before the socket (`RateLimiter.maxPermitAgeMs`). Resolves with
   * the 2xx status; rejects with a `DeliveryError` (`retryable`, `retryAfterMs`;
   * `credentialsRenewed` when a 401 was answered to credentials that were just renewed:
   * resend once at once), a `FencedError`, or the limiter's refusal of a new permit
   * (`ERR_RATE_LIMITER`).
   */
  attempt(job: ExportJob, cancellation: AttemptCancellation, options?: { renewOn401?: boolean }): Promise<{ statusCode: number }>;
  /** How long the retries of this sink wait. */
  readonly retryDelays: RetryDelays;
  /**
   * A final failure after `attempts` attempts: stored as a failed request (secret-free
   * reason) unless the sink was made not to store, and returned as a `failed` outcome.
   * Rejects with `StoreError` when the record cannot be stored (the message must not be acked).
   */
  fail(job: ExportJob, attempts: number, err: unknown): Promise<DeliveryOutcome>;
  close(): Promise<void>;
}

/** Delivers one job end to end (rate limit, attempts, retries, failed store); `failed replay` uses it. */
export interface ExportSender {
  /** Cold; emits exactly one outcome; errors with `StoreError` / `FencedError`. */
  send(job: ExportJob): Observable<DeliveryOutcome>;
}

/** A stored failed request (SPEC §6). Holds no secret: no auth header, no URL credentials. */
export interface FailedRequest {
  /** Unique id of the record (the export's idempotency key). */
  id: string;
  dataflowId: string;
  destinationId: string;
  profileId: string;
  idempotencyKey: string;
  payload: ExportPayload;
  attempts: number;
  lastStatus?: number;
  lastErrorCode: string;
  lastError: string;
  /** ISO time of the last attempt. */
  failedAt: string;
  /** How many times it was replayed and failed again. */
  replays?: number;
  /** The version of the state it carries (ExportJob.version); absent in records of older releases. */
  version?: number;
}

export interface FailedRequestStore {
  put(record: FailedRequest): Promise<void>;
  list(filter?: { dataflowId?: string }): Promise<FailedRequest[]>;
  remove(ids: string[]): Promise<void>;
  close(): Promise<void>;
}

/** A rejected input event with its reason (SPEC §2). */
export interface RejectedEvent {
  /** The source message key. */
  sourceKey: string;
  code: string;
  reason: string;
  /** The raw event as text, cut to a bounded size. */
  raw: string;
  rejectedAt: string;
}

export interface RejectedEventStore {
  put(record: RejectedEvent): Promise<void>;
  list(): Promise<RejectedEvent[]>;
  close(): Promise<void>;
}
