/**
 * What every source emits: one raw input message with its acknowledgement handles.
 * A JetStream message and a line of a JSON Lines file look the same to the pipeline.
 */
export interface SourceMessage {
  /** The raw event: one JSON object (bytes or text). */
  readonly data: string | Uint8Array;
  /**
   * A stable identity of this message in its source (e.g. `js:PROFILES:1234`,
   * `file:events.jsonl:17`). The same message redelivered has the same key; it feeds the
   * Idempotency-Key of the exports it causes.
   */
  readonly key: string;
  /** Position in the source, increasing (stream sequence, line number). */
  readonly seq: number;
  /** When the worker received it (ms since epoch). */
  readonly receivedAt: number;
  /** The source-wide, per-profile increasing position (JetStream stream sequence), when there is one. */
  readonly watermark?: number;
  /**
   * Pool mode: the lease this message's writes are fenced with (see ApplyContext.fence), and
   * a local check that the lease is still held, which guards its HTTP exports the same way.
   */
  readonly fence?: { key: string; value: string; isCurrent(): boolean };
  /**
   * Set on a backfill item read from the stream (header `Hd-Backfill`, see
   * streams/backfill-item.ts): the worker hands it to the chain as a backfill item.
   */
  readonly backfill?: BackfillItemRef;
  /** Acknowledge: every export this message caused was delivered or stored as failed. */
  ack(): void;
  /** Processing is still going on (retries backing off): keep the message from redelivery. */
  working(): void;
  /** Processing failed for a reason unrelated to the message (a store was down): redeliver. */
  nak(delayMs?: number): void;
}

/** A status notification of a source (heartbeat missed, consumer deleted, reconnecting…). */
export interface SourceStatus {
  kind: string;
  message: string;
  /** `true` when the source cannot go on by itself. */
  fatal?: boolean;
}

/** A backfill item read from the stream (see streams/backfill-item.ts). */
export interface BackfillItemRef {
  /** The backfill id (`backfillId(dataflowId, audienceId, mappingCreatedAt)`). */
  id: string;
  dataflowId: string;
  audienceId: string;
  profileId: string;
}
