/**
 * What an attempt's failure becomes: a non-2xx answer (`statusError`: retryable or not,
 * `Retry-After`, a masked excerpt of the body) or a request error from undici (`classify`:
 * timeout, TLS, socket, DNS…), each a typed, secret-free `DeliveryError`.
 */
import { DeliveryError } from '../../errors.js';
import type { Redactor } from '../../observability/redact.js';
import { TRANSPORT_DEFAULTS } from './transport-defaults.js';

/** Statuses worth a retry besides 5xx. */
const RETRYABLE_STATUS = new Set([408, 425, 429]);
/** Statuses whose `Retry-After` we honour. */
const RETRY_AFTER_STATUS = new Set([429, 503]);

/** The answer's headers, as undici parses them. */
export type ResponseHeaders = Record<string, string | string[] | undefined>;

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

function headerValue(headers: ResponseHeaders, name: string): string | undefined {
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

export function statusError(
  statusCode: number,
  headers: ResponseHeaders,
  body: string,
  settings: { now: () => number; redactor: Redactor },
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
export function classify(err: unknown, timeoutMs: number, https: boolean): DeliveryError {
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
