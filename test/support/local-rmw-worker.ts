/**
 * One of two processes doing read-modify-writes on one local store at once, for
 * test/stores/local-two-process.test.ts. Run as
 * `node --import tsx test/support/local-rmw-worker.ts '<json>'` with
 * `{ path, role, count, tag, ready, go }`: opens the store, creates the file `ready`, waits for
 * the file `go`, then (five calls at a time, as a worker makes them):
 * - `alerts`: raises the alerts `a0…a<count-1>` (evaluated at 1) and prints the ids this process raised;
 * - `failed`: puts `count` failed requests with ids `<tag>-<i>`;
 * - `queue`: enqueues, for the pairs (flow, q0…q9), versions `2i + offset` (offset 0 or 1 by
 *   `tag`), i = 0…count-1.
 * Prints one JSON line with what it did.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { LocalAlertStateStore } from '../../src/observability/alerts-local.js';
import { LocalFailedRequestStore } from '../../src/sinks/failed-local-store.js';
import { LocalRetryQueue } from '../../src/stores/local-retry-queue.js';

const args = JSON.parse(process.argv[2] ?? '{}') as { path: string; role: 'alerts' | 'failed' | 'queue'; count: number; tag: string; ready: string; go: string };

const store =
  args.role === 'alerts'
    ? new LocalAlertStateStore({ path: args.path })
    : args.role === 'failed'
      ? new LocalFailedRequestStore({ path: args.path })
      : new LocalRetryQueue({ path: args.path });
writeFileSync(args.ready, '');
while (!existsSync(args.go)) await new Promise((r) => setTimeout(r, 1));

const out: string[] = [];
const one = async (i: number): Promise<void> => {
  if (store instanceof LocalAlertStateStore) {
    const alert = { alertId: `a${i}`, rule: 'r', kind: 'failedRequests' as const, dataflowId: 'flow', since: '2026-12-06T00:00:00.000Z', value: 1, threshold: 1, message: `a${i}` };
    if (await store.raise(alert, 1)) out.push(alert.alertId);
  } else if (store instanceof LocalFailedRequestStore) {
    const id = `${args.tag}-${i}`;
    await store.put({ id, dataflowId: 'flow', destinationId: 'dest', profileId: `p-${i}`, idempotencyKey: id, payload: {}, attempts: 3, lastErrorCode: 'ERR_HTTP_STATUS', lastError: 'HTTP 500', failedAt: '2026-12-06T00:00:00.000Z' });
  } else {
    const version = 2 * i + (args.tag === 'b' ? 1 : 0);
    const profileId = `q${i % 10}`;
    await store.enqueue({ dataflowId: 'flow', destinationId: 'dest', profileId, idempotencyKey: `${profileId}-v${version}`, payload: {}, version, attempts: 1, dueAt: 1_000 + version });
  }
};
for (let i = 0; i < args.count; i += 5) await Promise.all(Array.from({ length: Math.min(5, args.count - i) }, (_, k) => one(i + k)));
await store.close();
process.stdout.write(`${JSON.stringify({ done: args.count, out })}\n`);
