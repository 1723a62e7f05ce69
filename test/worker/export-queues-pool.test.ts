/**
 * The worker's view of its retry queues in a pool (`scope`): the index covers the partitions
 * it owns, loaded when they are acquired; until then their exports count as queued (so nothing
 * of a partition is sent inline before what another worker queued for it is known).
 */
import { describe, expect, it } from 'vitest';
import type { QueuedExport } from '../../src/stores/retry-queue.js';
import { MemoryRetryQueue } from '../../src/stores/retry-queue.js';
import { ExportQueues } from '../../src/worker/export-queues.js';

/** Profiles `a…` are in partition 0, `b…` in partition 1. */
const scope = { partitionOf: (profileId: string) => (profileId.startsWith('a') ? 0 : 1) };
const entry = (profileId: string, version: number): QueuedExport => ({
  dataflowId: 'flow',
  destinationId: 'dest',
  profileId,
  idempotencyKey: `${profileId}-v${version}`,
  payload: {},
  version,
  attempts: 1,
  dueAt: 0,
});

describe('ExportQueues in a pool', () => {
  it("counts every export of a partition not loaded yet as queued; loads what another worker queued when the partition is acquired", async () => {
    const queue = new MemoryRetryQueue();
    await queue.enqueue(entry('a1', 1)); // queued by the partition's previous owner
    const q = await ExportQueues.open({ queue, scope });
    expect(q.isQueued('flow', 'a1')).toBe(true);
    expect(q.isQueued('flow', 'a2')).toBe(true);
    expect(q.size).toBe(0);
    await q.loadPartitions([0]);
    expect(q.isQueued('flow', 'a1')).toBe(true); // what the store holds
    expect(q.isQueued('flow', 'a2')).toBe(false); // nothing queued: inline
    expect(q.isQueued('flow', 'b1')).toBe(true); // partition 1 not loaded
    expect(q.size).toBe(1);
  });

  it('a partition lost leaves the index (the next owner drains it) and counts as queued again; a reload forgets what another owner drained', async () => {
    const queue = new MemoryRetryQueue();
    await queue.enqueue(entry('a1', 1));
    await queue.enqueue(entry('b1', 1));
    const q = await ExportQueues.open({ queue, scope });
    await q.loadPartitions([0, 1]);
    expect(q.size).toBe(2);
    q.dropPartition(0);
    expect(q.size).toBe(1);
    expect(q.isQueued('flow', 'a9')).toBe(true);
    // Meanwhile another owner drained b1 and this worker takes partition 1 again.
    await queue.settle(entry('b1', 1));
    await q.loadPartitions([1]);
    expect(q.isQueued('flow', 'b1')).toBe(false);
    expect(q.size).toBe(0);
  });

  it('adopt indexes an entry found in the store (a replay), so later exports of its profile queue behind it', async () => {
    const q = await ExportQueues.open({ queue: new MemoryRetryQueue(), scope });
    await q.loadPartitions([0]);
    expect(q.isQueued('flow', 'a5')).toBe(false);
    q.adopt(entry('a5', 3));
    expect(q.isQueued('flow', 'a5')).toBe(true);
  });
});
