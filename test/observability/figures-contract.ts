/**
 * The behaviour every `FiguresStore` owes (memory, Redis, local), as a reusable vitest suite:
 * totals, one-hour runs, the 10 s slots the alert rules read, the last delivery time, latency
 * buckets, rejected events, and adds that run at once counting exactly once each.
 *
 * @example
 * describeFiguresStoreContract('MemoryFiguresStore', async () => {
 *   const store = new MemoryFiguresStore();
 *   return { store, cleanup: () => store.close() };
 * });
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FigureCounts, FiguresDelta, FiguresStore } from '../../src/observability/figures.js';

export interface FiguresStoreFixture {
  store: FiguresStore;
  cleanup(): Promise<void>;
  /** A new handle on the same figures, opened after `store` was closed (durable stores). */
  reopen?(): Promise<FiguresStore>;
}

export interface FiguresStoreContractOptions {
  /** The figures outlive the handle (Redis, local): the fixture has `reopen`. @default false */
  durable?: boolean;
}

const HOUR = 3_600_000;
/** 10:00:00 UTC, on the hour. */
const T0 = Date.UTC(2026, 11, 5, 10, 0, 0);

const counts = (received: number, exported: number, excluded: number, failed: number): FigureCounts => ({ received, exported, excluded, failed });

const flow = (dataflowId: string, c: FigureCounts, latency: Record<number, number> = {}, lastDeliveredAt = 0): FiguresDelta['flows'][number] => ({
  dataflowId,
  counts: c,
  latency,
  lastDeliveredAt,
});

export function describeFiguresStoreContract(name: string, make: () => Promise<FiguresStoreFixture>, options: FiguresStoreContractOptions = {}): void {
  describe(`FiguresStore contract: ${name}`, () => {
    let fixture: FiguresStoreFixture;
    let store: FiguresStore;

    beforeEach(async () => {
      fixture = await make();
      store = fixture.store;
    });
    afterEach(async () => {
      await fixture.cleanup();
    });

    it('reads zeros, no last delivery and empty latency before anything was added', async () => {
      const r = await store.read(['flow-1'], T0);
      expect(r).toEqual({
        rejected: { run: 0, total: 0 },
        flows: { 'flow-1': { run: counts(0, 0, 0, 0), total: counts(0, 0, 0, 0), runLatency: {}, lastDeliveredAt: undefined } },
      });
      expect(await store.window(['flow-1'], T0 - 60_000, T0)).toEqual({ 'flow-1': { exported: 0, failed: 0, latency: {} } });
    });

    it('adds deltas into the totals and into the run of the time of the add, per dataflow', async () => {
      await store.add({ rejected: 2, flows: [flow('flow-1', counts(10, 6, 3, 1), { 5: 4, 9: 2 }, T0 + 1_000), flow('flow-2', counts(4, 0, 4, 0))] }, T0 + 1_000);
      await store.add({ rejected: 1, flows: [flow('flow-1', counts(5, 2, 1, 2), { 5: 1, 12: 1 }, T0 + 59 * 60_000)] }, T0 + 59 * 60_000);
      // The next run (11:00).
      await store.add({ rejected: 4, flows: [flow('flow-1', counts(7, 7, 0, 0), { 3: 7 }, T0 + HOUR + 5)] }, T0 + HOUR + 5);

      const first = await store.read(['flow-1', 'flow-2', 'flow-3'], T0);
      expect(first.rejected).toEqual({ run: 3, total: 7 });
      expect(first.flows['flow-1']).toEqual({ run: counts(15, 8, 4, 3), total: counts(22, 15, 4, 3), runLatency: { 5: 5, 9: 2, 12: 1 }, lastDeliveredAt: T0 + HOUR + 5 });
      expect(first.flows['flow-2']).toMatchObject({ run: counts(4, 0, 4, 0), total: counts(4, 0, 4, 0), runLatency: {} });
      expect(first.flows['flow-2'].lastDeliveredAt).toBeUndefined();
      expect(first.flows['flow-3']).toMatchObject({ run: counts(0, 0, 0, 0), total: counts(0, 0, 0, 0) });

      const second = await store.read(['flow-1'], T0 + HOUR);
      expect(second.rejected).toEqual({ run: 4, total: 7 });
      expect(second.flows['flow-1']).toMatchObject({ run: counts(7, 7, 0, 0), total: counts(22, 15, 4, 3), runLatency: { 3: 7 } });
      // Only the dataflows asked for.
      expect(Object.keys(second.flows)).toEqual(['flow-1']);
    });

    it('keeps the greatest last delivery time; a delta without deliveries leaves it', async () => {
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(1, 1, 0, 0), {}, T0 + 5_000)] }, T0 + 5_000);
      // A delta flushed later by another worker whose last delivery was earlier.
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(1, 1, 0, 0), {}, T0 + 3_000)] }, T0 + 6_000);
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(1, 0, 0, 1), {}, 0)] }, T0 + 7_000);
      expect((await store.read(['flow-1'], T0)).flows['flow-1'].lastDeliveredAt).toBe(T0 + 5_000);
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(1, 1, 0, 0), {}, T0 + 8_000)] }, T0 + 8_000);
      expect((await store.read(['flow-1'], T0)).flows['flow-1'].lastDeliveredAt).toBe(T0 + 8_000);
    });

    it('sums exported, failed and latency of the 10 s slots in [from, to), per dataflow', async () => {
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(3, 2, 0, 1), { 4: 2 }, T0 + 1_000)] }, T0 + 1_000); // slot T0
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(2, 0, 0, 2)), flow('flow-2', counts(5, 5, 0, 0), { 7: 5 }, T0 + 15_000)] }, T0 + 15_000); // slot T0+10s
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(4, 4, 0, 0), { 4: 1, 8: 3 }, T0 + 29_999)] }, T0 + 29_999); // slot T0+20s
      await store.add({ rejected: 0, flows: [flow('flow-1', counts(9, 0, 0, 9))] }, T0 + 30_000); // slot T0+30s

      const all = await store.window(['flow-1', 'flow-2'], T0, T0 + 30_000);
      expect(all['flow-1']).toEqual({ exported: 6, failed: 3, latency: { 4: 3, 8: 3 } });
      expect(all['flow-2']).toEqual({ exported: 5, failed: 0, latency: { 7: 5 } });
      // `from` inside a slot counts that slot; `to` excludes the slot starting at it.
      expect((await store.window(['flow-1'], T0 + 12_000, T0 + 20_000))['flow-1']).toEqual({ exported: 0, failed: 2, latency: {} });
      expect((await store.window(['flow-1'], T0 + 12_000, T0 + 20_001))['flow-1']).toEqual({ exported: 4, failed: 2, latency: { 4: 1, 8: 3 } });
      // What the alert engine asks: the last 60 s up to now + 1.
      expect((await store.window(['flow-1'], T0 + 30_000 - 60_000, T0 + 30_001))['flow-1']).toEqual({ exported: 6, failed: 12, latency: { 4: 3, 8: 3 } });
      expect((await store.window(['flow-1'], T0 + 40_000, T0 + 100_000))['flow-1']).toEqual({ exported: 0, failed: 0, latency: {} });
      expect(await store.window(['flow-3'], T0, T0 + 60_000)).toEqual({ 'flow-3': { exported: 0, failed: 0, latency: {} } });
    });

    it('counts adds that run at once exactly once each', async () => {
      const n = 50;
      await Promise.all(
        Array.from({ length: n }, (_, i) => store.add({ rejected: 1, flows: [flow('flow-1', counts(3, 1, 1, 1), { 6: 1 }, T0 + i)] }, T0 + i * 100)),
      );
      const r = await store.read(['flow-1'], T0);
      expect(r.rejected).toEqual({ run: n, total: n });
      expect(r.flows['flow-1']).toEqual({ run: counts(3 * n, n, n, n), total: counts(3 * n, n, n, n), runLatency: { 6: n }, lastDeliveredAt: T0 + n - 1 });
      expect((await store.window(['flow-1'], T0, T0 + n * 100))['flow-1']).toEqual({ exported: n, failed: n, latency: { 6: n } });
    });

    if (!options.durable) return;
    it('keeps the figures for the next handle on the same place (durable stores)', async () => {
      if (!fixture.reopen) throw new Error('a durable store\'s fixture needs reopen');
      await store.add({ rejected: 1, flows: [flow('flow-1', counts(4, 2, 1, 1), { 5: 2 }, T0 + 2_000)] }, T0 + 2_000);
      await store.close();
      store = await fixture.reopen();
      await store.add({ rejected: 2, flows: [flow('flow-1', counts(3, 3, 0, 0), { 5: 1, 6: 2 }, T0 + 4_000)] }, T0 + 4_000);
      const r = await store.read(['flow-1'], T0);
      expect(r.rejected).toEqual({ run: 3, total: 3 });
      expect(r.flows['flow-1']).toEqual({ run: counts(7, 5, 1, 1), total: counts(7, 5, 1, 1), runLatency: { 5: 3, 6: 2 }, lastDeliveredAt: T0 + 4_000 });
      expect((await store.window(['flow-1'], T0, T0 + 10_000))['flow-1']).toEqual({ exported: 5, failed: 1, latency: { 5: 3, 6: 2 } });
    });
  });
}
