/**
 * A second process on a local store, for the multi-process tests of
 * test/sinks/failed-local-store.test.ts. Run as
 * `node --import tsx test/support/local-store-worker.ts '<json>'` with
 * `{ path, role: 'append', count, after? }` (once the file `after` exists, puts `count` failed
 * requests, ids `r0…`) or `{ path, role: 'drain', until, ready? }` (lists and removes what it
 * finds, as `failed replay` does, until the file `until` exists and the store is empty; creates
 * the file `ready` after its first round). Prints a JSON line with what it did.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { LocalFailedRequestStore } from '../../src/sinks/failed-local-store.js';
import type { FailedRequest } from '../../src/sinks/types.js';

const args = JSON.parse(process.argv[2] ?? '{}') as { path: string; role: 'append' | 'drain'; count?: number; until?: string; after?: string; ready?: string };
const store = new LocalFailedRequestStore({ path: args.path });

const record = (i: number): FailedRequest => ({
  id: `r${i}`,
  dataflowId: 'flow-1',
  destinationId: 'dest-1',
  profileId: `p-${i}`,
  idempotencyKey: `r${i}`,
  payload: { n: i } as unknown as FailedRequest['payload'],
  attempts: 3,
  lastErrorCode: 'ERR_HTTP_STATUS',
  lastError: 'HTTP 500',
  lastStatus: 500,
  failedAt: new Date().toISOString(),
});

if (args.role === 'append') {
  const count = args.count ?? 0;
  // Start only once the drainer runs, so the two really overlap whatever the machine's speed.
  while (args.after && !existsSync(args.after)) await new Promise((r) => setTimeout(r, 5));
  // A few at a time, as a worker's sinks store them.
  for (let i = 0; i < count; i += 5) {
    await Promise.all(Array.from({ length: Math.min(5, count - i) }, (_, k) => store.put(record(i + k))));
  }
  process.stdout.write(`${JSON.stringify({ appended: count })}\n`);
} else {
  const removed: string[] = [];
  let rounds = 0;
  /** Rounds that removed records while the appender was still writing. */
  let busyRounds = 0;
  for (;;) {
    const finished = existsSync(args.until ?? '');
    const all = await store.list();
    rounds++;
    if (rounds === 1 && args.ready) writeFileSync(args.ready, '');
    if (all.length > 0) {
      if (!finished) busyRounds++;
      await store.remove(all.map((r) => r.id));
      removed.push(...all.map((r) => r.id));
    } else if (finished) break;
    else await new Promise((r) => setTimeout(r, 2));
  }
  process.stdout.write(`${JSON.stringify({ removed, rounds, busyRounds })}\n`);
}
await store.close();
