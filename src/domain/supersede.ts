/**
 * Superseding a queued export by a newer one of the same (dataflow, profile) — pure, no I/O.
 */
import type { ExportPayload, JsonObject } from './types.js';

function upsOf(payload: ExportPayload): JsonObject | undefined {
  const sm = payload.segmentMembership;
  if (sm === null || typeof sm !== 'object' || Array.isArray(sm)) return undefined;
  const ups = (sm as JsonObject).ups;
  return ups !== null && typeof ups === 'object' && !Array.isArray(ups) ? (ups as JsonObject) : undefined;
}

function isExit(record: unknown): boolean {
  return record !== null && typeof record === 'object' && (record as { status?: unknown }).status === 'exited';
}

/**
 * The payload that replaces `older` in a retry queue: `newer`, plus every audience exit that
 * `older` carried and `newer` does not name. An exit is only ever carried by the update that
 * exited (SPEC §4), so dropping the older export would lose it; the newer export inherits it
 * instead. An audience that `newer` names (entered again, or exited again) keeps `newer`'s
 * record. Neither argument is changed.
 *
 * @example
 * supersede({ segmentMembership: { ups: { a: { status: 'exited' } } } }, { segmentMembership: { ups: { b: { status: 'realized' } } } })
 * // → { segmentMembership: { ups: { b: { status: 'realized' }, a: { status: 'exited' } } } }
 */
export function supersede(older: ExportPayload, newer: ExportPayload): ExportPayload {
  const before = upsOf(older);
  if (before === undefined) return newer;
  const after = upsOf(newer);
  // (entries, not assignment: an audience id such as `__proto__` stays a plain own key)
  const carried = Object.entries(before).filter(([id, record]) => isExit(record) && !(after !== undefined && Object.prototype.hasOwnProperty.call(after, id)));
  if (carried.length === 0) return newer;
  const sm = newer.segmentMembership;
  const base = sm !== null && typeof sm === 'object' && !Array.isArray(sm) ? (sm as JsonObject) : {};
  return { ...newer, segmentMembership: { ...base, ups: { ...(after ?? {}), ...(Object.fromEntries(carried) as JsonObject) } } };
}
