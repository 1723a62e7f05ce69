/**
 * The transport: one undici `Agent` per destination (keep-alive, `connections` sockets per
 * origin, no pipelining, the destination's TLS / mTLS settings) and `send`, which makes one
 * request through undici's low-level `dispatch()` (a small handler per request, ./exchange.ts;
 * no response stream), always drains the response body so sockets are reused, and turns every failure
 * into a typed, secret-free `DeliveryError`.
 */
import type { Dispatcher } from 'undici';
import type { DestinationConfig } from '../../config/load.js';
import { processRedactor, type Redactor } from '../../observability/redact.js';
import { aborted, Deadlines, Exchange, stalePermit, type ExchangeSettings, type TransportResponse } from './exchange.js';
import { createDispatcher } from './proxy.js';
import type { HttpRequest } from './request.js';
import { sharedClock } from './shared-clock.js';
import { TRANSPORT_DEFAULTS } from './transport-defaults.js';

export { parseRetryAfter } from './answer-errors.js';
export type { TransportResponse } from './exchange.js';
export { TRANSPORT_DEFAULTS } from './transport-defaults.js';

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

/** A dataflow's rate limit, as a transport that sends later than it is called needs it (`SendOptions.pace`). */
export interface Pace {
  /** The dataflow (or whatever shares the limit). */
  key: string;
  /** Its rate limit, requests per second. */
  perSecond: number;
}

/** How a `send` can be cancelled, and paced. */
export interface SendOptions {
  /** Aborting it cancels the request. */
  signal?: AbortSignal;
  /** Cancelling it cancels the request: the same as `signal`, cheaper. */
  cancellation?: Pick<Cancellation, 'cancelled' | 'attach'>;
  /**
   * The rate limit the request was permitted under. The thread transport (which reaches the
   * socket a little later than `send` is called, and much later when its thread is short of
   * CPU) holds a request rather than put more than `perSecond` requests of `key` in any
   * sliding second at the socket. The inline transport sends at once: it ignores it.
   */
  pace?: Pace;
  /**
   * The last moment the request may be put on the wire, in ms on `sharedClock()`
   * (./shared-clock.ts): its send permit expires then (`RateLimiter.maxPermitAgeMs`). Both
   * transports check it right before undici gets the request — the thread transport on its
   * thread, after the pace gate let the request go — and past it send nothing and reject with
   * a retryable `ERR_PERMIT_STALE` ("request not sent: its send permit expired…"): the caller
   * takes a new permit and sends again. @default none (a permit of any age is used)
   */
  permitDeadline?: number;
}

export interface HttpTransport {
  /**
   * Sends one request. Resolves on 2xx; rejects with a `DeliveryError` otherwise:
   * `ERR_HTTP_STATUS` (with `statusCode`; retryable for 408, 425, 429, 5xx; `retryAfterMs` on
   * 429/503), `ERR_HTTP_TIMEOUT` (retryable) or `ERR_HTTP_CONNECTION` (retryable). Aborting
   * `signal` or cancelling `cancellation` cancels the request (`ERR_HTTP_CONNECTION`,
   * "request cancelled"). Past `permitDeadline` at the socket it sends nothing and rejects
   * with `ERR_PERMIT_STALE` (retryable).
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

/** Where a request goes, as undici's `dispatch` takes it. */
export interface RequestTarget {
  origin: string;
  path: string;
  https: boolean;
}

/**
 * A request URL's origin and path, remembered for the last URL asked (a destination's
 * requests all go to one URL: no `new URL` per request). Throws on an invalid URL.
 */
export function urlTargets(): (url: string) => RequestTarget {
  let lastUrl = '';
  let last: RequestTarget = { origin: '', path: '', https: false };
  return (url) => {
    if (url !== lastUrl) {
      const u = new URL(url);
      last = { origin: u.origin, path: `${u.pathname}${u.search}`, https: u.protocol === 'https:' };
      lastUrl = url;
    }
    return last;
  };
}

/** What a destination's undici dispatcher is built from (its transport's `destination`). */
export type DispatcherSettings = TransportOptions['destination'];

/**
 * The undici dispatcher of a destination: keep-alive, `connections` per origin, pipelining 1,
 * headers/body timeouts of `timeoutMs`, connect timeout of at most `timeoutMs`, TLS / mTLS
 * from `destination.tls`; through `destination.proxy` when it has one (./proxy.ts). The
 * inline transport, the transport thread's dispatchers and the thread transport's main-side
 * `dispatcher` are all made here, so they cannot drift apart.
 */
export function createDestinationDispatcher(destination: DispatcherSettings): Dispatcher {
  const { timeoutMs, tls } = destination;
  return createDispatcher(
    {
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
    },
    destination.proxy,
  );
}

/**
 * Hands a request to undici (or to the thread that runs it); returns what cancels it, or
 * undefined when it settled the promise itself (nothing to cancel).
 */
export type StartRequest = (
  req: HttpRequest,
  target: RequestTarget,
  resolve: (res: TransportResponse) => void,
  reject: (err: unknown) => void,
  signal: AbortSignal | undefined,
  options: SendOptions | undefined,
) => { cancel(): void } | undefined;

/**
 * The `send` of a transport around `start`, what both transports do alike: a send cancelled
 * before it begins rejects at once ("request cancelled"), the URL becomes a target (`targetOf`,
 * see `urlTargets`), and a `cancellation` is attached to what `start` returns.
 */
export function sender(targetOf: (url: string) => RequestTarget, start: StartRequest): HttpTransport['send'] {
  return (req, opts) => {
    const signal = opts?.signal;
    const cancellation = opts?.cancellation;
    if (signal?.aborted || cancellation?.cancelled) return Promise.reject(aborted());
    let t: RequestTarget;
    try {
      t = targetOf(req.url);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<TransportResponse>((resolve, reject) => {
      const handle = start(req, t, resolve, reject, signal, opts);
      if (handle !== undefined) cancellation?.attach(handle);
    });
  };
}

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
  const dispatcher = options.dispatcher ?? createDestinationDispatcher(destination);

  const target = urlTargets();
  const settings: ExchangeSettings = { timeoutMs, now, redactor: options.redactor ?? processRedactor, deadlines: new Deadlines(timeoutMs) };

  let closing: Promise<void> | undefined;

  // undici's low-level API: no Readable body, no async iterator, no AbortController (the
  // exchange aborts through the controller undici hands it); errors arrive in onResponseError.
  const send = sender(target, (req, t, resolve, reject, signal, opts) => {
    const permitDeadline = opts?.permitDeadline;
    if (permitDeadline !== undefined && sharedClock() > permitDeadline) {
      reject(stalePermit());
      return undefined;
    }
    const ex = new Exchange(settings, t.https, resolve, reject, signal);
    dispatcher.dispatch({ origin: t.origin, path: t.path, method: req.method, headers: req.headers, body: req.body }, ex);
    return ex;
  });

  return {
    send,
    dispatcher,
    close(): Promise<void> {
      closing ??= options.dispatcher ? Promise.resolve() : dispatcher.close();
      return closing;
    },
  };
}

