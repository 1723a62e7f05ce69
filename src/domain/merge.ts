/**
 * Applying one update to a profile snapshot (SPEC §2). Pure: inputs are never mutated.
 */
import type {
  Identity,
  IdentityMap,
  JsonObject,
  JsonValue,
  MembershipRecord,
  ProfileSnapshot,
  ProfileUpdate,
} from './types.js';
import { withLastUpdate } from './explain.js';

/** Whether `o` has no own enumerable key. */
export function isEmptyObject(o: object): boolean {
  for (const k in o) if (Object.hasOwn(o, k)) return false;
  return true;
}

export function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `obj[key]` when `key` is an own property of `obj`, else `undefined`. Keys of profile data
 * (attribute names, identity namespaces, audience ids) are data: a namespace named
 * `constructor` or `toString` must not find `Object.prototype`'s members.
 */
export function own<T>(obj: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/**
 * Sets an own, enumerable property, also for a key named `__proto__` (plain assignment would
 * set the object's prototype instead: prototype pollution of that object).
 */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

/** An empty snapshot for a profile seen for the first time. */
export function emptySnapshot(profileId: string): ProfileSnapshot {
  return { profileId, attributes: {}, identityMap: {}, memberships: {} };
}

/**
 * Whether merging `patch` into nothing gives `patch` itself (deeply equal): it removes nothing
 * (no `null`) and holds no empty object (the merge drops those), at any depth, and is not
 * empty. The merge then keeps the decoded object as it is instead of copying it: an update is
 * never modified once decoded, nor is a snapshot (arrays were always shared this way).
 */
function mergesToItself(patch: JsonObject): boolean {
  let empty = true;
  for (const key in patch) {
    if (!Object.hasOwn(patch, key)) continue;
    empty = false;
    const value = patch[key];
    if (value === null || (isPlainObject(value) && !mergesToItself(value))) return false;
  }
  return !empty;
}

/**
 * Deep-merges `patch` into `base`: objects merge key by key, arrays and scalars replace,
 * `null` removes the key. An object that ends up empty is dropped, so a profile never
 * carries `{}` husks (an empty object holds no attribute). Returns a new object; `base` is not changed.
 */
export function mergeAttributes(base: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  // for…in with an own-key check instead of Object.keys: no array of keys per object.
  for (const key in patch) {
    if (!Object.hasOwn(patch, key)) continue;
    const value = patch[key] as JsonValue;
    if (value === null) {
      delete out[key];
    } else if (isPlainObject(value)) {
      const current = own(out, key);
      // Nothing (or a scalar) there before: a patch object that merges to itself is kept as it is.
      if (!isPlainObject(current) && mergesToItself(value)) {
        setOwn(out, key, value);
        continue;
      }
      const merged = mergeAttributes(isPlainObject(current) ? current : {}, value);
      if (isEmptyObject(merged)) delete out[key];
      else setOwn(out, key, merged);
    } else {
      setOwn(out, key, value);
    }
  }
  return out;
}

/**
 * Adds identities (union by namespace + id) and removes the `removed` ones. Namespaces are
 * data: they are read with `own` and written with `setOwn`, so no namespace name can reach
 * `Object.prototype`. A namespace the update does not touch keeps its list (lists are never
 * changed in place: a touched one is copied first); a new namespace whose list holds no id
 * twice takes the update's list as it is, and identity objects are shared, not copied (an
 * update is never modified once decoded, nor is a snapshot).
 */
export function mergeIdentities(
  base: IdentityMap,
  add: IdentityMap | undefined,
  removed: Record<string, string[]> | undefined,
): IdentityMap {
  const out: IdentityMap = {};
  for (const ns in base) if (Object.hasOwn(base, ns)) setOwn(out, ns, base[ns]);
  if (add) {
    for (const ns in add) {
      if (!Object.hasOwn(add, ns)) continue;
      const known = own(out, ns);
      const adding = add[ns];
      if (known === undefined && distinctIds(adding)) {
        setOwn(out, ns, adding);
        continue;
      }
      let list: Identity[] | undefined;
      for (const identity of adding) {
        const current = list ?? known;
        if (current !== undefined && current.some((i) => i.id === identity.id)) continue;
        list ??= known ? known.slice() : [];
        list.push(identity);
      }
      if (list) setOwn(out, ns, list);
    }
  }
  if (removed) {
    for (const ns in removed) {
      if (!Object.hasOwn(removed, ns)) continue;
      const list = own(out, ns);
      if (!list) continue;
      const drop = removed[ns];
      setOwn(out, ns, list.filter((i) => !drop.includes(i.id)));
    }
  }
  for (const ns in out) if (out[ns].length === 0) delete out[ns];
  return out;
}

/** Whether no id occurs twice in the list. */
function distinctIds(list: readonly Identity[]): boolean {
  for (let i = 1; i < list.length; i++) {
    const id = list[i].id;
    for (let j = 0; j < i; j++) if (list[j].id === id) return false;
  }
  return true;
}

/** Applies one validated update to the snapshot (or to an empty one when `before` is null). */
export function applyUpdate(before: ProfileSnapshot | null, update: ProfileUpdate): ProfileSnapshot {
  const base = before ?? emptySnapshot(update.profileId);
  const ups = update.segmentMembership?.ups;
  let memberships = base.memberships;
  if (ups && !isEmptyObject(ups)) {
    memberships = { ...base.memberships };
    for (const id in ups) {
      if (!Object.hasOwn(ups, id)) continue;
      const r = ups[id];
      // One literal per shape: a property added later would cost the record a property array.
      const record: MembershipRecord = r.lastQualificationTime !== undefined ? { status: r.status, lastQualificationTime: r.lastQualificationTime } : { status: r.status };
      setOwn(memberships, id, record);
    }
  }
  const patch = update.attributes;
  return withLastUpdate(before, update, {
    profileId: base.profileId,
    attributes: patch ? (isEmptyObject(base.attributes) && mergesToItself(patch) ? patch : mergeAttributes(base.attributes, patch)) : base.attributes,
    identityMap:
      update.identityMap || update.removedIdentities
        ? mergeIdentities(base.identityMap, update.identityMap, update.removedIdentities)
        : base.identityMap,
    memberships,
    // Set by withLastUpdate: named here so the snapshot holds it in-object (no property array).
    last: undefined,
  });
}
