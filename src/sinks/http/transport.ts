/**
 * The transport: one undici `Agent` per destination (keep-alive, `connections` sockets per
 * origin, no pipelining, the destination's TLS / mTLS settings) and `send`, which makes one
 * request, always drains the response body so sockets are reused, and turns every failure
 * into a typed, secret-free `DeliveryError`.
 */
import { Agent, type Dispatcher } from 'undici';
import type { DestinationConfig } from '../../config/load.js';
import { DeliveryError } from '../../errors.js';
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

export interface HttpTransport {
  /**
   * Sends one request. Resolves on 2xx; rejects with a `DeliveryError` otherwise:
   * `ERR_HTTP_STATUS` (with `statusCode`; retryable for 408, 425, 429, 5xx; `retryAfterMs` on
   * 429/503), `ERR_HTTP_TIMEOUT` (retryable) or `ERR_HTTP_CONNECTION` (retryable). Aborting
   * `signal` cancels the request.
   */
  send(req: HttpRequest, options?: { signal?: AbortSignal }): Promise<TransportResponse>;
  /** The undici dispatcher, to share the connection pool (e.g. with a same-origin token endpoint). */
  readonly dispatcher: Dispatcher;
  /** Closes the sockets once the requests in flight are done. Idempotent. */
  close(): Promise<void>;
}

export interface TransportOptions {
  destination: Pick<DestinationConfig, 'connections' | 'timeoutMs' | 'tls'>;
  /** Clock for `Retry-After` HTTP-dates, ms since epoch. @default Date.now */
  now?: () => number;
  /** Replace the Agent (tests, interceptors). @default a new undici Agent built from `destination` */
  dispatcher?: Dispatcher;
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
 *   origin, pipelining 1, headers/body timeouts of `timeoutMs`, TLS from `destination.tls`
 */
export function createTransport(options: TransportOptions): HttpTransport {
  const { destination } = options;
  const now = options.now ?? Date.now;
  const timeoutMs = destination.timeoutMs;
  const tls = destination.tls;
  const dispatcher =
    options.dispatcher ??
    new Agent({
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
    });

  let lastUrl = '';
  let lastTarget: { origin: string; path: string } = { origin: '', path: '' };
  const target = (url: string): { origin: string; path: string } => {
    if (url !== lastUrl) {
      const u = new URL(url);
      lastTarget = { origin: u.origin, path: `${u.pathname}${u.search}` };
      lastUrl = url;
    }
    return lastTarget;
  };

  let closing: Promise<void> | undefined;

  async function send(req: HttpRequest, opts?: { signal?: AbortSignal }): Promise<TransportResponse> {
    const outer = opts?.signal;
    if (outer?.aborted) throw aborted();
    const { origin, path } = target(req.url);
    const ac = new AbortController();
    let timedOut = false;
    // The overall deadline (queueing + connect + headers + body). Not an operator: a plain timer is fine here.
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, timeoutMs);
    timer.unref();
    const onOuterAbort = (): void => ac.abort();
    outer?.addEventListener('abort', onOuterAbort, { once: true });
    try {
      const res = await dispatcher.request({
        origin,
        path,
        method: req.method,
        headers: req.headers,
        body: req.body,
        signal: ac.signal,
      });
      const ok = res.statusCode >= 200 && res.statusCode < 300;
      const excerpt = await drain(res.body, ok ? 0 : TRANSPORT_DEFAULTS.errorExcerptBytes);
      if (ok) return { statusCode: res.statusCode, headers: res.headers };
      throw statusError(res.statusCode, res.headers, excerpt, now());
    } catch (err) {
      if (err instanceof DeliveryError) throw err;
      if (timedOut) {
        throw new DeliveryError('ERR_HTTP_TIMEOUT', `no complete answer within ${timeoutMs} ms`, {
          retryable: true,
          cause: err,
        });
      }
      if (outer?.aborted) throw aborted(err);
      throw classify(err, timeoutMs, origin.startsWith('https:'));
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuterAbort);
    }
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

function aborted(cause?: unknown): DeliveryError {
  return new DeliveryError('ERR_HTTP_CONNECTION', 'request cancelled', { retryable: true, cause });
}

/**
 * Reads a body to its end, keeping at most `keep` bytes. A body longer than
 * `maxDrainBytes` is destroyed instead (its socket is closed rather than reused).
 */
async function drain(body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown }, keep: number): Promise<string> {
  const kept: Buffer[] = [];
  let keptBytes = 0;
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (keptBytes < keep) {
      const part = chunk.subarray(0, keep - keptBytes);
      kept.push(part);
      keptBytes += part.length;
    }
    if (total > TRANSPORT_DEFAULTS.maxDrainBytes) {
      body.destroy();
      break;
    }
  }
  return keptBytes === 0 ? '' : Buffer.concat(kept).toString('utf8');
}

/** A short, single-line, printable excerpt of a response body. */
function cleanExcerpt(text: string): string {
  const flat = text
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .replace(/\s+/g, ' ')
    .replace(/\uFFFD+$/, '')
    .trim();
  const max = TRANSPORT_DEFAULTS.errorExcerptChars;
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
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
  now: number,
): DeliveryError {
  const retryable = statusCode >= 500 || RETRYABLE_STATUS.has(statusCode);
  const retryAfterMs = RETRY_AFTER_STATUS.has(statusCode)
    ? parseRetryAfter(headerValue(headers, 'retry-after'), now)
    : undefined;
  const excerpt = cleanExcerpt(body);
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
