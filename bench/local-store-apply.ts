/**
 * µs per `apply` on the local store (LMDB) beside the memory store: 50,000 updates of 5,000
 * profiles, one awaited after the other (the commit of the last turn included), then the
 * same with 512 in flight as a worker runs them (each confirmed a turn after its apply, as a
 * worker confirms after the HTTP answer). Wall and CPU time (CPU: `process.cpuUsage`, LMDB's
 * write thread included), median of ROUNDS rounds (default 3), memory and local alternating
 * in the same run. Run: `npx tsx bench/local-store-apply.ts`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ProfileUpdate } from '../src/domain/types.js';
import { LocalSnapshotStore } from '../src/stores/local-snapshot-store.js';
import { MemorySnapshotStore } from '../src/stores/memory-snapshot-store.js';
import type { SnapshotStore } from '../src/stores/types.js';

const N = 50_000;
const update = (i: number): ProfileUpdate => ({
  profileId: `p-${i % 5_000}`,
  attributes: { person: { name: { firstName: `n${i}` } }, n: i },
  segmentMembership: { ups: { [`aud-${i % 7}`]: { status: i % 3 === 0 ? 'exited' : 'realized' } } },
});

/** Wall and CPU (user + system, every thread of the process: LMDB's writer too) µs per update. */
interface Cost {
  wall: number;
  cpu: number;
}
const start = (): (() => Cost) => {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  return () => {
    const c = process.cpuUsage(c0);
    return { wall: ((performance.now() - t0) * 1_000) / N, cpu: (c.user + c.system) / N };
  };
};

async function sequential(store: SnapshotStore, flush: () => Promise<unknown>): Promise<Cost> {
  const done = start();
  for (let i = 0; i < N; i++) {
    const key = `k${i}`;
    await store.apply(update(i), { key, seq: i });
    await store.confirm(update(i).profileId, key);
    // A worker's event loop turns (HTTP answers, file reads) between batches of messages.
    if (i % 512 === 511) await new Promise<void>((r) => setImmediate(r));
  }
  await flush();
  return done();
}

async function concurrent(store: SnapshotStore, flush: () => Promise<unknown>, inFlight = 512): Promise<Cost> {
  const done = start();
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < N) {
      const i = next++;
      const key = `c${i}`;
      await store.apply(update(i), { key, seq: i });
      // As in a worker: the export's HTTP answer comes in a later turn, then the confirm.
      await new Promise<void>((r) => setImmediate(r));
      await store.confirm(update(i).profileId, key);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  await flush();
  return done();
}

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const dir = mkdtempSync(join(tmpdir(), 'bench-local-'));
try {
  const runs: Record<'m1' | 'm2' | 'l1' | 'l2', Cost[]> = { m1: [], m2: [], l1: [], l2: [] };
  // Memory and local in the same run, alternating, on a fresh local store each round: the
  // machine's load hits both alike, and the ratio is what to compare between runs.
  for (let r = 0; r < ROUNDS; r++) {
    const memory = new MemorySnapshotStore();
    runs.m1.push(await sequential(memory, async () => undefined));
    runs.m2.push(await concurrent(memory, async () => undefined));
    const local = await LocalSnapshotStore.open({ path: join(dir, `state-${r}`), exclusive: true });
    // The store's pending writes are committed when a position write resolves (awaited).
    const flush = () => local.setPosition('bench', { offset: 0, line: 0, ino: 0, dev: 0, size: 0, head: '', headBytes: 0 });
    runs.l1.push(await sequential(local, flush));
    runs.l2.push(await concurrent(local, flush));
    await local.close();
  }
  const med = (k: keyof typeof runs, f: keyof Cost): number => median(runs[k].map((c) => c[f]));
  const f = (x: number): string => x.toFixed(1).padStart(7);
  console.log(`apply + confirm, ${N} updates of 5,000 profiles, median of ${ROUNDS} rounds (µs per update, wall / CPU)`);
  console.log(`                 one at a time        512 in flight`);
  for (const [name, a, b] of [['memory', 'm1', 'm2'], ['local (LMDB)', 'l1', 'l2']] as const) {
    console.log(`${name.padEnd(14)} ${f(med(a, 'wall'))} /${f(med(a, 'cpu'))}   ${f(med(b, 'wall'))} /${f(med(b, 'cpu'))}`);
  }
  console.log(`local / memory CPU: ${(med('l1', 'cpu') / med('m1', 'cpu')).toFixed(1)}x one at a time, ${(med('l2', 'cpu') / med('m2', 'cpu')).toFixed(1)}x in flight`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
