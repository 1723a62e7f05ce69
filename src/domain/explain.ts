/**
 * What `explain` needs from the domain (SPEC §12): a small record of the last update applied
 * to a profile, kept in its snapshot, and, from it, per dataflow, the verdict of the one export
 * rule (`decideExports`) and why. Pure: no I/O.
 */
import { decideExports, enteredAudiences, exitedAudiences, identityChanged, isIn, touches, writtenPaths } from './diff.js';
import { isPlainObject } from './merge.js';
import type { AppliedUpdate, DataflowRules, ExportReason, JsonObject, ProfileSnapshot, ProfileUpdate } from './types.js';

/** Bounds of a {@link LastUpdate}, so a huge update cannot bloat every snapshot. */
export const LAST_UPDATE_LIMITS = {
  /** Written leaf paths kept. */
  written: 64,
  /** Entered / exited audiences kept, each. */
  audiences: 64,
} as const;

/** What the last update applied to a profile did, as far as the export rules care (SPEC §3). */
export interface LastUpdate {
  /** The update's `eventId`, when it had one. */
  eventId?: string;
  /** The update's `timestamp`, as received. */
  at?: string;
  /** Leaf paths the update wrote (dotted), the first `LAST_UPDATE_LIMITS.written`. */
  written: string[];
  /** Written leaf paths beyond those listed (0 when all are). */
  writtenMore: number;
  /** Whether the set of (namespace, id) identity pairs changed. */
  identityChanged: boolean;
  /** Audiences (any) the profile entered in the update. */
  entered: string[];
  /** Audiences (any) the profile exited in the update. */
  exited: string[];
}

/**
 * A {@link LastUpdate} as a snapshot stores it (`ProfileSnapshot.last`; read it with
 * {@link lastUpdateOf}). The written paths are one string, `writtenText`, the paths separated
 * by a newline: one string per update instead of one per written leaf (60,000 snapshots of a
 * 20-leaf update held ~1.2 M small strings in the memory store). Snapshots written before
 * (6 Dec 2026) hold the list, `written`; so does a record whose paths cannot be joined
 * unambiguously (a key holding a newline, or one empty path).
 */
export interface StoredLastUpdate extends Omit<LastUpdate, 'written'> {
  /** The written leaf paths, joined by `\n` (`''`: none). */
  writtenText?: string;
  /** The written leaf paths (records before `writtenText`, and the rare paths it cannot hold). */
  written?: string[];
}

/**
 * The {@link LastUpdate} of a snapshot, whichever form it was stored in; `undefined` when
 * the snapshot has none (written by an older version).
 *
 * @example lastUpdateOf(snapshot)?.written // ['person.name.firstName', 'bench.sentAt']
 */
export function lastUpdateOf(snapshot: Pick<ProfileSnapshot, 'last'>): LastUpdate | undefined {
  const last = snapshot.last;
  if (!last) return undefined;
  const { writtenText, written, eventId, at, ...rest } = last;
  const view: LastUpdate = { ...rest, written: writtenOf(last) };
  if (eventId !== undefined) view.eventId = eventId;
  if (at !== undefined) view.at = at;
  return view;
}

/** The written leaf paths of a stored record (either form). */
export function writtenOf(last: StoredLastUpdate): string[] {
  if (last.written !== undefined) return last.written;
  const text = last.writtenText;
  return text === undefined || text === '' ? [] : text.split('\n');
}

/**
 * The record of one application of `update`, as stored.
 *
 * @example summarizeUpdate(null, { profileId: 'p', attributes: { a: { b: 1 } } }, after) // { writtenText: 'a.b', … }
 */
export function summarizeUpdate(before: ProfileSnapshot | null, update: ProfileUpdate, after: ProfileSnapshot): StoredLastUpdate {
  const applied: AppliedUpdate = { update, before, after };
  const patch = update.attributes;
  const writtenText = patch === undefined ? '' : joinWrittenPaths(patch, LAST_UPDATE_LIMITS.written);
  // (joinWrittenPaths leaves its answers in `pathCount` and `joinable`: none without a patch.)
  const count = patch === undefined ? 0 : pathCount;
  const joined = patch === undefined || joinable;
  const writtenMore = Math.max(0, count - LAST_UPDATE_LIMITS.written);
  const changed = identityChanged(before, after);
  // The arrays are kept as they are when within the limits (no copy per update).
  const entered = atMost(enteredAudiences(applied), LAST_UPDATE_LIMITS.audiences);
  const exited = atMost(exitedAudiences(applied), LAST_UPDATE_LIMITS.audiences);
  const { eventId, timestamp } = update;
  // The usual record in one literal: a field added afterwards would give each stored record a
  // property array of its own. (No field is ever set to undefined: a snapshot equals its JSON
  // round trip, which the crash tests compare with isDeepStrictEqual.)
  if (joined && eventId !== undefined && timestamp !== undefined) {
    return { eventId, at: timestamp, writtenText, writtenMore, identityChanged: changed, entered, exited };
  }
  const last: StoredLastUpdate = { writtenMore, identityChanged: changed, entered, exited };
  if (joined) last.writtenText = writtenText;
  else last.written = atMost(writtenPaths(patch), LAST_UPDATE_LIMITS.written);
  if (eventId !== undefined) last.eventId = eventId;
  if (timestamp !== undefined) last.at = timestamp;
  return last;
}

function atMost(xs: string[], n: number): string[] {
  return xs.length <= n ? xs : xs.slice(0, n);
}

// `joinWrittenPaths` works in these, reused from one update to the next: the only string it
// makes is the joined one (no string per path, no array per update).
/** The pieces of the joined text (keys, dots, newlines), `used` of them this time. */
const pieces: string[] = [];
let used = 0;
/** The keys from the patch's root to the object being walked. */
const keysOnPath: string[] = [];
/** Leaves of the last patch joined (all of them, also beyond the limit). */
let pathCount = 0;
/** Whether the last patch's paths can be joined and split back unchanged. */
let joinable = true;

/**
 * `writtenPaths(patch)`, the first `limit` of them, joined by `\n`, without making a string per
 * path; sets `pathCount` (every leaf) and `joinable` (false when a key holds a newline, or the
 * only path is `''`: the text could not be split back into the same list).
 */
function joinWrittenPaths(patch: JsonObject, limit: number): string {
  used = 0;
  pathCount = 0;
  joinable = true;
  joinFrom(patch, 0, limit);
  if (pathCount === 1 && used === 0) joinable = false;
  if (pieces.length > used) pieces.length = used;
  return pieces.join('');
}

function joinFrom(patch: JsonObject, depth: number, limit: number): void {
  for (const key in patch) {
    if (!Object.hasOwn(patch, key)) continue;
    if (key.indexOf('\n') !== -1) joinable = false;
    keysOnPath[depth] = key;
    const value = patch[key];
    if (isPlainObject(value)) {
      joinFrom(value, depth + 1, limit);
      continue;
    }
    if (++pathCount > limit) continue;
    if (pathCount > 1) pieces[used++] = '\n';
    // As `writtenPaths` spells a path: keys joined by dots, none after an empty prefix.
    let empty = true;
    for (let i = 0; i <= depth; i++) {
      const k = keysOnPath[i];
      if (!empty) pieces[used++] = '.';
      if (k !== '') {
        pieces[used++] = k;
        empty = false;
      }
    }
  }
}

/** `after` with its `last` set from this application (the merge calls it on the snapshot it just built). */
export function withLastUpdate(before: ProfileSnapshot | null, update: ProfileUpdate, after: ProfileSnapshot): ProfileSnapshot {
  after.last = summarizeUpdate(before, update, after);
  return after;
}

/** A namespace no real identity map uses: stands for "the identities were other before". */
const OTHER_IDENTITIES = '\u0000explain:before';

/**
 * An `AppliedUpdate` equivalent, for the export rules, to the one that produced `snapshot`:
 * `after` is the snapshot; `before` differs from it exactly in the entered and exited
 * audiences and (when it changed) the identity set; the update writes exactly the recorded
 * leaf paths. `decideExports` on it gives the verdict it gave then (as far as the recorded
 * lists go: see `LastUpdate.writtenMore`). `undefined` when the snapshot has no `last`.
 */
export function reconstructApplied(snapshot: ProfileSnapshot): AppliedUpdate | undefined {
  const last = lastUpdateOf(snapshot);
  if (!last) return undefined;
  const memberships = { ...snapshot.memberships };
  for (const id of last.entered) delete memberships[id];
  for (const id of last.exited) memberships[id] = { status: 'realized' };
  const identityMap = last.identityChanged ? { ...snapshot.identityMap, [OTHER_IDENTITIES]: [{ id: 'x' }] } : snapshot.identityMap;
  const attributes: JsonObject = {};
  for (const path of last.written) {
    const keys = path.split('.');
    let cur = attributes;
    for (const k of keys.slice(0, -1)) {
      const next = cur[k];
      cur = (cur[k] = next !== null && typeof next === 'object' && !Array.isArray(next) ? next : {}) as JsonObject;
    }
    cur[keys[keys.length - 1]] = null;
  }
  const update: ProfileUpdate = { profileId: snapshot.profileId };
  if (last.written.length > 0) update.attributes = attributes;
  return {
    update,
    before: { profileId: snapshot.profileId, attributes: snapshot.attributes, identityMap, memberships },
    after: snapshot,
  };
}

/** Per dataflow: would the last update export, and why (not). */
export interface DataflowVerdict {
  dataflowId: string;
  /** `export`, `none`, or `unknown` (the snapshot has no record of its last update). */
  verdict: 'export' | 'none' | 'unknown';
  /** The rules that fired (SPEC §3), from `decideExports`. */
  reasons: ExportReason[];
  /** Mapped audiences entered / exited in the last update. */
  entered: string[];
  exited: string[];
  /** Mapped audiences the profile is in now. */
  inAudiences: string[];
  /** Written paths that touch a mapped attribute. */
  mappedWritten: string[];
  /** Sentences for people: why it exports, or why not. */
  why: string[];
}

/**
 * The verdict of the export rules (`decideExports`, the function the worker runs) for the
 * profile's last update and one dataflow, with the reasons in words.
 *
 * @example explainDataflow(snapshot, flow) // { verdict: 'none', why: ['not in any mapped audience (mapped: aud-1)'], … }
 */
export function explainDataflow(snapshot: ProfileSnapshot, flow: DataflowRules): DataflowVerdict {
  const mapped = flow.audiences.map((a) => a.id);
  const inAudiences = mapped.filter((id) => isIn(snapshot.memberships[id]));
  const applied = reconstructApplied(snapshot);
  const last = lastUpdateOf(snapshot);
  if (!applied || !last) {
    return {
      dataflowId: flow.id,
      verdict: 'unknown',
      reasons: [],
      entered: [],
      exited: [],
      inAudiences,
      mappedWritten: [],
      why: ['the snapshot holds no record of its last update (written by an older version): apply an update to see'],
    };
  }
  const decision = decideExports(applied, [flow])[0];
  const mappedWritten = last.written.filter((w) => flow.attributes.some((m) => touches(w, m)));
  const entered = decision?.entered ?? [];
  const exited = decision?.exited ?? [];
  const why: string[] = [];
  const list = (xs: readonly string[]): string => (xs.length > 0 ? xs.join(', ') : 'none');
  if (decision) {
    for (const r of decision.reasons) {
      if (r === 'membership') {
        if (entered.length > 0) why.push(`entered mapped audience ${entered.join(', ')}`);
        if (exited.length > 0) why.push(`exited mapped audience ${exited.join(', ')}`);
      } else if (r === 'identity') why.push(`the identity map changed (the profile is in ${list(inAudiences)})`);
      else if (r === 'attribute') why.push(`wrote mapped attribute ${mappedWritten.join(', ')} (the profile is in ${list(inAudiences)})`);
    }
  } else if (inAudiences.length === 0) {
    why.push(`not in any mapped audience (mapped: ${list(mapped)}), and left none in this update`);
  } else {
    why.push(`in mapped audience ${inAudiences.join(', ')}, but the update entered or exited no mapped audience`);
    why.push('the identity map did not change');
    if (flow.attributes.length === 0) why.push('no attribute is mapped');
    else if (last.written.length === 0) why.push('no attribute was written');
    else why.push(`no mapped attribute written (wrote: ${last.written.join(', ')}; mapped: ${flow.attributes.join(', ')})`);
    if (last.writtenMore > 0) why.push(`${last.writtenMore} more written paths were not recorded: one of them may have been mapped`);
  }
  return {
    dataflowId: flow.id,
    verdict: decision ? 'export' : 'none',
    reasons: decision?.reasons ?? [],
    entered,
    exited,
    inAudiences,
    mappedWritten,
    why,
  };
}
