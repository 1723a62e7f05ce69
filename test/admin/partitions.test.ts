/**
 * `/api/partitions` as the worker builds it: the pool's leases (held, moving, free) joined with
 * the measured lag of each partition; `mode: single` off a pool. (The pool against real servers:
 * test/observability/delay-e2e.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { partitionsReport, type PartitionsSource } from '../../src/admin/api.js';
import type { SourceLag, SourceLagMonitor } from '../../src/observability/source-lag.js';

const AT = Date.UTC(2026, 11, 5, 10, 0, 5);
const monitor = (lag: SourceLag | undefined): SourceLagMonitor => ({ source: lag?.source ?? 'jetstream', latest: () => lag, measure: async () => lag, close: async () => {} });
const POOL_CONFIG = { source: { kind: 'jetstream' }, store: { kind: 'redis' } } as Parameters<typeof partitionsReport>[0];
const FILE_CONFIG = { source: { kind: 'file' }, store: { kind: 'local' } } as Parameters<typeof partitionsReport>[0];

describe('/api/partitions', () => {
  it('a pool: each partition held, moving or free, with its owner, epoch, consumer and lag', async () => {
    const w: PartitionsSource = {
      lag: monitor({
        source: 'jetstream',
        at: AT,
        partitions: [
          { partition: 0, consumer: 'hd-p0-e3', pending: 5, ackPending: 2, oldestAt: AT - 850 },
          { partition: 1, consumer: 'hd-p1-e1', pending: 0, ackPending: 0 },
          { partition: 2, pending: 4, ackPending: 0 },
        ],
      }),
      pool: {
        status: async () => ({
          pool: 'hd',
          workers: [{ id: 'a', live: true, lastSeenMs: 200, partitions: [0, 1] }, { id: 'b', live: true, partitions: [] }],
          partitions: [
            { partition: 0, owner: 'a', epoch: 3, desiredOwner: 'a' },
            { partition: 1, owner: 'a', epoch: 1, desiredOwner: 'b' },
            { partition: 2, desiredOwner: 'b' },
          ],
        }),
      },
    };
    expect(await partitionsReport(POOL_CONFIG, w)).toEqual({
      mode: 'pool',
      pool: 'hd',
      source: 'jetstream',
      partitionCount: 3,
      measuredAt: new Date(AT).toISOString(),
      workers: [{ id: 'a', live: true, lastSeenMs: 200, partitions: [0, 1] }, { id: 'b', live: true, lastSeenMs: null, partitions: [] }],
      partitions: [
        { partition: 0, state: 'held', owner: 'a', epoch: 3, movingTo: null, consumer: 'hd-p0-e3', pending: 5, ackPending: 2, oldestWaitingMs: 850 },
        { partition: 1, state: 'moving', owner: 'a', epoch: 1, movingTo: 'b', consumer: 'hd-p1-e1', pending: 0, ackPending: 0, oldestWaitingMs: 0 },
        { partition: 2, state: 'free', owner: null, epoch: null, movingTo: null, consumer: null, pending: 4, ackPending: 0, oldestWaitingMs: null },
      ],
    });
    // The lag unknown (NATS away): the leases alone, lag fields null.
    const noLag = await partitionsReport(POOL_CONFIG, { ...w, lag: monitor(undefined) });
    expect(noLag.measuredAt).toBeNull();
    expect(noLag.partitions[0]).toMatchObject({ state: 'held', pending: null, ackPending: null, oldestWaitingMs: null, consumer: null });
  });

  it('off a pool: mode single with the source lag; a pool worker still starting is an error', async () => {
    const lag = monitor({ source: 'file', at: AT, partitions: [{ pending: 1, ackPending: 3, oldestAt: AT - 1_840 }] });
    expect(await partitionsReport(FILE_CONFIG, { lag })).toEqual({
      mode: 'single', source: 'file', measuredAt: new Date(AT).toISOString(), lag: { pending: 1, ackPending: 3, oldestWaitingMs: 1_840 }, partitions: [],
    });
    expect(await partitionsReport(FILE_CONFIG, undefined)).toEqual({ mode: 'single', source: 'file', measuredAt: null, lag: null, partitions: [] });
    await expect(partitionsReport(POOL_CONFIG, undefined)).rejects.toThrow(/still starting/);
  });
});
