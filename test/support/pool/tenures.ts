/**
 * Ownership as the workers saw it: each worker's tenures of each partition from its logs, and
 * tenures of two workers that overlap.
 */
import type { PoolWorker } from './workers.js';

export interface Tenure {
  worker: string;
  partition: number;
  epoch: number;
  from: number;
  /** Released or lost (log time), or undefined while still held. */
  to?: number;
}

/**
 * Each worker's tenures of each partition, from its logs: `pool: partition acquired` opens one,
 * `pool: partition released` or `… lease lost …` closes it. The process's end closes the rest
 * (at `endOf(worker)`, when given).
 */
export function tenures(workers: readonly PoolWorker[], endOf: (w: PoolWorker) => number | undefined = () => undefined): Tenure[] {
  const out: Tenure[] = [];
  for (const w of workers) {
    const open = new Map<number, Tenure>();
    for (const l of w.logs()) {
      const p = typeof l.partition === 'number' ? l.partition : undefined;
      if (p === undefined) continue;
      if (l.msg === 'pool: partition acquired') {
        const t: Tenure = { worker: w.name, partition: p, epoch: Number(l.epoch), from: l.time };
        open.set(p, t);
        out.push(t);
      } else if (l.msg === 'pool: partition released' || l.msg.startsWith('pool: partition lease lost')) {
        const t = open.get(p);
        if (t) t.to = l.time;
        open.delete(p);
      }
    }
    const end = endOf(w);
    if (end !== undefined) for (const t of open.values()) t.to = end;
  }
  return out;
}

/** Pairs of tenures of one partition by two workers that overlap in time. */
export function overlappingTenures(list: readonly Tenure[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < list.length; i++) {
    for (let j = i + 1; j < list.length; j++) {
      const a = list[i];
      const b = list[j];
      if (a.partition !== b.partition || a.worker === b.worker) continue;
      const aEnd = a.to ?? Infinity;
      const bEnd = b.to ?? Infinity;
      if (a.from < bEnd && b.from < aEnd) {
        out.push(`partition ${a.partition}: ${a.worker} (epoch ${a.epoch}, ${a.from}–${a.to ?? 'end'}) and ${b.worker} (epoch ${b.epoch}, ${b.from}–${b.to ?? 'end'})`);
      }
    }
  }
  return out;
}
