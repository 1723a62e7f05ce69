/** Defaults of {@link jetstreamSource}, named in one place. */
export const JETSTREAM_SOURCE_DEFAULTS = {
  /** Messages asked for per pull request (the client re-pulls at 75 %). */
  batchSize: 256,
  /** Messages delivered and not yet acknowledged, at most (the consumer's `max_ack_pending`). */
  maxAckPending: 2_048,
  /** Unacknowledged for this long → redelivered (the consumer's `ack_wait`). */
  ackWaitMs: 30_000,
  /** Create the stream and the durable consumer when missing. */
  create: true,
  /** First wait before re-creating a lost consumer / retrying a failed start; doubles. */
  restartDelayMs: 250,
  /** Longest wait between such retries. */
  maxRestartDelayMs: 5_000,
  /**
   * After unsubscribe: how long acks of messages already emitted are still sent before the
   * connection closes (so a graceful stop can finish its in-flight work).
   */
  closeGraceMs: 5_000,
} as const;
