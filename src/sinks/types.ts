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
   * Pool mode: checked before every attempt; `false` means this worker lost the partition
   * (paused past its lease), so the export must not go out: the sink errors with
   * `FencedError` and the message is left to the new owner.
   */
  guard?: () => boolean;
}

export type DeliveryOutcome =
  | { status: 'delivered'; job: ExportJob; attempts: number; statusCode: number }
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

/** Delivers export jobs. `send` never errors: a failure becomes a `failed` outcome (already stored). */
export interface ExportSink {
  send(job: ExportJob): Observable<DeliveryOutcome>;
  close(): Promise<void>;
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
