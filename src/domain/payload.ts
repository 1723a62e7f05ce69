/**
 * Building the JSON body of one export (SPEC §4). Pure: the snapshot is never changed. A
 * payload shares unchanged subtrees with the snapshot, so treat it as read-only.
 */
import { isIn, exitedAudiences } from './diff.js';
import { isPlainObject, own, setOwn } from './merge.js';
import type {
  AppliedUpdate,
  Audience,
  AudienceMapping,
  DataflowRules,
  ExportPayload,
  JsonObject,
  JsonValue,
} from './types.js';

/** What a dataflow's payloads need, computed once per dataflow at start. */
export interface PayloadRules {
  dataflowId: string;
  /** Mapped attribute paths, split on `.`. */
  paths: string[][];
  /** Audience catalog (id → audience) restricted to the merge policies of the mapped audiences. */
  visible: Map<string, Audience>;
  /** Mapped audiences by id (for the mapping timestamps). */
  mapped: Map<string, AudienceMapping>;
  includeSegmentNames: boolean;
  includeSegmentTimestamps: boolean;
}

/**
 * Prepares a dataflow's payload rules. An audience missing from the catalog has no known
 * merge policy, so its membership never appears in a payload.
 */
export function preparePayloadRules(flow: DataflowRules, catalog: readonly Audience[]): PayloadRules {
  const byId = new Map(catalog.map((a) => [a.id, a]));
  const policies = new Set<string>();
  for (const m of flow.audiences) {
    const a = byId.get(m.id);
    if (a) policies.add(a.mergePolicyId);
  }
  const visible = new Map<string, Audience>();
  for (const a of catalog) if (policies.has(a.mergePolicyId)) visible.set(a.id, a);
  return {
    dataflowId: flow.id,
    paths: flow.attributes.map((p) => p.split('.')),
    visible,
    mapped: new Map(flow.audiences.map((m) => [m.id, m])),
    includeSegmentNames: flow.includeSegmentNames,
    includeSegmentTimestamps: flow.includeSegmentTimestamps,
  };
}

function getPath(obj: JsonObject, path: string[]): JsonValue | undefined {
  let cur: JsonValue | undefined = obj;
  for (const key of path) {
    if (!isPlainObject(cur)) return undefined;
    cur = own(cur, key);
  }
  return cur;
}

/**
 * Sets `value` at `path` in `body`. Objects on the way that came from the snapshot (a wider
 * mapped path copied them) are copied before they are written into, so the snapshot is
 * never changed; `owned` holds the objects this body created.
 */
function setPath(body: JsonObject, path: string[], value: JsonValue, owned: object[]): void {
  let cur = body;
  for (let i = 0; i < path.length - 1; i++) {
    let next = own(cur, path[i]);
    if (!isPlainObject(next)) {
      setOwn(cur, path[i], (next = {}));
      owned.push(next);
    } else if (!owned.includes(next)) {
      setOwn(cur, path[i], (next = { ...next }));
      owned.push(next);
    }
    cur = next;
  }
  const last = path[path.length - 1];
  const existing = own(cur, last);
  // Two mapped paths where one lies under the other: the wider one already copied it.
  if (isPlainObject(existing) && isPlainObject(value)) {
    const merged = { ...value, ...existing };
    owned.push(merged);
    setOwn(cur, last, merged);
  } else {
    setOwn(cur, last, value);
  }
}

/**
 * The export body for one dataflow: the mapped attributes that exist on the profile, every
 * identity, and the memberships the dataflow may see (in now, or exited in this update,
 * restricted to the mapped audiences' merge policies), with names and timestamps when the
 * destination asks for them.
 *
 * @example
 * buildPayload(applied, preparePayloadRules(flow, audiences))
 * // → { person: { name: { firstName: 'John' } }, identityMap: {…}, segmentMembership: { ups: {…} } }
 */
export function buildPayload(applied: AppliedUpdate, rules: PayloadRules, exitedNow?: readonly string[]): ExportPayload {
  const { after } = applied;
  const body: JsonObject = {};
  // The objects this body created: a few per mapped path, so an array (a WeakSet per export
  // costs the garbage collector more than scanning a handful of entries).
  const owned: object[] = [body];
  for (const path of rules.paths) {
    const value = getPath(after.attributes, path);
    if (value !== undefined) setPath(body, path, value, owned);
  }
  const exited = exitedNow ?? exitedAudiences(applied);
  const ups: JsonObject = {};
  for (const id in after.memberships) {
    if (!Object.hasOwn(after.memberships, id)) continue;
    const record = after.memberships[id];
    if (!isIn(record) && !exited.includes(id)) continue;
    const audience = rules.visible.get(id);
    if (!audience) continue;
    const out: JsonObject = { status: record.status };
    if (record.lastQualificationTime !== undefined) out.lastQualificationTime = record.lastQualificationTime;
    // As in the seed's example (SPEC §4), names and timestamps describe the audiences the
    // profile is in; a record of an audience exited in this update carries status and time only.
    if (!isIn(record)) {
      setOwn(ups, id, out);
      continue;
    }
    if (rules.includeSegmentTimestamps) {
      out.createdAt = audience.createdAt;
      out.updatedAt = audience.updatedAt;
      const mapping = rules.mapped.get(id);
      if (mapping?.mappingCreatedAt !== undefined) out.mappingCreatedAt = mapping.mappingCreatedAt;
      if (mapping?.mappingUpdatedAt !== undefined) out.mappingUpdatedAt = mapping.mappingUpdatedAt;
    }
    if (rules.includeSegmentNames) out.name = audience.name;
    setOwn(ups, id, out);
  }
  body.segmentMembership = { ups };
  body.identityMap = after.identityMap as unknown as JsonObject;
  return body;
}
