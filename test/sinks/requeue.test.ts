/**
 * `requeueFailedRequests` (`failed replay --queue`): the queue's rules applied to stored failed
 * requests — superseded by a delivered mark, by an export already queued, or by a later record
 * of the same (dataflow, profile) in this replay — and the counts of its summary.
 */
import { describe, expect, it } from 'vitest';
import { requeueFailedRequests } from '../../src/sinks/requeue.js';
import type { FailedRequest, FailedRequestStore } from '../../src/sinks/types.js';
import { MemoryDeliveredMarks, MemoryRetryQueue } from '../../src/stores/retry-queue.js';
import { failedExport } from '../support/queued-export.js';

function memoryStore(records: FailedRequest[]): FailedRequestStore & { records: FailedRequest[] } {
  const s = {
    records: [...records],
    put: async (r: FailedRequest) => void s.records.push(r),
    list: async (f?: { dataflowId?: string }) => s.records.filter((r) => f?.dataflowId === undefined || r.dataflowId === f.dataflowId),
    remove: async (ids: string[]) => void (s.records = s.records.filter((r) => !ids.includes(r.id))),
    close: async () => {},
  };
  return s;
}

const record = (profileId: string, version: number, ups?: Record<string, { status: string }>): FailedRequest =>
  failedExport(profileId, version, ups ? { payload: { name: `v${version}`, segmentMembership: { ups } } } : {});

describe('requeueFailedRequests', () => {
  it('queues the newest record of each pair; older ones, delivered ones and unknown dataflows are counted apart', async () => {
    const store = memoryStore([
      // p: three records; v2 carries v1's exit over (a merged export keeps a key of its own), v3 replaces it
      record('p', 1, { a: { status: 'exited' } }),
      record('p', 2),
      record('p', 3),
      record('q', 4), // a newer state of q was delivered
      { ...record('r', 1), dataflowId: 'gone' },
    ]);
    const queue = new MemoryRetryQueue();
    const marks = new MemoryDeliveredMarks();
    await marks.record([{ dataflowId: 'flow', profileId: 'q', version: 5 }]);
    const s = await requeueFailedRequests({ store, queue, marks, dataflowIds: ['flow'], now: () => 7 });
    expect(s).toEqual({ stored: 5, selected: 5, queued: 1, superseded: 3, skipped: 1 });
    const queued = await queue.list('flow');
    expect(queued.map((e) => [e.profileId, e.version])).toEqual([['p', 3]]);
    expect(queued[0]!.payload).toEqual({ name: 'v3', segmentMembership: { ups: { a: { status: 'exited' } } } });
    expect(store.records.map((r) => r.id)).toEqual(['r-v1']);
  });
});
