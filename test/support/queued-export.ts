/**
 * A queued export for the retry-queue tests: dataflow `flow`, destination `dest`, key
 * `<profile>-v<version>`, payload `{ name: 'v<version>' }`, one attempt made, due at 1,000.
 */
import type { QueuedExport } from '../../src/stores/retry-queue.js';

export const queuedExport = (profileId: string, version: number, over: Partial<QueuedExport> = {}): QueuedExport => ({
  dataflowId: 'flow',
  destinationId: 'dest',
  profileId,
  idempotencyKey: `${profileId}-v${version}`,
  payload: { name: `v${version}` },
  version,
  attempts: 1,
  dueAt: 1_000,
  ...over,
});
