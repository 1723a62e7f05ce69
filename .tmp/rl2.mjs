import { from, lastValueFrom, toArray } from 'rxjs';
import { exportPipeline } from '../dist/worker/pipeline.js';
import { MemorySnapshotStore } from '../dist/stores/memory-snapshot-store.js';
import { Metrics } from '../dist/observability/metrics.js';
import { createLogger } from '../dist/observability/logger.js';
import { tokenBucket } from '../dist/stores/memory-rate-limiter.js';
const N = 200;
const msgs = [];
const ups = (aud) => ({ ups: { [aud]: { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } });
for (let i = 0; i < N; i++) {
  for (const [p, a] of [[`slow-${i}`, 'aud-slow'], [`fast-${i}`, 'aud-fast']])
    msgs.push({ data: JSON.stringify({ profileId: p, segmentMembership: ups(a) }), key: `k${msgs.length}`, seq: msgs.length + 1, receivedAt: 0, ack() {}, nak() { console.log('nak') }, working() {} });
}
const audiences = [{ id: 'aud-slow', name: 's', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }, { id: 'aud-fast', name: 'f', mergePolicyId: 'mp-2', createdAt: 1, updatedAt: 2 }];
const dataflows = [
  { id: 'flow-slow', destinationId: 'd', audiences: [{ id: 'aud-slow' }], attributes: [], includeSegmentNames: false, includeSegmentTimestamps: false },
  { id: 'flow-fast', destinationId: 'd', audiences: [{ id: 'aud-fast' }], attributes: [], includeSegmentNames: false, includeSegmentTimestamps: false },
];
const limiters = { 'flow-slow': tokenBucket({ rate: 50 }), 'flow-fast': tokenBucket({ rate: 10000 }) };
const times = { 'flow-slow': [], 'flow-fast': [] };
const t0 = Date.now();
const sink = { retryDelays: { minDelayMs: 20, maxDelayMs: 100, retryAfterMaxMs: 100 }, attempt: async (job) => { times[job.dataflowId].push(Date.now() - t0); return { statusCode: 200 }; }, fail: async () => { throw new Error('x'); }, close: async () => {} };
const out = await lastValueFrom(from(msgs).pipe(exportPipeline({ dataflows, audiences, store: new MemorySnapshotStore(), rejected: { put: async () => {}, list: async () => [], close: async () => {} }, sinkFor: () => sink, limiterFor: (id) => limiters[id], metrics: new Metrics(), logger: createLogger({ level: 'silent' }), concurrency: 512, maxEventBytes: 1e6 }), toArray()));
console.log(out.length, Date.now() - t0, times['flow-slow'].slice(0, 10), times['flow-slow'].slice(-3));
