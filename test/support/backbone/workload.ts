/**
 * Workloads for backbone tests: a seeded PRNG, a random interleaving that keeps each list's
 * order, and updates that export.
 */
import type { ProfileUpdate } from '../../../src/domain/types.js';
import { prng } from '../../../bench/events.js';

/** A small deterministic PRNG (mulberry32, the benchmark's), so a failing run can be reproduced from its seed. */
export { prng };

/** Interleaves per-profile event lists at random, keeping each profile's order. */
export function interleave<T>(lists: T[][], rand: () => number): T[] {
  const queues = lists.map((l) => l.slice());
  const out: T[] = [];
  let live = queues.filter((q) => q.length > 0);
  while (live.length > 0) {
    const i = Math.floor(rand() * live.length);
    out.push(live[i].shift() as T);
    if (live[i].length === 0) live = live.filter((q) => q.length > 0);
  }
  return out;
}

/**
 * A workload where every update exports to a dataflow mapping `audience` with
 * `person.name.firstName` mapped: per profile, in order: enter (+ firstName), firstName,
 * lastName is not mapped so it rides along with firstName, exit, enter again (`existing`),
 * identity added, firstName, exit, enter, firstName … (`perProfile` updates per profile).
 */
export function exportingWorkload(options: {
  profiles: number;
  perProfile: number;
  audience: string;
  prefix: string;
  seed: number;
  /** @default true */
  eventIds?: boolean;
}): { perProfile: ProfileUpdate[][]; events: ProfileUpdate[] } {
  const rand = prng(options.seed);
  const lists: ProfileUpdate[][] = [];
  for (let p = 0; p < options.profiles; p++) {
    const profileId = `${options.prefix}-${p}`;
    const list: ProfileUpdate[] = [];
    let inside = false;
    for (let j = 0; j < options.perProfile; j++) {
      const base: ProfileUpdate = { profileId, timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, j)).toISOString() };
      if (options.eventIds ?? true) base.eventId = `${profileId}-e${j}`;
      const t = `2026-01-01T00:00:${String(j).padStart(2, '0')}Z`;
      const step = j % 5;
      if (!inside) {
        // Enter (first time `realized`, later `existing`), with an attribute write.
        list.push({
          ...base,
          attributes: { person: { name: { firstName: `F${j}`, lastName: `L${j}` } } },
          segmentMembership: { ups: { [options.audience]: { status: j === 0 ? 'realized' : 'existing', lastQualificationTime: t } } },
        });
        inside = true;
      } else if (step === 3) {
        list.push({ ...base, segmentMembership: { ups: { [options.audience]: { status: 'exited', lastQualificationTime: t } } } });
        inside = false;
      } else if (step === 2) {
        list.push({ ...base, identityMap: { ecid: [{ id: `${profileId}-ecid-${j}` }] } });
      } else {
        list.push({ ...base, attributes: { person: { name: { firstName: `F${j}-${Math.floor(rand() * 1e6)}` } } } });
      }
    }
    lists.push(list);
  }
  return { perProfile: lists, events: interleave(lists, rand) };
}
