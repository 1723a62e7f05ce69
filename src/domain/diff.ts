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

function memberships(s: ProfileSnapshot | null): Record<string, MembershipRecord> {
  return s ? s.memberships : {};
}

/**
 * The profile's membership record of audience `id`, or undefined. Audience ids are data: an
 * id such as `constructor` or `hasOwnProperty` finds only a record stored under it.
 */
export function membershipOf(s: ProfileSnapshot | null | undefined, id: string): MembershipRecord | undefined {
  return s ? own(s.memberships, id) : undefined;
}

/** The patch `writtenPaths` walked last and its answer (see there). */
let lastPatch: JsonObject | undefined;
let lastPaths: string[] = [];

/**
 * Every leaf path written by an attributes patch, dotted (`person.name.firstName`).
 * `null` (a removal), scalars and arrays are leaves; objects are walked into.
 *
 * The merge (the `last` record of the snapshot) and the export decision ask it about the same
 * patch one after the other: the answer for the last patch is kept and given again for the
 * same object. So the array is shared — callers never modify it — and a patch is never
 * modified after it was decoded (an update is immutable down the chain).
 */
export function writtenPaths(patch: JsonObject | undefined): string[] {
  if (!patch) return [];
  if (patch === lastPatch) return lastPaths;
  const out: string[] = [];
  collectPaths(patch, '', out);
  lastPatch = patch;
  lastPaths = out;
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
  const out: string[] = [];
  for (const id in after) if (Object.hasOwn(after, id) && isIn(own(before, id)) && !isIn(after[id])) out.push(id);
  return out;
}

/** Audiences (any) the profile entered in this update: out before, in after. */
export function enteredAudiences(applied: AppliedUpdate): string[] {
  const before = memberships(applied.before);
  const after = applied.after.memberships;
  const out: string[] = [];
  for (const id in after) if (Object.hasOwn(after, id) && !isIn(own(before, id)) && isIn(after[id])) out.push(id);
  return out;
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
  let idChanged: boolean | undefined;
  let written: string[] | undefined;
  const decisions: ExportDecision[] = [];
  for (const flow of dataflows) {
    const entered: string[] = [];
    const exited: string[] = [];
    let inAny = false;
    for (const m of flow.audiences) {
      const was = isIn(own(before, m.id));
      const is = isIn(own(after, m.id));
      if (is) inAny = true;
      if (!was && is) entered.push(m.id);
      else if (was && !is) exited.push(m.id);
    }
    const reasons: ExportReason[] = [];
    if (entered.length > 0 || exited.length > 0) reasons.push('membership');
    if (inAny) {
      idChanged ??= identityChanged(applied.before, applied.after);
      if (idChanged) reasons.push('identity');
      if (flow.attributes.length > 0) {
        written ??= writtenPaths(applied.update.attributes);
        if (written.some((w) => flow.attributes.some((m) => touches(w, m)))) reasons.push('attribute');
      }
    }
    if (reasons.length > 0) decisions.push({ dataflowId: flow.id, reasons, entered, exited });
  }
  return decisions;
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
