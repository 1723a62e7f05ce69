/**
 * The connection screen's string forms (SPEC §5): headers as `"h1:v1,h2:v2"` and query
 * parameters as `"a=1&b=2"`. Both also accept a map.
 */
import { ConfigError } from '../errors.js';

/** RFC 9110 token characters: what a header name may contain. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const CRLF = /[\r\n]/;
/** Headers the HTTP client owns (framing, connection) or that we set ourselves. */
const RESERVED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'expect', 'te', 'trailer', 'content-type', 'idempotency-key']);

/**
 * Parses `"header1:value1,header2:value2"` (or a map) into a header map.
 * A name or value with CR/LF, an empty or non-token name, or an item without `:` is a
 * ConfigError naming `path`. The value keeps everything after the first `:` (trimmed), so
 * values may contain `:`; items are split on `,`, so a value cannot contain `,` in the
 * string form (use the map form for that).
 *
 * @example parseHeaders('x-api-key:abc, x-tenant:acme', 'destinations[0].headers')
 */
export function parseHeaders(
  input: string | Record<string, string> | undefined,
  path: string,
): Record<string, string> {
  const out: Record<string, string> = {};
  if (input === undefined) return out;
  const entries: Array<[string, string, string]> = [];
  if (typeof input === 'string') {
    const items = input.split(',').filter((s) => s.trim() !== '');
    items.forEach((item, i) => {
      const at = item.indexOf(':');
      if (at < 0) throw new ConfigError(`${path}[${i}]`, 'must be written name:value');
      entries.push([item.slice(0, at), item.slice(at + 1), `${path}[${i}]`]);
    });
  } else {
    for (const [k, v] of Object.entries(input)) entries.push([k, v, `${path}.${k}`]);
  }
  for (const [rawName, rawValue, where] of entries) {
    if (CRLF.test(rawName) || CRLF.test(rawValue)) {
      throw new ConfigError(where, 'header names and values must not contain CR or LF');
    }
    const name = rawName.trim();
    const value = rawValue.trim();
    if (!TOKEN.test(name)) throw new ConfigError(where, 'is not a valid header name');
    if (RESERVED.has(name.toLowerCase())) throw new ConfigError(where, `header ${name} is set by http-destination itself and cannot be configured`);
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) {
      throw new ConfigError(where, 'header value contains control characters');
    }
    out[name] = value;
  }
  return out;
}

/**
 * Parses `"parameter1=value&parameter2=value"` (or a map) into ordered pairs.
 * Values in the string form are taken as written (already URL-encoded or plain); they are
 * decoded once and encoded again when appended, so both forms give a correct URL.
 */
export function parseQueryParameters(
  input: string | Record<string, string> | undefined,
  path: string,
): Array<[string, string]> {
  if (input === undefined) return [];
  if (typeof input !== 'string') return Object.entries(input);
  const out: Array<[string, string]> = [];
  const items = input.replace(/^\?/, '').split('&').filter((s) => s !== '');
  items.forEach((item, i) => {
    const at = item.indexOf('=');
    const name = at < 0 ? item : item.slice(0, at);
    const value = at < 0 ? '' : item.slice(at + 1);
    if (name.trim() === '') throw new ConfigError(`${path}[${i}]`, 'parameter name must not be empty');
    try {
      out.push([decodeURIComponent(name.replace(/\+/g, ' ')), decodeURIComponent(value.replace(/\+/g, ' '))]);
    } catch {
      throw new ConfigError(`${path}[${i}]`, 'is not validly URL-encoded');
    }
  });
  return out;
}

/**
 * Appends query parameters to an endpoint URL. The endpoint's own query is kept byte for
 * byte (a pre-signed URL stays valid; `flag` stays `flag`); the new pairs are
 * percent-encoded and added after it, before any fragment.
 */
export function appendQuery(endpoint: string, params: Array<[string, string]>): string {
  if (params.length === 0) return endpoint;
  const hashAt = endpoint.indexOf('#');
  const base = hashAt < 0 ? endpoint : endpoint.slice(0, hashAt);
  const fragment = hashAt < 0 ? '' : endpoint.slice(hashAt);
  const added = params.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
  const sep = !base.includes('?') ? '?' : base.endsWith('?') || base.endsWith('&') ? '' : '&';
  return `${base}${sep}${added}${fragment}`;
}
