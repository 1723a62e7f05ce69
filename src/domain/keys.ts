/**
 * Stable identities of exports. Pure (hashing only).
 */
import { createHash } from 'node:crypto';
import type { ProfileUpdate } from './types.js';

/**
 * The identity of the event behind an export: its `eventId` when upstream gave one (so the
 * same event published twice dedupes at the endpoint), else the source message key (stable
 * across redeliveries).
 */
export function eventIdentity(update: ProfileUpdate, sourceKey: string): string {
  return update.eventId !== undefined ? `event:${update.eventId}` : sourceKey;
}

/**
 * The `Idempotency-Key` of one export: a UUID-shaped SHA-256 digest of dataflow, profile and
 * event identity. The same export gets the same key on every retry, redelivery and replay.
 *
 * @example idempotencyKey({ dataflowId: 'flow-1', profileId: 'p-1', event: 'js:PROFILES:42' })
 */
export function idempotencyKey(parts: { dataflowId: string; profileId: string; event: string }): string {
  const h = createHash('sha256')
    .update(parts.dataflowId)
    .update('\u0000')
    .update(parts.profileId)
    .update('\u0000')
    .update(parts.event)
    .digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Upstream event time in ms, when the event carries a valid `timestamp`. */
export function eventTime(update: ProfileUpdate): number | undefined {
  if (update.timestamp === undefined) return undefined;
  const t = Date.parse(update.timestamp);
  return Number.isNaN(t) ? undefined : t;
}
