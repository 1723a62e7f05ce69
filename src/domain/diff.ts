/**
 * Deciding, per dataflow, whether an applied update must be exported (SPEC §3). Pure.
 */
import { isEmptyObject, isPlainObject, own } from './merge.js';
import type {
  AppliedUpdate,
  DataflowRules,
  ExportDecision,
  ExportReason,
  IdentityMap,
  JsonObject,
  MembershipRecord,
  ProfileSnapshot,
} from './types.js';

/** `realized` and `existing` mean *in*; `exited` or no record means *out*. */
export function isIn(record: MembershipRecord | undefined): boolean {
  return record !== undefined && (record.status === 'realized' || record.status === 'existing');
}

/** No memberships (a profile seen for the first time): one frozen object, not one per call. */
const NO_MEMBERSHIPS: Readonly<Record<string, MembershipRecord>> = Object.freeze({});

function memberships(s: ProfileSnapshot | null): Readonly<Record<string, MembershipRecord>> {
  return s ? s.memberships : NO_MEMBERSHIPS;
}

/**
 * `list` with `item` added, `[item]` when there is no list yet. Lists here hold a few ids: an
 * array literal is sized to its content, while the first `push` onto `[]` reserves 17 slots
 * (and a `last` record keeps its lists for the life of the snapshot).
 */
function added<T>(list: T[] | undefined, item: T): T[] {
  if (list === undefined) return [item];
  list.push(item);
  return list;
}

/**
 * The profile's membership record of audience `id`, or undefined. Audience ids are data: an
 * id such as `constructor` or `hasOwnProperty` finds only a record stored under it.
 */
export function membershipOf(s: ProfileSnapshot | null | undefined, id: string): MembershipRecord | undefined {
  return s ? own(s.memberships, id) : undefined;
}

/**
 * Every leaf path written by an attributes patch, dotted (`person.name.firstName`).
 * `null` (a removal), scalars and arrays are leaves; objects are walked into. For `explain`
 * and tests: the export decision asks `patchTouches` instead (no string per leaf).
 */
export function writtenPaths(patch: JsonObject | undefined): string[] {
  if (!patch) return [];
  const out: string[] = [];
  collectPaths(patch, '', out);
  return out;
}

function collectPaths(patch: JsonObject, prefix: string, out: string[]): void {
  // for…in over a JSON object: its own keys (no array of keys allocated, unlike Object.keys).
  for (const key in patch) {
    if (!Object.hasOwn(patch, key)) continue;
    const value = patch[key];
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (isPlainObject(value)) collectPaths(value, path, out);
    else out.push(path);
  }
}

/**
 * Whether some leaf path written by `patch` (as `writtenPaths` lists them) `touches` the
 * mapped path `mapped` — the same answer as `writtenPaths(patch).some((w) => touches(w, mapped))`,
 * keys holding dots included, but by walking the patch along `mapped` with offsets into it:
 * no path string is built. A differential test in test/domain/diff.test.ts pins the two.
 */
export function patchTouches(patch: JsonObject | undefined, mapped: string): boolean {
  return patch !== undefined && touchesFrom(patch, mapped, 0);
}

/** `patchTouches` below a prefix of `mapped` of length `at` (0: the root, whose paths have no leading dot). */
function touchesFrom(patch: JsonObject, mapped: string, at: number): boolean {
  // The paths here are `key` (at 0) or `prefix.key`: the key is compared from `start`.
  const start = at === 0 ? 0 : at + 1;
  const rest = mapped.length - start;
  for (const key in patch) {
    if (!Object.hasOwn(patch, key)) continue;
    const value = patch[key];
    const leaf = !isPlainObject(value);
    const n = key.length;
    if (n <= rest) {
      if (!mapped.startsWith(key, start)) continue;
      const end = start + n;
      // The path is the mapped one: a leaf touches it, an object does when anything under it is written.
      if (end === mapped.length) {
        // (Under an empty path, as at the root, the children's paths have no leading dot.)
        if (leaf || (end === 0 ? touchesFrom(value, mapped, 0) : hasLeaf(value))) return true;
        continue;
      }
      // The path is a prefix of the mapped one: a leaf above it touches it (written over it);
      // an object is walked into when its children's paths can still lead to it.
      if (mapped.charCodeAt(end) === 46 /* . */) {
        if (leaf || touchesFrom(value, mapped, end)) return true;
      } else if (end === 0 && !leaf && touchesFrom(value, mapped, 0)) {
        // An empty key at the root: its children's paths have no leading dot either.
        return true;
      }
    } else if (key.charCodeAt(rest) === 46 && sameChars(key, mapped, start, rest)) {
      // A key holding dots that goes past the mapped path: this path lies under it.
      if (leaf || hasLeaf(value)) return true;
    }
  }
  return false;
}

/** Whether the first `n` characters of `key` are those of `mapped` from `start`. */
function sameChars(key: string, mapped: string, start: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (key.charCodeAt(i) !== mapped.charCodeAt(start + i)) return false;
  return true;
}

/** Whether `writtenPaths` would list at least one path under this object (`{}` holds none). */
function hasLeaf(value: JsonObject): boolean {
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const v = value[key];
    if (!isPlainObject(v) || hasLeaf(v)) return true;
  }
  return false;
}

/**
 * Whether a written leaf touches a mapped path: the leaf is the mapped path, lies under it
 * (the mapped path names an object), or lies above it (a removal or a scalar written over the
 * object that held the mapped attribute, which changes it too). A sibling does not.
 */
export function touches(written: string, mapped: string): boolean {
  if (written === mapped) return true;
  if (written.startsWith(mapped) && written.charCodeAt(mapped.length) === 46 /* . */) return true;
  return mapped.startsWith(written) && mapped.charCodeAt(written.length) === 46;
}

/** Whether the map holds at least one identity (an empty namespace list holds none). */
function hasIdentity(map: IdentityMap): boolean {
  for (const ns in map) if (Object.hasOwn(map, ns) && map[ns].length > 0) return true;
  return false;
}

function identityKeys(map: IdentityMap): Set<string> {
  const keys = new Set<string>();
  for (const ns of Object.keys(map)) for (const i of map[ns]) keys.add(`${ns}\u0000${i.id}`);
  return keys;
}

/** Whether the set of (namespace, id) pairs differs between the two snapshots. */
export function identityChanged(before: ProfileSnapshot | null, after: ProfileSnapshot): boolean {
  // The merge keeps the identity map object when the update touched no identity.
  if (before !== null && before.identityMap === after.identityMap) return false;
  if (before === null || isEmptyObject(before.identityMap)) return hasIdentity(after.identityMap);
  const a = identityKeys(before ? before.identityMap : {});
  const b = identityKeys(after.identityMap);
  if (a.size !== b.size) return true;
  for (const k of a) if (!b.has(k)) return true;
  return false;
}

/** Audiences (any, mapped or not) the profile exited in this update: in before, out after. */
export function exitedAudiences(applied: AppliedUpdate): string[] {
  const before = memberships(applied.before);
  const after = applied.after.memberships;
  let out: string[] | undefined;
  for (const id in after) if (Object.hasOwn(after, id) && isIn(own(before, id)) && !isIn(after[id])) out = added(out, id);
  return out ?? [];
}

/** Audiences (any) the profile entered in this update: out before, in after. */
export function enteredAudiences(applied: AppliedUpdate): string[] {
  const before = memberships(applied.before);
  const after = applied.after.memberships;
  let out: string[] | undefined;
  for (const id in after) if (Object.hasOwn(after, id) && !isIn(own(before, id)) && isIn(after[id])) out = added(out, id);
  return out ?? [];
}

/**
 * The per-dataflow export decisions for one applied update: one entry per dataflow that
 * must export, none for the others.
 *
 * @example
 * decideExports(applied, [flow]) // → [{ dataflowId: 'flow-1', reasons: ['membership'], entered: ['aud-1'], exited: [] }]
 */
export function decideExports(applied: AppliedUpdate, dataflows: readonly DataflowRules[]): ExportDecision[] {
  const before = memberships(applied.before);
  const after = applied.after.memberships;
  const patch = applied.update.attributes;
  let idChanged: boolean | undefined;
  let decisions: ExportDecision[] | undefined;
  for (const flow of dataflows) {
    let entered: string[] | undefined;
    let exited: string[] | undefined;
    let inAny = false;
    for (const m of flow.audiences) {
      const was = isIn(own(before, m.id));
      const is = isIn(own(after, m.id));
      if (is) inAny = true;
      if (!was && is) entered = added(entered, m.id);
      else if (was && !is) exited = added(exited, m.id);
    }
    const membership = entered !== undefined || exited !== undefined;
    let identity = false;
    let attribute = false;
    if (inAny) {
      idChanged ??= identityChanged(applied.before, applied.after);
      identity = idChanged;
      if (patch !== undefined) for (const m of flow.attributes) if ((attribute = patchTouches(patch, m))) break;
    }
    if (!membership && !identity && !attribute) continue;
    decisions = added(decisions, { dataflowId: flow.id, reasons: reasonsOf(membership, identity, attribute), entered: entered ?? [], exited: exited ?? [] });
  }
  return decisions ?? [];
}

/** The reasons, in the order SPEC §3 lists them, as one array literal (sized to its content). */
function reasonsOf(membership: boolean, identity: boolean, attribute: boolean): ExportReason[] {
  if (membership) {
    if (identity) return attribute ? ['membership', 'identity', 'attribute'] : ['membership', 'identity'];
    return attribute ? ['membership', 'attribute'] : ['membership'];
  }
  if (identity) return attribute ? ['identity', 'attribute'] : ['identity'];
  return attribute ? ['attribute'] : [];
}

/** Audiences the profile entered / exited between two snapshots (what a membership index changes). */
export function membershipChanges(before: ProfileSnapshot | null, after: ProfileSnapshot): { entered: string[]; exited: string[] } {
  const entered: string[] = [];
  const exited: string[] = [];
  if (before?.memberships === after.memberships) return { entered, exited };
  for (const id of Object.keys(after.memberships)) {
    const was = isIn(membershipOf(before, id));
    const is = isIn(membershipOf(after, id));
    if (was !== is) (is ? entered : exited).push(id);
  }
  return { entered, exited };
}
