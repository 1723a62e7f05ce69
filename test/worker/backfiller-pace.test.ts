/**
 * The backfiller's pace (`source.backfillPublishPerSecond`): pages wait for their share of time,
 * and `stop()` ends a wait at once without publishing more. In process, memory store.
 */
import { describe, expect, it } from 'vitest';
import type { DataflowRules } from '../../src/domain/types.js';
import { createLogger } from '../../src/observability/logger.js';
import { MemorySnapshotStore } from '../../src/stores/memory-snapshot-store.js';
import type { BackfillItemRef } from '../../src/streams/backfill-item.js';
import { localBackfillLock } from '../../src/worker/backfill-lock.js';
import { startBackfiller } from '../../src/worker/backfiller.js';

const silent = createLogger({ level: 'silent' });
const dataflows = [{ id: 'flow-1', audiences: [{ id: 'aud-x', mappingCreatedAt: 7 }] }] as unknown as DataflowRules[];

async function storeWith(members: number): Promise<MemorySnapshotStore> {
  const store = new MemorySnapshotStore();
  const t = '2026-01-01T00:00:00Z';
  for (let i = 0; i < members; i++) {
    await store.apply({ profileId: `m-${i}`, segmentMembership: { ups: { 'aud-x': { status: 'realized', lastQualificationTime: t } } } }, { key: `k-${i}`, seq: i + 1 });
  }
  return store;
}

function backfiller(store: MemorySnapshotStore, publishPerSecond: number, pages: Array<{ at: number; items: BackfillItemRef[] }>) {
  return startBackfiller({
    store,
    dataflows,
    lock: localBackfillLock((id, state) => store.setBackfill(id, state)),
    publish: async (items) => void pages.push({ at: Date.now(), items }),
    logger: silent,
    retryMs: 50,
    pageSize: 10,
    publishPerSecond,
  });
}

describe('backfiller pace', () => {
  it('page n is published no earlier than n × pageSize / publishPerSecond after the first', async () => {
    const store = await storeWith(30);
    const pages: Array<{ at: number; items: BackfillItemRef[] }> = [];
    await backfiller(store, 50, pages).finished;
    expect(pages.map((p) => p.items.length)).toEqual([10, 10, 10]);
    expect(new Set(pages.flatMap((p) => p.items.map((i) => i.profileId))).size).toBe(30);
    // A lower bound only: a slower machine takes longer, none can take less.
    expect(pages[1].at - pages[0].at).toBeGreaterThanOrEqual(199);
    expect(pages[2].at - pages[0].at).toBeGreaterThanOrEqual(399);
    expect((await store.getBackfill('flow-1|aud-x|7'))?.done).toBe(true);
  });

  it('stop() during a wait ends it without publishing the page', async () => {
    const store = await storeWith(30);
    const pages: Array<{ at: number; items: BackfillItemRef[] }> = [];
    // One item a second: the second page would wait 10 s (past this test's 5 s timeout).
    const b = backfiller(store, 1, pages);
    for (let i = 0; i < 250 && pages.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(pages).toHaveLength(1);
    await b.stop();
    expect(pages).toHaveLength(1);
    expect((await store.getBackfill('flow-1|aud-x|7'))?.done).not.toBe(true);
  }, 5_000);
});
