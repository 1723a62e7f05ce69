/**
 * The request builder: one export job + its destination → the HTTP request to send
 * (without auth headers; the sink adds those per attempt).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DestinationConfig } from '../../config/load.js';
import type { ExportJob } from '../types.js';
import { signWebhook } from './signing.js';

/** One HTTP request, ready for the transport. Header names are lower case. */
export interface HttpRequest {
  url: string;
  method: 'POST';
  headers: Record<string, string>;
  body: string;
}

/** The package's version, read once from the nearest `package.json` named `http-destination`. */
function readVersion(): string {
  try {
    let dir = dirname(fileURLToPath(import.meta.url));
    for (let i = 0; i < 6; i++) {
      try {
        const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
        if (pkg.name === 'http-destination' && typeof pkg.version === 'string') return pkg.version;
      } catch {
        // no package.json here: look one folder up
      }
      const up = dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  } catch {
    // import.meta.url is not a file URL (bundled): fall through
  }
  return '0.0.0';
}

/** `http-destination/<version>`, the User-Agent of every export. */
export const USER_AGENT = `http-destination/${readVersion()}`;

/** Builds the request of one export attempt for one destination (see `buildRequest`). */
export type RequestBuilder = (job: ExportJob, now?: number) => HttpRequest;

/**
 * `buildRequest` for one destination, with what does not change from one export to the next
 * (URL, `user-agent`, the lower-cased custom headers, `content-type`, signing secrets) worked
 * out once: the sink calls it on every attempt. Same requests as `buildRequest`, plus
 * `fixedAuth` (credentials that never change, lower-cased names) when given.
 *
 * @example
 * ```ts
 * const build = requestBuilder(dest);
 * const req = build(job, Date.now()); // { url, method: 'POST', headers, body }
 * ```
 */
export function requestBuilder(dest: DestinationConfig, fixedAuth?: Readonly<Record<string, string>>): RequestBuilder {
  const base: Record<string, string> = { 'user-agent': USER_AGENT };
  for (const [name, value] of Object.entries(dest.headers)) base[name.toLowerCase()] = value;
  base['content-type'] = 'application/json';
  // Credentials that never change (see AuthProvider.fixedHeaders) win over a custom header, as
  // the auth headers the sink adds per request do.
  if (fixedAuth) for (const [name, value] of Object.entries(fixedAuth)) base[name.toLowerCase()] = value;
  const { url } = dest;
  const secrets = dest.signing && dest.signing.secrets.length > 0 ? dest.signing.secrets : undefined;
  return (job: ExportJob, now: number = Date.now()): HttpRequest => {
    const body = JSON.stringify(job.payload);
    const headers: Record<string, string> = { ...base };
    headers['idempotency-key'] = job.idempotencyKey;
    if (secrets) {
      const timestamp = Math.floor(now / 1000);
      headers['webhook-id'] = job.idempotencyKey;
      headers['webhook-timestamp'] = String(timestamp);
      headers['webhook-signature'] = signWebhook({ secrets, id: job.idempotencyKey, timestamp, body });
    }
    return { url, method: 'POST', headers, body };
  };
}

/**
 * Builds the request of one export attempt: body = `JSON.stringify(job.payload)`; headers =
 * the destination's custom headers (lower-cased names; a custom `user-agent` wins), then
 * `content-type: application/json`, `idempotency-key`, and, when `dest.signing` is set, the
 * Standard Webhooks headers `webhook-id` (= the idempotency key), `webhook-timestamp` (Unix
 * seconds of `now`) and `webhook-signature`. Auth headers are not added here. For many
 * requests to one destination, `requestBuilder(dest)` does the constant part once.
 *
 * @example
 * ```ts
 * const req = buildRequest(dest, job); // { url, method: 'POST', headers, body }
 * ```
 *
 * @param now ms since epoch, for the signature timestamp. @default Date.now()
 */
export function buildRequest(dest: DestinationConfig, job: ExportJob, now: number = Date.now()): HttpRequest {
  return requestBuilder(dest)(job, now);
}
