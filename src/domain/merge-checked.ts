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
import type { ProfileSnapshot, ProfileUpdate } from './types.js';

/** Options of `mergeChecked`. */
export interface MergeCheckedOptions {
  /**
   * Largest snapshot, in UTF-8 bytes of its JSON text. An update whose result would be larger
   * is rejected (`ERR_SNAPSHOT_TOO_LARGE`). @default no limit (the stores default to
   * `DEFAULTS.maxSnapshotBytes` from the config schema)
   */
  maxSnapshotBytes?: number;
}

/** What `mergeChecked` produced. */
export interface MergeChecked {
  /** The snapshot after the update. */
  after: ProfileSnapshot;
  /** `JSON.stringify(after)` when a size limit was checked (stores may write it as is), else undefined. */
  json: string | undefined;
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
  if (limit === undefined || limit === Infinity) return { after, json: undefined };
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
  return { after, json };
}

/** `Name: message`, one line, at most 200 characters: no stack, no multi-line dumps. */
function describe(err: unknown): string {
  const text = (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).replace(/\s+/g, ' ');
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}
