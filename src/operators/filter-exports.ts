/**
 * `filterExports`: a dataflow exports only the profiles its `filter` condition selects.
 */
import { map, type MonoTypeOperatorFunction } from 'rxjs';
import type { JsonValue, ProfileSnapshot } from '../domain/types.js';
import { toEventRejection } from '../errors.js';
import type { DecidedEnvelope } from './detect-exports.js';

/** A scalar a filter compares attribute values with. */
export type FilterScalar = string | number | boolean;

/**
 * The condition of a dataflow's `filter` (config `dataflows[].filter`): one attribute of the
 * merged profile and exactly one test. A profile is exported only when the test holds.
 *
 * - `equals: v` / `notEquals: v` — the value is (is not) `v` (a missing attribute is not equal);
 * - `in: [v…]` / `notIn: [v…]` — the value is (is not) one of them;
 * - `exists: true|false` — the attribute is present and not null (or absent).
 *
 * @example { attribute: 'person.country', in: ['FR', 'BE'] }
 */
export type ExportFilter = { attribute: string } & (
  | { equals: FilterScalar }
  | { notEquals: FilterScalar }
  | { in: FilterScalar[] }
  | { notIn: FilterScalar[] }
  | { exists: boolean }
);

export interface FilterExportsOptions {
  /** The dataflows; those with a `filter` have their decisions checked against it. */
  dataflows: ReadonlyArray<{ id: string; filter?: ExportFilter }>;
  /** Told of each export the filter skipped (count it as excluded). Must not throw. @default none */
  onSkipped?: (dataflowId: string, env: DecidedEnvelope) => void;
}

/**
 * Drops the decisions of dataflows whose `filter` does not select the profile (as it is after
 * this update; the newest state on a replay): that dataflow sends nothing for it, and the
 * message is acked as usual once its other exports (if any) are settled. Envelopes are never
 * dropped, only decisions. Without any filter configured the operator passes values on as
 * they are.
 *
 * A throw while filtering rejects the event (`fault: rejected`, `ERR_EVENT_SHAPE`). A faulted
 * envelope passes through untouched.
 *
 * @example
 * decided$.pipe(filterExports({ dataflows: [{ id: 'fr', filter: { attribute: 'person.country', equals: 'FR' } }] }))
 */
export function filterExports(options: FilterExportsOptions): MonoTypeOperatorFunction<DecidedEnvelope> {
  const filters = new Map<string, ExportFilter>();
  for (const flow of options.dataflows) if (flow.filter) filters.set(flow.id, flow.filter);
  const { onSkipped } = options;
  return map((env) => {
    if (filters.size === 0 || env.fault || env.decisions.length === 0) return env;
    try {
      const profile = env.applied.latest ?? env.applied.after;
      let kept = env.decisions;
      for (const d of env.decisions) {
        const filter = filters.get(d.dataflowId);
        if (filter === undefined || matchesFilter(profile, filter)) continue;
        kept = kept.filter((k) => k !== d);
        onSkipped?.(d.dataflowId, env);
      }
      env.decisions = kept;
    } catch (err) {
      env.decisions = [];
      env.fault = { kind: 'rejected', error: toEventRejection(err, 'filter') };
    }
    return env;
  });
}

/** Whether `profile` passes `filter` (see {@link ExportFilter}). Pure. */
export function matchesFilter(profile: ProfileSnapshot, filter: ExportFilter): boolean {
  const value = attributeAt(profile, filter.attribute);
  if ('exists' in filter) return filter.exists === (value !== undefined && value !== null);
  if ('equals' in filter) return value === filter.equals;
  if ('notEquals' in filter) return value !== filter.notEquals;
  if ('in' in filter) return filter.in.some((v) => v === value);
  return !filter.notIn.some((v) => v === value);
}

/** The value at a dotted path of the profile's attributes (own properties only), or undefined. */
function attributeAt(profile: ProfileSnapshot, path: string): JsonValue | undefined {
  let at: JsonValue | undefined = profile.attributes;
  for (const part of path.split('.')) {
    if (at === null || typeof at !== 'object' || Array.isArray(at) || !Object.hasOwn(at, part)) return undefined;
    at = (at as Record<string, JsonValue>)[part];
  }
  return at;
}
