/**
 * Deciding, per dataflow, whether an applied update must be exported (SPEC §3). Pure.
 */
import { isPlainObject, own } from './merge.js';
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

/**
 * Every leaf path written by an attributes patch, dotted (`person.name.firstName`).
 * `null` (a removal), scalars and arrays are leaves; objects are walked into.
 */
export function writtenPaths(patch: JsonObject | undefined, prefix = '', out: string[] = []): string[] {
  if (!patch) return out;
  for (const key of Object.keys(patch)) {
    const value = patch[key];
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (isPlainObject(value)) writtenPaths(value, path, out);
    else out.push(path);
  }
  return out;
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

function identityKeys(map: IdentityMap): Set<string> {
  const keys = new Set<string>();
  for (const ns of Object.keys(map)) for (const i of map[ns]) keys.add(`${ns}\u0000${i.id}`);
  return keys;
}

/** Whether the set of (namespace, id) pairs differs between the two snapshots. */
export function identityChanged(before: ProfileSnapshot | null, after: ProfileSnapshot): boolean {
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
  for (const id of Object.keys(after)) if (isIn(own(before, id)) && !isIn(after[id])) out.push(id);
  return out;
}

/** Audiences (any) the profile entered in this update: out before, in after. */
export function enteredAudiences(applied: AppliedUpdate): string[] {
  const before = memberships(applied.before);
  const after = applied.after.memberships;
  const out: string[] = [];
  for (const id of Object.keys(after)) if (!isIn(own(before, id)) && isIn(after[id])) out.push(id);
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
