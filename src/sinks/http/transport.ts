/**
 * The transport: one undici `Agent` per destination (keep-alive, `connections` sockets per
 * origin, no pipelining, the destination's TLS / mTLS settings) and `send`, which makes one
 * request through undici's low-level `dispatch()` (a small handler per request, no response
 * stream), always drains the response body so sockets are reused, and turns every failure
 * into a typed, secret-free `DeliveryError`.
 */
import type { Dispatcher } from 'undici';
import type { DestinationConfig } from '../../config/load.js';
import { DeliveryError } from '../../errors.js';
import { processRedactor, type Redactor } from '../../observability/redact.js';
import { createDispatcher } from './proxy.js';
import type { HttpRequest } from './request.js';

/** Every tuning default of the transport, named in one place. */
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

/** The answer to a successful (2xx) request; its body has been consumed. */
export interface TransportResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * Cancels one `send` without an AbortController: a plain object, no EventTarget, no
 * listener (the sink makes one per export). `cancel()` before `send` makes it reject at once
 * with "request cancelled"; during it, it aborts the request; after it, it does nothing.
 *
 * @example
 * ```ts
 * const c = new Cancellation();
 * const p = transport.send(req, { cancellation: c });
 * c.cancel(); // p rejects with ERR_HTTP_CONNECTION "request cancelled"
 * ```
 */
export class Cancellation {
  private target: { cancel(): void } | undefined;
  private done = false;

  /** True once `cancel()` was called. */
  get cancelled(): boolean {
    return this.done;
  }

  cancel(): void {
    if (this.done) return;
    this.done = true;
    this.target?.cancel();
  }

  /** The transport's hook: `target.cancel()` runs when (or if already) cancelled. */
  attach(target: { cancel(): void }): void {
    this.target = target;
    if (this.done) target.cancel();
  }
}

/** How a `send` can be cancelled. */
export interface SendOptions {
  /** Aborting it cancels the request. */
  signal?: AbortSignal;
  /** Cancelling it cancels the request: the same as `signal`, cheaper. */
  cancellation?: Pick<Cancellation, 'cancelled' | 'attach'>;
}

export interface HttpTransport {
  /**
   * Sends one request. Resolves on 2xx; rejects with a `DeliveryError` otherwise:
   * `ERR_HTTP_STATUS` (with `statusCode`; retryable for 408, 425, 429, 5xx; `retryAfterMs` on
   * 429/503), `ERR_HTTP_TIMEOUT` (retryable) or `ERR_HTTP_CONNECTION` (retryable). Aborting
   * `signal` or cancelling `cancellation` cancels the request (`ERR_HTTP_CONNECTION`,
   * "request cancelled").
   */
  send(req: HttpRequest, options?: SendOptions): Promise<TransportResponse>;
  /** The undici dispatcher, to share the connection pool (e.g. with a same-origin token endpoint). */
  readonly dispatcher: Dispatcher;
  /** Closes the sockets once the requests in flight are done. Idempotent. */
  close(): Promise<void>;
}

export interface TransportOptions {
  destination: Pick<DestinationConfig, 'connections' | 'timeoutMs' | 'tls'> & Partial<Pick<DestinationConfig, 'proxy'>>;
  /** Clock for `Retry-After` HTTP-dates, ms since epoch. @default Date.now */
  now?: () => number;
  /** Replace the Agent (tests, interceptors). @default a new undici Agent built from `destination` */
  dispatcher?: Dispatcher;
  /**
   * Masks secrets in the excerpt of an error answer, before it is cut (an endpoint may echo
   * the request). @default processRedactor (every secret known to the process, runtime tokens included)
   */
  redactor?: Redactor;
}

/** Statuses worth a retry besides 5xx. */
const RETRYABLE_STATUS = new Set([408, 425, 429]);
/** Statuses whose `Retry-After` we honour. */
const RETRY_AFTER_STATUS = new Set([429, 503]);

/**
 * Creates the transport of one destination.
 *
 * @example
 * ```ts
 * const transport = createTransport({ destination: dest });
 * await transport.send(buildRequest(dest, job)); // { statusCode: 200, headers }
 * await transport.close();
 * ```
 *
 * @param options.now @default Date.now
 * @param options.dispatcher @default a new undici Agent: keep-alive, `connections` per
 *   origin, pipelining 1, headers/body timeouts of `timeoutMs`, TLS from `destination.tls`;
 *   through `destination.proxy` when it has one (see ./proxy.ts)
 */
export function createTransport(options: TransportOptions): HttpTransport {
  const { destination } = options;
  const now = options.now ?? Date.now;
  const timeoutMs = destination.timeoutMs;
  const tls = destination.tls;
  const dispatcher =
    options.dispatcher ??
    createDispatcher({
      connections: destination.connections,
      pipelining: TRANSPORT_DEFAULTS.pipelining,
      keepAliveTimeout: TRANSPORT_DEFAULTS.keepAliveTimeoutMs,
      keepAliveMaxTimeout: TRANSPORT_DEFAULTS.keepAliveMaxTimeoutMs,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      connect: {
        timeout: Math.min(TRANSPORT_DEFAULTS.connectTimeoutMs, timeoutMs),
        ...(tls
          ? {
              cert: tls.cert,
              key: tls.key,
              ca: tls.ca,
              passphrase: tls.passphrase,
              rejectUnauthorized: tls.rejectUnauthorized,
            }
          : {}),
      },
    }, destination.proxy);

  let lastUrl = '';
  let lastTarget: { origin: string; path: string; https: boolean } = { origin: '', path: '', https: false };
  const target = (url: string): { origin: string; path: string; https: boolean } => {
    if (url !== lastUrl) {
      const u = new URL(url);
      lastTarget = { origin: u.origin, path: `${u.pathname}${u.search}`, https: u.protocol === 'https:' };
      lastUrl = url;
    }
    return lastTarget;
  };
  const settings: ExchangeSettings = { timeoutMs, now, redactor: options.redactor ?? processRedactor };

  let closing: Promise<void> | undefined;

  function send(req: HttpRequest, opts?: SendOptions): Promise<TransportResponse> {
    const signal = opts?.signal;
    const cancellation = opts?.cancellation;
    if (signal?.aborted || cancellation?.cancelled) return Promise.reject(aborted());
    let t: { origin: string; path: string; https: boolean };
    try {
      t = target(req.url);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<TransportResponse>((resolve, reject) => {
      const ex = new Exchange(settings, t.https, resolve, reject, signal);
      cancellation?.attach(ex);
      // undici's low-level API: no Readable body, no async iterator, no AbortController (the
      // exchange aborts through the controller undici hands it); errors arrive in onResponseError.
      dispatcher.dispatch({ origin: t.origin, path: t.path, method: req.method, headers: req.headers, body: req.body }, ex);
    });
  }

  return {
    send,
    dispatcher,
    close(): Promise<void> {
      closing ??= options.dispatcher ? Promise.resolve() : dispatcher.close();
      return closing;
    },
  };
}

/** What every exchange of one transport shares. */
interface ExchangeSettings {
  timeoutMs: number;
  now: () => number;
  redactor: Redactor;
}

/** The reason given to undici when we abort a request ourselves (it comes back in onResponseError). */
function abortReason(): Error {
  return new DOMException('This operation was aborted', 'AbortError');
}

function onDeadline(ex: Exchange): void {
  ex.expire();
}

/**
 * One request as an undici `DispatchHandler`, in undici 7's controller style
 * (`onRequestStart` / `onResponseStart` / `onResponseData` / `onResponseEnd` /
 * `onResponseError`; the older `onConnect` / `onHeaders` / `onData` / `onComplete` style is
 * deprecated). Keeps the status, the headers and at most `errorExcerptBytes` of a non-2xx
 * body; reads (and drops) the rest so the socket is reused, up to `maxDrainBytes`, past which
 * the request is aborted (the socket is closed instead). Settles its promise once: on the
 * end of the response, or on undici's error — our own aborts (deadline, cancellation)
 * included, which undici reports there once the request has reached a socket, as with
 * `request()` and a signal.
 */
class Exchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private statusCode = 0;
  private headers: Record<string, string | string[] | undefined> = {};
  /** Kept bytes of a non-2xx body; undefined for 2xx. */
  private kept: Buffer[] | undefined;
  private keptBytes = 0;
  private total = 0;
  private settled = false;
  /** Why we aborted the request ourselves, if we did. */
  private why: 'timeout' | 'cancel' | undefined;
  /** The overall deadline (queueing + connect + headers + body); a plain timer, not an operator. */
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly settings: ExchangeSettings,
    private readonly https: boolean,
    private readonly resolve: (res: TransportResponse) => void,
    private readonly reject: (err: unknown) => void,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.timer = setTimeout(onDeadline, settings.timeoutMs, this);
    this.timer.unref();
    signal?.addEventListener('abort', this, { once: true });
  }

  /** The caller gave up (`Cancellation`). */
  cancel(): void {
    this.abort('cancel');
  }

  /** The `signal` listener (an object listener: no closure per request). */
  handleEvent(): void {
    this.abort('cancel');
  }

  expire(): void {
    this.abort('timeout');
  }

  private abort(why: 'timeout' | 'cancel'): void {
    if (this.settled || this.why !== undefined) return;
    this.why = why;
    // Not on a socket yet: onRequestStart aborts it when it gets one.
    this.controller?.abort(abortReason());
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    if (this.why !== undefined) controller.abort(abortReason());
    else this.controller = controller;
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    // 1xx informational answers come first; the real one follows.
    if (statusCode < 200) return;
    this.statusCode = statusCode;
    this.headers = headers;
    if (statusCode >= 300) this.kept = [];
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.settled) return;
    this.total += chunk.length;
    const keep = TRANSPORT_DEFAULTS.errorExcerptBytes;
    if (this.kept !== undefined && this.keptBytes < keep) {
      const part = chunk.subarray(0, keep - this.keptBytes);
      this.kept.push(part);
      this.keptBytes += part.length;
    }
    if (this.total > TRANSPORT_DEFAULTS.maxDrainBytes) {
      // Too long to read through: answer with what we have, close the socket.
      this.finish();
      controller.abort(abortReason());
    }
  }

  onResponseEnd(): void {
    this.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    if (this.settled) return;
    this.settle();
    const { timeoutMs } = this.settings;
    if (this.why === 'timeout') {
      this.reject(new DeliveryError('ERR_HTTP_TIMEOUT', `no complete answer within ${timeoutMs} ms`, { retryable: true, cause: err }));
    } else if (this.why === 'cancel') {
      this.reject(aborted(err));
    } else {
      this.reject(classify(err, timeoutMs, this.https));
    }
  }

  private finish(): void {
    if (this.settled) return;
    this.settle();
    const { statusCode, headers } = this;
    if (statusCode >= 200 && statusCode < 300) {
      this.resolve({ statusCode, headers });
      return;
    }
    const excerpt = this.keptBytes === 0 ? '' : Buffer.concat(this.kept ?? []).toString('utf8');
    this.reject(statusError(statusCode, headers, excerpt, this.settings));
  }

  private settle(): void {
    this.settled = true;
    this.controller = undefined;
    clearTimeout(this.timer);
    this.signal?.removeEventListener('abort', this);
  }
}

function aborted(cause?: unknown): DeliveryError {
  return new DeliveryError('ERR_HTTP_CONNECTION', 'request cancelled', { retryable: true, cause });
}

/**
 * A short, single-line, printable excerpt of a response body, with every secret masked
 * *before* anything is cut: first the kept bytes are masked whole (every form, see
 * redact.ts), then a secret's fragment left at their end (where `errorExcerptBytes` or the
 * endpoint cut the body) is masked, then the text is flattened and cut to
 * `errorExcerptChars` (never inside a mask), masking a fragment at that cut too.
 */
function cleanExcerpt(text: string, redactor: Redactor): string {
  const masked = redactor.tail(redactor.text(text.replace(/\uFFFD+$/, '')));
  const flat = masked
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return redactor.cut(flat, TRANSPORT_DEFAULTS.errorExcerptChars);
}

function headerValue(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Parses a `Retry-After` value: delta-seconds or an HTTP-date. Returns ms to wait (never
 * negative), or undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  if (!/[a-z]/i.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

function statusError(
  statusCode: number,
  headers: Record<string, string | string[] | undefined>,
  body: string,
  settings: ExchangeSettings,
): DeliveryError {
  const now = settings.now();
  const retryable = statusCode >= 500 || RETRYABLE_STATUS.has(statusCode);
  const retryAfterMs = RETRY_AFTER_STATUS.has(statusCode)
    ? parseRetryAfter(headerValue(headers, 'retry-after'), now)
    : undefined;
  const excerpt = cleanExcerpt(body, settings.redactor);
  const redirect = statusCode >= 300 && statusCode < 400 ? ' (redirects are not followed)' : '';
  return new DeliveryError('ERR_HTTP_STATUS', `HTTP ${statusCode}${redirect}${excerpt ? `: ${excerpt}` : ''}`, {
    retryable,
    statusCode,
    retryAfterMs,
  });
}

/** Node / OpenSSL codes of TLS failures (handshake, certificate checks). */
const TLS_CODE = /^(ERR_SSL_|ERR_TLS_|EPROTO$)|CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|HOSTNAME|ALTNAME/;
/** Plain socket / DNS failure codes. */
const NET_CODE = /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ENETDOWN|EHOSTDOWN|ETIMEDOUT|EADDRNOTAVAIL)$/;

interface ErrLike {
  code?: unknown;
  message?: unknown;
  syscall?: unknown;
  address?: unknown;
  port?: unknown;
  hostname?: unknown;
  cause?: unknown;
  name?: unknown;
}

function asErr(err: unknown): ErrLike {
  return err !== null && typeof err === 'object' ? (err as ErrLike) : {};
}

/**
 * Turns a thrown request error into a DeliveryError. Reasons come from error codes and
 * Node's own messages (which hold addresses, never header values).
 */
function classify(err: unknown, timeoutMs: number, https: boolean): DeliveryError {
  // undici sometimes wraps the socket error: look at the cause chain as well
  const chain: ErrLike[] = [];
  for (let e: unknown = err, i = 0; e !== undefined && e !== null && i < 4; e = asErr(e).cause, i++) chain.push(asErr(e));
  const codes = chain.map((e) => (typeof e.code === 'string' ? e.code : ''));
  const first = chain[0] ?? {};
  const msgOf = (e: ErrLike): string => (typeof e.message === 'string' ? e.message.split('\n')[0]! : 'unknown error');

  const timeoutCode = codes.find((c) => c === 'UND_ERR_HEADERS_TIMEOUT' || c === 'UND_ERR_BODY_TIMEOUT');
  if (timeoutCode) {
    const what = timeoutCode === 'UND_ERR_HEADERS_TIMEOUT' ? 'response headers' : 'response body';
    return new DeliveryError('ERR_HTTP_TIMEOUT', `no ${what} within ${timeoutMs} ms`, { retryable: true, cause: err });
  }
  if (codes.includes('UND_ERR_CONNECT_TIMEOUT')) {
    return new DeliveryError('ERR_HTTP_CONNECTION', `connect timeout after ${Math.min(TRANSPORT_DEFAULTS.connectTimeoutMs, timeoutMs)} ms`, {
      retryable: true,
      cause: err,
    });
  }
  const tlsIdx = codes.findIndex((c) => TLS_CODE.test(c));
  if (tlsIdx >= 0) {
    const e = chain[tlsIdx]!;
    // OpenSSL's own `reason` ("bad decrypt", "tlsv1 alert unknown ca") reads better than its full message.
    const openssl = typeof (e as { reason?: unknown }).reason === 'string' && /^ERR_SSL_/.test(codes[tlsIdx]!);
    const reason = openssl ? `${(e as { reason: string }).reason} (${codes[tlsIdx]})` : msgOf(e);
    // A key that cannot be decrypted will never work: retrying cannot help.
    const permanent = /BAD_DECRYPT|bad decrypt/i.test(`${codes[tlsIdx]} ${reason}`);
    return new DeliveryError('ERR_HTTP_CONNECTION', `TLS: ${reason}`, { retryable: !permanent, cause: err });
  }
  const netIdx = codes.findIndex((c) => NET_CODE.test(c));
  if (netIdx >= 0) {
    const e = chain[netIdx]!;
    const code = codes[netIdx]!;
    // Node's message is e.g. `connect ECONNREFUSED 127.0.0.1:1234` or `getaddrinfo ENOTFOUND host`
    const reason = typeof e.syscall === 'string' && msgOf(e).includes(code) ? msgOf(e) : `${code}: ${msgOf(e)}`;
    return new DeliveryError('ERR_HTTP_CONNECTION', reason, { retryable: true, cause: err });
  }
  if (codes.includes('UND_ERR_SOCKET') || codes.includes('UND_ERR_CLOSED') || codes.includes('UND_ERR_DESTROYED')) {
    // Under TLS 1.3 a server that refuses our client certificate just hangs up after the handshake.
    const hint = https ? ' (before any answer: the server may have refused the TLS client certificate)' : '';
    return new DeliveryError('ERR_HTTP_CONNECTION', `socket: ${msgOf(first)}${hint}`, { retryable: true, cause: err });
  }
  if (codes.some((c) => c.startsWith('HPE_') || c === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH')) {
    return new DeliveryError('ERR_HTTP_CONNECTION', `invalid HTTP response: ${msgOf(first)}`, { retryable: true, cause: err });
  }
  if (codes.includes('UND_ERR_INVALID_ARG') || codes.includes('UND_ERR_NOT_SUPPORTED')) {
    // undici names the offending header, never its value
    return new DeliveryError('ERR_REQUEST_BUILD', `request rejected by the HTTP client: ${msgOf(first)}`, {
      retryable: false,
      cause: err,
    });
  }
  const code = codes.find((c) => c !== '') ?? (typeof first.name === 'string' ? first.name : 'Error');
  const permanent = /BAD_DECRYPT/.test(code);
  return new DeliveryError('ERR_HTTP_CONNECTION', permanent ? `TLS: the client key cannot be decrypted (${code})` : `request failed (${code})`, {
    retryable: !permanent,
    cause: err,
  });
}
