/**
 * Partition assignment of a pool (pure): bounded-load rendezvous hashing of partitions over
 * the live workers. Every worker seeing the same live set computes the same owners.
 */
import { createHash } from 'node:crypto';

/** Weight of (worker, partition) for rendezvous hashing: the first 48 bits of sha1(`${id}:${p}`). */
export function rendezvousWeight(workerId: string, partition: number): number {
  return createHash('sha1').update(`${workerId}:${partition}`).digest().readUIntBE(0, 6);
}

/**
 * The desired owner of every partition among `workers`: bounded-load rendezvous hashing.
 * Every (worker, partition) pair gets a weight (`rendezvousWeight`); the pairs are taken from
 * the heaviest down (ties: worker id, then partition), and a pair assigns its partition to its
 * worker when the partition is still free and the worker is under its share — ⌊P/N⌋ partitions,
 * ⌊P/N⌋+1 for the first P mod N workers to reach ⌊P/N⌋. So every worker gets ⌊P/N⌋ or ⌊P/N⌋+1
 * partitions, and a join or a leave moves little more than the share of the worker that came
 * or went (plain rendezvous hashing moves the minimum but is badly unbalanced at 16 partitions).
 * Pure and deterministic: every worker seeing the same live set computes the same assignment.
 * Returns `owner[partition]` (undefined only when `workers` is empty).
 */
export function assignPartitions(
  workers: readonly string[],
  partitions: number,
  weight: (workerId: string, partition: number) => number = rendezvousWeight,
): Array<string | undefined> {
  const ids = [...new Set(workers)].sort();
  const owner = new Array<string | undefined>(partitions).fill(undefined);
  if (ids.length === 0) return owner;
  const pairs: Array<{ w: number; id: string; p: number }> = [];
  for (const id of ids) for (let p = 0; p < partitions; p++) pairs.push({ w: weight(id, p), id, p });
  pairs.sort((a, b) => b.w - a.w || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) || a.p - b.p);
  const base = Math.floor(partitions / ids.length);
  let extras = partitions % ids.length;
  const load = new Map<string, number>();
  let left = partitions;
  for (const { id, p } of pairs) {
    if (left === 0) break;
    if (owner[p] !== undefined) continue;
    const l = load.get(id) ?? 0;
    if (l >= base) {
      if (l > base || extras === 0) continue;
      extras--;
    }
    owner[p] = id;
    load.set(id, l + 1);
    left--;
  }
  return owner;
}
