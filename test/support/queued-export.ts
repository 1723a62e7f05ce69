/**
 * A queued export for the retry-queue tests: dataflow `flow`, destination `dest`, key
 * `<profile>-v<version>`, payload `{ name: 'v<version>' }`, one attempt made, due at 1,000;
 * and the failed request of the same export (`failedExport`: id = key, three attempts, HTTP 500).
 */
import type { FailedRequest } from '../../src/sinks/types.js';
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

export const failedExport = (profileId: string, version: number, over: Partial<FailedRequest> = {}): FailedRequest => {
  const { dueAt: _due, ...common } = queuedExport(profileId, version);
  return {
    ...common,
    id: `${profileId}-v${version}`,
    attempts: 3,
    lastErrorCode: 'ERR_HTTP_STATUS',
    lastError: 'HTTP 500',
    failedAt: '2026-12-06T00:00:00.000Z',
    ...over,
  };
};
