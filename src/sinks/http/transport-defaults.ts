/**
 * Every tuning default of the transport, named in one place (shared by the transport, its
 * per-request handler and the error classification).
 */
export const TRANSPORT_DEFAULTS = {
  /** Requests in flight on one socket (1 = no pipelining). */
  pipelining: 1,
  /** How long an idle keep-alive socket is kept, in ms (a server's keep-alive hint may shorten it). */
  keepAliveTimeoutMs: 30_000,
  /** Upper bound of the keep-alive time a server hint can grant, in ms. */
  keepAliveMaxTimeoutMs: 120_000,
  /** Largest TCP + TLS connect time, in ms (and never more than the request's `timeoutMs`). */
  connectTimeoutMs: 10_000,
  /** Bytes of a non-2xx body kept for the error reason. */
  errorExcerptBytes: 512,
  /** Characters of that excerpt put in the reason. */
  errorExcerptChars: 200,
  /** Bytes of a response body read (and discarded) before the socket is closed instead. */
  maxDrainBytes: 1_048_576,
} as const;
