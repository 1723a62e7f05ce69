/**
 * A second process adding to a local store's figures, for the multi-process case of
 * test/observability/figures-store.test.ts. Run as
 * `node --import tsx test/observability/figures-local-worker.ts '{"path":…,"count":N,"at":T}'`:
 * prints `ready` once the store is open, then adds N deltas (one failed request, one rejected event, latency bucket 4 each), one flush each.
 */
import { LocalFiguresStore } from '../../src/observability/figures-local.js';

const args = JSON.parse(process.argv[2] ?? '{}') as { path: string; count: number; at: number };
const store = new LocalFiguresStore({ path: args.path });
process.stdout.write('ready\n');
for (let i = 0; i < args.count; i++) {
  await store.add({ rejected: 1, flows: [{ dataflowId: 'flow-1', counts: { received: 1, exported: 0, excluded: 0, failed: 1 }, latency: { 4: 1 }, lastDeliveredAt: 0 }] }, args.at + i);
}
await store.close();
