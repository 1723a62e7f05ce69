/**
 * The merge the snapshot stores call: `applyUpdate` behind a guard and a size limit. Pure.
 *
 * A pure step's failure is deterministic: retrying the same update on the same snapshot fails
 * the same way, for ever. So whatever `applyUpdate` throws becomes an `EventRejectedError`
 * (the event is rejected with a reason, the stream goes on), never a store failure to retry.
 * And a profile's snapshot has a size limit: the update that would pass it is rejected, and
 * the store writes nothing.
 */
import { EventRejectedError } from '../errors.js';
import { applyUpdate } from './merge.js';
import type { StoredLastUpdate } from './explain.js';
import type { ProfileSnapshot, ProfileUpdate } from './types.js';

/** Options of `mergeChecked`. */
export interface MergeCheckedOptions {
  /**
   * Largest snapshot, in UTF-8 bytes of its JSON text. An update whose result would be larger
   * is rejected (`ERR_SNAPSHOT_TOO_LARGE`). @default no limit (the stores default to
   * `DEFAULTS.maxSnapshotBytes` from the config schema)
   */
  maxSnapshotBytes?: number;
  /**
   * Skip the exact count when a bound proves the result fits (the memory store: it writes no
   * JSON). Needs both: `beforeBytes`, an upper bound of `before`'s JSON size without its `last`
   * record (the `coreBytes` this function returned for it; ignored when `before` is null), and
   * `updateBytes`, an upper bound of the update's JSON size (`updateBytesBound` of the text it
   * was decoded from). When `beforeBytes + updateBytes + the bound of the new last record` is
   * within the limit, no `JSON.stringify` is done (`json` undefined); otherwise the result is
   * measured exactly, as without them. @default undefined (always measured)
   */
  beforeBytes?: number;
  updateBytes?: number;
}

/** What `mergeChecked` produced. */
export interface MergeChecked {
  /** The snapshot after the update. */
  after: ProfileSnapshot;
  /**
   * `JSON.stringify(after)` when the size was measured (stores may write it as is), else
   * undefined (no limit, or a bound proved the result fits).
   */
  json: string | undefined;
  /**
   * An upper bound of the JSON size (UTF-8 bytes) of `after` without its `last` record, to
   * pass back as `beforeBytes` with the next update of the profile: the exact size of the
   * whole snapshot when it was measured. Undefined when no limit was checked.
   */
  coreBytes: number | undefined;
}

/**
 * Upper bound of the UTF-8 size of `JSON.stringify(JSON.parse(text))` for any JSON `text` of
 * `length` units (a string's UTF-16 length or a byte array's byteLength): 4 × `length`.
 * Strings come out no longer than they went in (an escape such as `\u00e9` only shrinks; a raw
 * UTF-16 unit is at most 3 UTF-8 bytes), and a number at most 4 × its text (`9e15` →
 * `9000000000000000`; numbers are limited to ±2^53). Whitespace and duplicate keys only shrink.
 */
export function updateBytesBound(length: number): number {
  return 4 * length;
}

/**
 * Bytes the merge of an update can add besides the update's own JSON: the empty snapshot's
 * skeleton (`{"profileId":…,"attributes":{},"identityMap":{},"memberships":{}}` without the
 * id, which the update holds) and `,"last":` with its braces.
 */
const MERGE_SLACK_BYTES = 96;

/**
 * Upper bound of the UTF-8 JSON size of a `last` record: every string at most 6 bytes per
 * UTF-16 unit (a control character becomes `\u00XX`) plus quotes and comma, and the fixed
 * keys, booleans and numbers.
 */
function lastBytesBound(last: StoredLastUpdate | undefined): number {
  if (!last) return 0;
  let n = 160;
  const strings = (xs: readonly string[]): void => {
    for (let i = 0; i < xs.length; i++) n += 6 * xs[i].length + 3;
  };
  if (last.written !== undefined) strings(last.written);
  if (last.writtenText !== undefined) n += 6 * last.writtenText.length + 16;
  strings(last.entered);
  strings(last.exited);
  if (last.eventId !== undefined) n += 6 * last.eventId.length + 16;
  if (last.at !== undefined) n += 6 * last.at.length + 16;
  return n;
}

/**
 * Applies `update` to `before` (null: a new profile) and checks the size of the result.
 *
 * @example
 * const { after, json } = mergeChecked(before, update, { maxSnapshotBytes: 1_048_576 });
 * @throws {EventRejectedError} `ERR_SNAPSHOT_TOO_LARGE` with the size and the limit;
 *   `ERR_EVENT_MERGE` when the merge itself threw (a reason, never a stack).
 */
export function mergeChecked(before: ProfileSnapshot | null, update: ProfileUpdate, options: MergeCheckedOptions = {}): MergeChecked {
  let after: ProfileSnapshot;
  try {
    after = applyUpdate(before, update);
  } catch (err) {
    throw new EventRejectedError('ERR_EVENT_MERGE', `event: could not be merged into the profile's snapshot (${describe(err)})`);
  }
  const limit = options.maxSnapshotBytes;
  if (limit === undefined || limit === Infinity) return { after, json: undefined, coreBytes: undefined };
  const { updateBytes } = options;
  const beforeBytes = before === null ? 0 : options.beforeBytes;
  if (updateBytes !== undefined && beforeBytes !== undefined) {
    // Merging only adds what the update holds (attributes merged key by key, identities and
    // membership records copied from it, removals shrink): the result without `last` is at
    // most the one before plus the update, plus the skeleton of a new profile.
    const core = beforeBytes + updateBytes + MERGE_SLACK_BYTES;
    if (core + lastBytesBound(after.last) <= limit) return { after, json: undefined, coreBytes: core };
  }
  let json: string;
  try {
    json = JSON.stringify(after);
  } catch (err) {
    throw new EventRejectedError('ERR_EVENT_MERGE', `event: the merged snapshot cannot be written as JSON (${describe(err)})`);
  }
  // A UTF-16 unit is at most 3 UTF-8 bytes: most snapshots need no exact count.
  const bytes = json.length * 3 <= limit ? json.length : Buffer.byteLength(json, 'utf8');
  if (bytes > limit) {
    throw new EventRejectedError(
      'ERR_SNAPSHOT_TOO_LARGE',
      `event: the profile's snapshot would be ${bytes} bytes, over the limit of ${limit} bytes (worker.maxSnapshotBytes)`,
    );
  }
  return { after, json, coreBytes: bytes };
}

/** `Name: message`, one line, at most 200 characters: no stack, no multi-line dumps. */
function describe(err: unknown): string {
  const text = (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).replace(/\s+/g, ' ');
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}
