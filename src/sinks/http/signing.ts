/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com/): the sender signs
 * `${id}.${timestamp}.${body}` with HMAC-SHA256 under each secret (`whsec_` + base64 key)
 * and sends `webhook-signature: v1,<base64> v1,<base64>…`. `verifyWebhook` is the
 * receiver's side, for tests and for customers' endpoints.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The defaults of `verifyWebhook`, named in one place. */
export const SIGNING_DEFAULTS = {
  /** Largest accepted distance between the signature's timestamp and now, in seconds. */
  toleranceSeconds: 300,
} as const;

const PREFIX = 'whsec_';

/** The HMAC key of a secret: the base64-decoded part after `whsec_` (the prefix is optional). */
function keyOf(secret: string): Buffer {
  const b64 = secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret;
  return Buffer.from(b64, 'base64');
}

function sign1(secret: string, content: string): string {
  return createHmac('sha256', keyOf(secret)).update(content, 'utf8').digest('base64');
}

/**
 * Signs one message: one `v1,<base64 HMAC-SHA256>` per secret, space-separated (several
 * secrets let a receiver rotate keys without a gap).
 *
 * @example
 * ```ts
 * signWebhook({ secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'], id: 'msg_1', timestamp: 1_700_000_000, body: '{}' })
 * // → 'v1,…='
 * ```
 */
export function signWebhook(options: {
  secrets: readonly string[];
  /** The `webhook-id` value. */
  id: string;
  /** The `webhook-timestamp` value, in Unix seconds. */
  timestamp: number;
  /** The exact body bytes sent, as text. */
  body: string;
}): string {
  const content = `${options.id}.${options.timestamp}.${options.body}`;
  return options.secrets.map((s) => `v1,${sign1(s, content)}`).join(' ');
}

/**
 * Verifies a Standard Webhooks signature header: `true` when one `v1` signature matches
 * under one of `secrets` and the timestamp is within `toleranceSeconds` of `now`.
 *
 * @example
 * ```ts
 * verifyWebhook({ secrets, id: h['webhook-id'], timestamp: h['webhook-timestamp'], body, signature: h['webhook-signature'] })
 * ```
 *
 * @param options.toleranceSeconds @default 300
 * @param options.now ms since epoch. @default Date.now()
 */
export function verifyWebhook(options: {
  secrets: readonly string[];
  id: string;
  timestamp: number | string;
  body: string;
  /** The `webhook-signature` header value. */
  signature: string;
  toleranceSeconds?: number;
  now?: number;
}): boolean {
  const ts = typeof options.timestamp === 'number' ? options.timestamp : Number(options.timestamp);
  if (!Number.isInteger(ts)) return false;
  const tolerance = options.toleranceSeconds ?? SIGNING_DEFAULTS.toleranceSeconds;
  const nowSec = Math.floor((options.now ?? Date.now()) / 1000);
  if (Math.abs(nowSec - ts) > tolerance) return false;
  const content = `${options.id}.${ts}.${options.body}`;
  const given = options.signature
    .split(' ')
    .filter((part) => part.startsWith('v1,'))
    .map((part) => Buffer.from(part.slice(3), 'base64'));
  for (const secret of options.secrets) {
    const expected = createHmac('sha256', keyOf(secret)).update(content, 'utf8').digest();
    for (const sig of given) {
      if (sig.length === expected.length && timingSafeEqual(sig, expected)) return true;
    }
  }
  return false;
}
