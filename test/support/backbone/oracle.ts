/**
 * The oracle: the exports one clean, in-order run makes, computed from the pure domain
 * functions, and the coverage of what the receiver got against it.
 */
import { isDeepStrictEqual } from 'node:util';
import { decideExports, exitedAudiences } from '../../../src/domain/diff.js';
import { eventIdentity, idempotencyKey } from '../../../src/domain/keys.js';
import { applyUpdate } from '../../../src/domain/merge.js';
import { buildPayload, preparePayloadRules } from '../../../src/domain/payload.js';
import type { Audience, DataflowRules, ExportPayload, ProfileSnapshot, ProfileUpdate } from '../../../src/domain/types.js';
import type { Recorded } from './receiver.js';

export interface ExpectedExport {
  dataflowId: string;
  profileId: string;
  key: string;
  payload: ExportPayload;
}

export interface Oracle {
  /** Exports in source order. */
  exports: ExpectedExport[];
  byKey: Map<string, ExpectedExport>;
  /** Final snapshot per profile. */
  snapshots: Map<string, ProfileSnapshot>;
}

/**
 * Applies `events` in order with the domain's pure functions and lists the exports each
 * makes (SPEC §3, §4), keyed like the product keys them: the event's `eventId`, else
 * `sourceKey(index)` (for JetStream, `js:<stream>:<1-based sequence>`).
 */
export function oracle(
  events: readonly ProfileUpdate[],
  config: { audiences: Audience[]; dataflows: DataflowRules[] },
  sourceKey: (index: number) => string = () => {
    throw new Error('oracle: an event without eventId needs sourceKey');
  },
): Oracle {
  const snapshots = new Map<string, ProfileSnapshot>();
  const rules = new Map(config.dataflows.map((f) => [f.id, preparePayloadRules(f, config.audiences)]));
  const exports: ExpectedExport[] = [];
  events.forEach((update, i) => {
    const before = snapshots.get(update.profileId) ?? null;
    const after = applyUpdate(before, update);
    snapshots.set(update.profileId, after);
    const applied = { update, before, after };
    const exited = exitedAudiences(applied);
    for (const d of decideExports(applied, config.dataflows)) {
      const event = eventIdentity(update, update.eventId === undefined ? sourceKey(i) : '');
      exports.push({
        dataflowId: d.dataflowId,
        profileId: update.profileId,
        key: idempotencyKey({ dataflowId: d.dataflowId, profileId: update.profileId, event }),
        payload: JSON.parse(JSON.stringify(buildPayload(applied, rules.get(d.dataflowId)!, exited))) as ExportPayload,
      });
    }
  });
  return { exports, byKey: new Map(exports.map((e) => [e.key, e])), snapshots };
}

/** DataflowRules as the config loader makes them (for the oracle). */
export function rulesOf(
  flow: { id: string; destination: string; audiences: Array<{ id: string; mappingCreatedAt?: number; mappingUpdatedAt?: number }>; attributes: string[] },
  destination: { id: string; includeSegmentNames?: boolean; includeSegmentTimestamps?: boolean },
): DataflowRules {
  return {
    id: flow.id,
    destinationId: flow.destination,
    audiences: flow.audiences.map((a) => ({
      id: a.id,
      mappingCreatedAt: a.mappingCreatedAt as number,
      mappingUpdatedAt: a.mappingUpdatedAt as number,
    })),
    attributes: flow.attributes,
    includeSegmentNames: destination.includeSegmentNames ?? false,
    includeSegmentTimestamps: destination.includeSegmentTimestamps ?? false,
  };
}

/** Compares what a receiver got against the oracle: missing keys, unknown keys, duplicates with another body. */
export function coverage(received: readonly Recorded[], expected: Oracle): {
  missing: string[];
  unexpected: string[];
  duplicates: number;
  conflictingDuplicates: string[];
} {
  const seen = new Map<string, string>();
  const conflicting = new Set<string>();
  const unexpected = new Set<string>();
  let duplicates = 0;
  for (const r of received) {
    if (!expected.byKey.has(r.key)) unexpected.add(r.key);
    const prev = seen.get(r.key);
    if (prev === undefined) seen.set(r.key, r.raw);
    else {
      duplicates++;
      if (!isDeepStrictEqual(JSON.parse(prev), JSON.parse(r.raw))) conflicting.add(r.key);
    }
  }
  const missing = expected.exports.filter((e) => !seen.has(e.key)).map((e) => e.key);
  return { missing, unexpected: [...unexpected], duplicates, conflictingDuplicates: [...conflicting] };
}
