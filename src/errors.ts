/**
 * Typed errors. Every error carries a stable `code`; callers match on `code`, never on
 * message text. Messages never contain secrets (see observability/redact.ts).
 * Shape after undici `lib/core/errors.js`.
 */

export class HttpDestinationError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A bad configuration. `path` names the field, e.g. `destinations[0].auth.clientSecret`. */
export class ConfigError extends HttpDestinationError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super('ERR_CONFIG', path ? `${path}: ${message}` : message, options);
    this.path = path;
  }
}

/** Several config problems found at once; `issues` holds each. */
export class ConfigErrors extends HttpDestinationError {
  readonly issues: ConfigError[];
  constructor(issues: ConfigError[]) {
    super('ERR_CONFIG', issues.map((i) => i.message).join('\n'));
    this.issues = issues;
  }
}

/** Codes of rejected input events (SPEC §2). */
export type RejectCode =
  | 'ERR_EVENT_JSON'
  | 'ERR_EVENT_SHAPE'
  | 'ERR_EVENT_TOO_LARGE'
  | 'ERR_EVENT_ENCODING' // bytes that are not UTF-8, or a string with a lone surrogate
  | 'ERR_EVENT_MERGE' // the update could not be merged into the profile's snapshot
  | 'ERR_SNAPSHOT_TOO_LARGE'; // the update would grow the snapshot past worker.maxSnapshotBytes

/** An input event that is not valid JSON or breaks the rules of SPEC §2. */
export class EventRejectedError extends HttpDestinationError {
  declare readonly code: RejectCode;
  constructor(code: RejectCode, message: string) {
    super(code, message);
  }
}

/** Codes of delivery failures. */
export type DeliveryCode =
  | 'ERR_HTTP_STATUS' // non-2xx answer
  | 'ERR_HTTP_TIMEOUT' // no answer in timeoutMs
  | 'ERR_HTTP_CONNECTION' // refused, reset, DNS, TLS handshake…
  | 'ERR_AUTH' // could not obtain credentials (token endpoint down, refused grant)
  | 'ERR_REQUEST_BUILD' // the request could not be built (e.g. a body that cannot be signed)
  | 'ERR_INTERNAL'; // a bug: an unexpected exception on the delivery path

/** One failed delivery attempt. */
export class DeliveryError extends HttpDestinationError {
  declare readonly code: DeliveryCode;
  readonly retryable: boolean;
  readonly statusCode?: number;
  /** Milliseconds the server asked us to wait (Retry-After), when it did. */
  readonly retryAfterMs?: number;
  readonly dataflowId?: string;
  constructor(
    code: DeliveryCode,
    message: string,
    opts: {
      retryable: boolean;
      statusCode?: number;
      retryAfterMs?: number;
      dataflowId?: string;
      cause?: unknown;
    },
  ) {
    super(code, message, { cause: opts.cause });
    this.retryable = opts.retryable;
    this.statusCode = opts.statusCode;
    this.retryAfterMs = opts.retryAfterMs;
    this.dataflowId = opts.dataflowId;
  }
}

/** A store (snapshot, failed requests, rejected events) could not do its work. */
export class StoreError extends HttpDestinationError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_STORE', message, options);
  }
}

/**
 * A snapshot write refused because this worker no longer holds the lease of the profile's
 * partition (it was paused or cut off, and another worker took over). Never retried here.
 */
export class FencedError extends HttpDestinationError {
  constructor(message: string) {
    super('ERR_FENCED', message);
  }
}

/** Bad command-line usage (exit code 2). */
export class UsageError extends HttpDestinationError {
  constructor(message: string) {
    super('ERR_USAGE', message);
  }
}
