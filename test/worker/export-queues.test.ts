/** The worker's view of its retry queues: the in-memory index, the failing dataflows, supersession events. */
import { describe, expect, it } from 'vitest';
import { DeliveryError } from '../../src/errors.js';
import type { ExportJob } from '../../src/sinks/types.js';
import { MemoryRetryQueue } from '../../src/stores/retry-queue.js';
import { ExportQueues } from '../../src/worker/export-queues.js';

const job = (profileId: string, version: number, dataflowId = 'flow'): ExportJob => ({
  dataflowId,
  destinationId: 'dest',
  profileId,
  idempotencyKey: `${profileId}-v${version}`,
  payload: {},
  version,
});
const e503 = new DeliveryError('ERR_HTTP_STATUS', 'HTTP 503', { retryable: true, statusCode: 503, retryAfterMs: 5_000 });

describe('ExportQueues', () => {
  it('indexes queued profiles, marks a dataflow failing on a failed attempt, and forgets both when its queue empties', async () => {
    let now = 1_000;
    const queue = new MemoryRetryQueue();
    const q = await ExportQueues.open({ queue, now: () => now, delayAfter: (_id, attempts, err) => (err instanceof DeliveryError ? (err.retryAfterMs ?? 0) : 0) * attempts });
    expect(q.isQueued('flow', 'p')).toBe(false);
    await q.enqueue(job('p', 1), 1, e503);
    expect(q.isQueued('flow', 'p')).toBe(true);
    expect(q.isQueued('other', 'p')).toBe(false);
    expect(q.backingOff('flow')).toBe(true);
    expect((await queue.list())[0]).toMatchObject({ dueAt: 6_000, attempts: 1, lastStatus: 503, lastErrorCode: 'ERR_HTTP_STATUS' });
    now = 7_000;
    const [entry] = await queue.due('flow', now, 10);
    expect(await queue.settle(entry!)).toBe(true);
    q.settled(entry!);
    expect(q.isQueued('flow', 'p')).toBe(false);
    expect(q.backingOff('flow')).toBe(false);
    expect([...q.depths()]).toEqual([['flow', 0]]);
  });

  it('a newer export replacing a queued one is reported as superseded; the drain settling the old one leaves the new one indexed', async () => {
    const queue = new MemoryRetryQueue();
    const q = await ExportQueues.open({ queue });
    const superseded: string[] = [];
    q.superseded$.subscribe((s) => superseded.push(s.idempotencyKey));
    await q.enqueue(job('p', 1), 1, e503);
    const [old] = await queue.due('flow', Date.now(), 10);
    await q.enqueue(job('p', 2), 0);
    expect(superseded).toEqual(['p-v1']);
    expect(await queue.settle(old!)).toBe(false);
    q.settled(old!);
    expect(q.isQueued('flow', 'p')).toBe(true);
    expect(q.size).toBe(1);
  });

  it('an export that carries the exit of the one it replaced is stored under a key of its own: the index names it, so settling it empties the queue', async () => {
    const queue = new MemoryRetryQueue();
    const q = await ExportQueues.open({ queue });
    await q.enqueue({ ...job('p', 1), payload: { segmentMembership: { ups: { a: { status: 'exited' } } } } }, 1, e503);
    await q.enqueue(job('p', 2), 0);
    await q.enqueue(job('p', 2), 0); // v2 again (a redelivery): the same merge, the same key
    const [merged] = await queue.list('flow');
    expect(merged!.idempotencyKey).not.toBe('p-v2');
    expect(await queue.settle(merged!)).toBe(true);
    q.settled(merged!);
    expect(q.isQueued('flow', 'p')).toBe(false);
    expect([...q.depths()]).toEqual([['flow', 0]]);
    expect(q.backingOff('flow')).toBe(false);
  });

  it('loads what the store holds at open (a restart queues behind it), and an export without a version is refused', async () => {
    const queue = new MemoryRetryQueue();
    await queue.enqueue({ dataflowId: 'flow', destinationId: 'd', profileId: 'p', idempotencyKey: 'k', payload: {}, version: 1, attempts: 1, dueAt: 0 });
    const q = await ExportQueues.open({ queue });
    expect(q.isQueued('flow', 'p')).toBe(true);
    await expect(q.enqueue({ ...job('x', 1), version: undefined }, 0)).rejects.toThrow(/without a version/);
    expect(q.isQueued('flow', 'x')).toBe(false);
  });
});
