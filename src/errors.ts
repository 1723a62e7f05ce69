/**
 * Typed errors. Every error carries a stable `code`; callers match on `code`, never on
 * message text. Messages never contain secrets (see observability/redact.ts).
 * Shape after undici `lib/core/errors.js`.
 */

/** Codes of rejected input events (SPEC §2). */
export type RejectCode =
  | 'ERR_EVENT_JSON'
  | 'ERR_EVENT_SHAPE'
  | 'ERR_EVENT_TOO_LARGE'
  | 'ERR_EVENT_ENCODING' // bytes that are not UTF-8, or a string with a lone surrogate
  | 'ERR_EVENT_MERGE' // the update could not be merged into the profile's snapshot
  | 'ERR_SNAPSHOT_TOO_LARGE'; // the update would grow the snapshot past worker.maxSnapshotBytes

/** Codes of delivery failures. */
export type DeliveryCode =
  | 'ERR_HTTP_STATUS' // non-2xx answer
  | 'ERR_HTTP_TIMEOUT' // no answer in timeoutMs
  | 'ERR_HTTP_CONNECTION' // refused, reset, DNS, TLS handshake…
  | 'ERR_PERMIT_STALE' // not sent: its send permit expired before the request reached the socket (SendOptions.permitDeadline)
  | 'ERR_AUTH' // could not obtain credentials (token endpoint down, refused grant)
  | 'ERR_REQUEST_BUILD' // the request could not be built (e.g. a body that cannot be signed)
  | 'ERR_INTERNAL'; // a bug: an unexpected exception on the delivery path

/** Every stable code an error of this project carries. Match on these, never on message text. */
export type ErrorCode =
  | RejectCode
  | DeliveryCode
  | 'ERR_CONFIG' // a bad configuration (the message names the field)
  | 'ERR_USAGE' // bad command-line usage
  | 'ERR_STORE' // a store could not do its work
  | 'ERR_FENCED' // this worker lost the partition's lease
  | 'ERR_RATE_LIMITER' // the rate limiter stopped without granting
  | 'ERR_NO_OUTCOME' // a sink ended without an outcome for an export
  | 'ERR_NATS_CONNECT'
  | 'ERR_NATS_CLOSED'
  | 'ERR_JETSTREAM'
  | 'ERR_JETSTREAM_CONFIG'
  | 'ERR_JETSTREAM_CONSUMER_GONE'
  | 'ERR_JETSTREAM_PUBLISH'
  | 'ERR_POOL_PARTITIONS'
  | 'ERR_STORE_LOST' // the Redis store lost its data (epoch marker gone or changed): exports stop
  | 'ERR_STORE_LOCKED' // another `run` holds the local store
  | 'ERR_STARTUP' // NATS or Redis unreachable for worker.startupTimeoutMs at start
  | 'ERR_PROFILE_NOT_FOUND' // explain: the store holds no such profile
  | 'ERR_NOTHING_IMPORTED'; // audiences import: no row could be imported

/**
 * Whether `err` carries the stable code `code` (an `HttpDestinationError`, or any object with
 * that `code`, e.g. one that crossed a structured clone). The one way to match on codes.
 *
 * @example if (hasCode(err, 'ERR_FENCED')) msg.nak();
 */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** The code of `err` when it is one of ours, else `undefined`. */
export function codeOf(err: unknown): ErrorCode | undefined {
  return err instanceof HttpDestinationError ? err.code : undefined;
}

export class HttpDestinationError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
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

/** An input event that is not valid JSON or breaks the rules of SPEC §2. */
export class EventRejectedError extends HttpDestinationError {
  declare readonly code: RejectCode;
  constructor(code: RejectCode, message: string) {
    super(code, message);
  }
}

/** One failed delivery attempt. */
export class DeliveryError extends HttpDestinationError {
  declare readonly code: DeliveryCode;
  readonly retryable: boolean;
  readonly statusCode?: number;
  /** Milliseconds the server asked us to wait (Retry-After), when it did. */
  readonly retryAfterMs?: number;
  readonly dataflowId?: string;
  /** A 401 answered to credentials that were renewed since: resend once at once (same attempt). */
  readonly credentialsRenewed?: boolean;
  constructor(
    code: DeliveryCode,
    message: string,
    opts: {
      retryable: boolean;
      statusCode?: number;
      retryAfterMs?: number;
      dataflowId?: string;
      credentialsRenewed?: boolean;
      cause?: unknown;
    },
  ) {
    super(code, message, { cause: opts.cause });
    this.credentialsRenewed = opts.credentialsRenewed;
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

/**
 * `err` as the rejection of the event a pure step was working on: an `EventRejectedError` as
 * it is; anything else (a bug met on this event's data: a TypeError, a RangeError) as
 * `ERR_EVENT_SHAPE` naming the step and the error, so a poison event is rejected once
 * instead of retried forever.
 *
 * @example toEventRejection(new TypeError('x is undefined'), 'detect') // ERR_EVENT_SHAPE "event: could not be processed (detect: TypeError: x is undefined)"
 */
export function toEventRejection(err: unknown, stepName: string): EventRejectedError {
  if (err instanceof EventRejectedError) return err;
  const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const cut = text.length > 200 ? `${text.slice(0, 199)}…` : text;
  return new EventRejectedError('ERR_EVENT_SHAPE', `event: could not be processed (${stepName}: ${cut})`);
}

/** Another live process holds the local store's run lock (one `run` per local store). */
export class StoreLockedError extends HttpDestinationError {
  readonly path: string;
  readonly pid: number;
  constructor(path: string, pid: number) {
    super(
      'ERR_STORE_LOCKED',
      `local store ${path} is in use by another run (pid ${pid}): one run per local store; stop it first, or give this run another store.path`,
    );
    this.path = path;
    this.pid = pid;
  }
}

/**
 * The Redis store lost its data (its epoch marker is missing or changed): nothing is applied or
 * exported until an operator runs `http-destination pool reset-state` (README, Operations).
 */
export class StoreLostError extends HttpDestinationError {
  constructor(message: string) {
    super('ERR_STORE_LOST', message);
  }
}

/** NATS or Redis did not answer for `worker.startupTimeoutMs` at start (the worker exits 1). */
export class StartupError extends HttpDestinationError {
  declare readonly code: 'ERR_STARTUP';
  constructor(message: string) {
    super('ERR_STARTUP', message);
  }
}
