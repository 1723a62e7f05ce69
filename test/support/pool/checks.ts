/**
 * Checks over what a pool run delivered: the ORDER check over every export the receiver got,
 * missing exports explained, and snapshots that differ from a clean run's.
 */
import { isDeepStrictEqual } from 'node:util';
import { partitionOf } from '../../../src/domain/partition.js';
import type { ProfileUpdate } from '../../../src/domain/types.js';
import { readSnapshots, type Backbone, type Oracle, type Recorded } from '../backbone.js';
import { POOL, type PoolSetup } from './config.js';

/**
 * Profiles whose snapshot in Redis differs from the clean run's final snapshot (an update
 * never merged, or merged out of order), each with the `trail` marks it lacks.
 */
export async function divergedSnapshots(bb: Backbone, setup: PoolSetup, expected: Oracle): Promise<string[]> {
  const ids = [...expected.snapshots.keys()];
  const got = await readSnapshots(bb.redis.url, setup.prefix, ids);
  const out: string[] = [];
  for (const id of ids) {
    const want = expected.snapshots.get(id);
    const have = got.get(id);
    if (isDeepStrictEqual(have, want)) continue;
    const trail = (x: unknown) => Object.keys((x as { attributes?: { trail?: object } } | null | undefined)?.attributes?.trail ?? {});
    const lacks = trail(want).filter((k) => !trail(have).includes(k));
    out.push(`${id}${lacks.length ? ` lacks ${lacks.join(',')}` : ''}`);
  }
  return out;
}

export interface OrderViolation {
  path: string;
  profileId: string;
  /** Arrival index of the offending request. */
  index: number;
  seq: number;
  /** The highest `bench.seq` received before it for the same (dataflow, profile). */
  newest: number;
  at: number;
  key: string;
}

/**
 * Goes through every request the receiver got, in arrival order (answered or not: what
 * reached the endpoint counts), and reports each export whose `bench.seq` is lower than one
 * the same (dataflow = receiver path, profile = `bench.pid`) received before. Duplicates of
 * the newest are fine. A request without a readable `bench.pid`/`bench.seq` is a violation too.
 */
export function orderViolations(requests: readonly Recorded[], path?: string): OrderViolation[] {
  const newest = new Map<string, number>();
  const out: OrderViolation[] = [];
  for (const r of [...requests].sort((a, b) => a.index - b.index)) {
    if (path !== undefined && r.path !== path) continue;
    const bench = (r.body as { bench?: { pid?: unknown; seq?: unknown } } | undefined)?.bench;
    const pid = typeof bench?.pid === 'string' ? bench.pid : '?';
    const seq = typeof bench?.seq === 'number' ? bench.seq : -1;
    const k = `${r.path}\u0000${pid}`;
    const before = newest.get(k) ?? 0;
    if (seq < before || pid === '?' || seq < 0) out.push({ path: r.path, profileId: pid, index: r.index, seq, newest: before, at: r.at, key: r.key });
    if (seq > before) newest.set(k, seq);
  }
  return out;
}

/** A readable account of the first violations, with the profile's arrival history. */
export function explainViolations(requests: readonly Recorded[], v: readonly OrderViolation[], t0: number): string {
  return v
    .slice(0, 3)
    .map((x) => {
      const history = requests
        .filter((r) => r.path === x.path && (r.body as { bench?: { pid?: string } } | undefined)?.bench?.pid === x.profileId)
        .map((r) => `${r.index === x.index ? '>' : ' '}+${r.at - t0}ms seq=${(r.body as { bench: { seq: number } }).bench.seq} ${r.key}`);
      return `\n${x.profileId}: seq ${x.seq} after ${x.newest}; its exports in arrival order:\n  ${history.join('\n  ')}`;
    })
    .join('');
}

/**
 * Why exports are missing: per missing key, its event, partition, stream sequence (when the
 * publisher knows it) and the arrival history of that profile.
 */
export function explainMissing(
  missing: readonly string[],
  expected: Oracle,
  events: readonly ProfileUpdate[],
  requests: readonly Recorded[],
  t0: number,
  seqOf?: Map<string, number>,
): string {
  const eventOfKey = new Map(expected.exports.map((e, i) => [e.key, events[i]]));
  return missing
    .slice(0, 4)
    .map((k) => {
      const e = eventOfKey.get(k);
      const pid = e?.profileId ?? '?';
      const history = requests
        .filter((r) => (r.body as { bench?: { pid?: string } } | undefined)?.bench?.pid === pid)
        .map((r) => `+${r.at - t0}ms seq=${(r.body as { bench: { seq: number } }).bench.seq}`);
      const seq = e?.eventId !== undefined ? seqOf?.get(e.eventId) : undefined;
      return `\n${e?.eventId} (partition ${partitionOf(pid, POOL.partitions)}${seq !== undefined ? `, stream seq ${seq}` : ''}): ${pid}'s exports: ${history.join(', ')}`;
    })
    .join('');
}
