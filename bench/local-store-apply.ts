/**
 * µs per `apply` on the local store (LMDB) beside the memory store: 50,000 updates of 5,000
 * profiles, one awaited after the other (the commit of the last turn included), then the
 * same with 512 in flight as a worker runs them (the event loop turning between batches, as
 * it does in a worker between HTTP answers). Run: `npx tsx bench/local-store-apply.ts`.
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

async function sequential(store: SnapshotStore, flush: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const key = `k${i}`;
    await store.apply(update(i), { key, seq: i });
    await store.confirm(update(i).profileId, key);
    // A worker's event loop turns (HTTP answers, file reads) between batches of messages.
    if (i % 512 === 511) await new Promise<void>((r) => setImmediate(r));
  }
  await flush();
  return ((performance.now() - t0) * 1_000) / N;
}

async function concurrent(store: SnapshotStore, flush: () => Promise<unknown>, inFlight = 512): Promise<number> {
  const t0 = performance.now();
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < N) {
      const i = next++;
      const key = `c${i}`;
      await store.apply(update(i), { key, seq: i });
      await store.confirm(update(i).profileId, key);
      await new Promise<void>((r) => setImmediate(r));
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  await flush();
  return ((performance.now() - t0) * 1_000) / N;
}

const dir = mkdtempSync(join(tmpdir(), 'bench-local-'));
try {
  const memory = new MemorySnapshotStore();
  const m1 = await sequential(memory, async () => undefined);
  const m2 = await concurrent(memory, async () => undefined);
  const local = await LocalSnapshotStore.open({ path: join(dir, 'state') });
  // The store's pending writes are committed when close() resolves: time a flush through a position write.
  const flush = () => local.setPosition('bench', { offset: 0, line: 0, ino: 0, dev: 0, size: 0, head: '', headBytes: 0 });
  const l1 = await sequential(local, flush);
  const l2 = await concurrent(local, flush);
  await local.close();
  const f = (x: number): string => x.toFixed(2).padStart(7);
  console.log(`apply + confirm, ${N} updates of 5,000 profiles (µs per update)`);
  console.log(`                 one at a time   512 in flight`);
  console.log(`memory          ${f(m1)}         ${f(m2)}`);
  console.log(`local (LMDB)    ${f(l1)}         ${f(l2)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
