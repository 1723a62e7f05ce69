/**
 * The pool tests' workload: every update writes an increasing `bench.seq`; seeds that a
 * failure prints, and the partitions a workload covers.
 */
import { partitionOf } from '../../../src/domain/partition.js';
import type { ProfileUpdate } from '../../../src/domain/types.js';
import { interleave, prng } from '../backbone.js';
import { POOL } from './config.js';

/**
 * `profiles` profiles with `perProfile` updates each, interleaved at random (each profile's
 * order kept). Update j of a profile writes `bench.seq = j + 1` and `trail.e<j>`; the first one
 * also writes `bench.pid` (the profile id, so every export body names its profile) and enters
 * `aud-1`.
 * So every update exports once, and the `bench.seq` of a profile's exports must never go down.
 */
export function seqWorkload(o: {
  profiles: number;
  perProfile: number;
  prefix: string;
  seed: number;
  /** The audience the first update enters. @default 'aud-1' */
  audience?: string;
}): ProfileUpdate[] {
  const lists: ProfileUpdate[][] = [];
  for (let p = 0; p < o.profiles; p++) {
    const profileId = `${o.prefix}-${p}`;
    const list: ProfileUpdate[] = [];
    for (let j = 0; j < o.perProfile; j++) {
      const u: ProfileUpdate = { profileId, eventId: `${profileId}-e${j}`, timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, j)).toISOString() };
      // `trail.e<j>` is not mapped: it only leaves a mark in the snapshot, so a final
      // snapshot missing one shows an update that was never merged.
      if (j === 0) {
        u.attributes = { bench: { pid: profileId, seq: 1 }, trail: { e0: 1 } };
        u.segmentMembership = { ups: { [o.audience ?? 'aud-1']: { status: 'realized', lastQualificationTime: '2026-01-01T00:00:00Z' } } };
      } else {
        u.attributes = { bench: { seq: j + 1 }, trail: { [`e${j}`]: 1 } };
      }
      list.push(u);
    }
    lists.push(list);
  }
  return interleave(lists, prng(o.seed));
}

/** A seed from `HD_POOL_SEED` or the clock, printed by the tests so a failure can be replayed. */
export const seedOf = (salt: number): number => Number(process.env.HD_POOL_SEED ?? (Date.now() + salt) % 1_000_000);

/** The partitions the profiles of `events` fall in (to check a workload spreads over all). */
export function partitionsOf(events: readonly ProfileUpdate[]): Set<number> {
  return new Set(events.map((e) => partitionOf(e.profileId, POOL.partitions)));
}
