/**
 * `queueRetries`: a failed first attempt leaves the message — the export goes to its
 * dataflow's durable retry queue, and the message no longer waits for its retries.
 */
import type { MonoTypeOperatorFunction } from 'rxjs';
import { DeliveryError } from '../errors.js';
import type { ExportJob } from '../sinks/types.js';
import { isOpen, type ExportTask } from './deliver-exports.js';
import { isRetryable } from './retry-exports.js';
import { settleTask, step } from './internal/step.js';

/** What `queueRetries` needs of the worker's retry queues (see src/worker/export-queues.ts). */
export interface QueueRetriesTarget {
  /** Queues `job` durably after `attempts` attempts, `error` the last one's; resolves once stored. */
  enqueue(job: ExportJob, attempts: number, error: unknown): Promise<void>;
  /** An attempt of the dataflow succeeded. */
  succeeded(dataflowId: string): void;
}

export interface QueueRetriesOptions {
  queues: QueueRetriesTarget;
  /** Called for each export queued here. Must not throw. @default none */
  onQueued?: (task: ExportTask) => void;
}

/**
 * For each open task whose attempt failed with a retryable error (connection, timeout, 408,
 * 425, 429, 5xx; or a 401 answered to credentials just renewed), queues the export durably in
 * its dataflow's retry queue and settles it as `queued` — the queue's drain makes the retries
 * (SPEC §6: backoff, jitter, Retry-After) and stores it as failed after the last one. A queue
 * that cannot store it abandons the task (its message is nak'ed and comes back). A delivered
 * task tells the queues its endpoint answers (`succeeded`). Other tasks (a permanent failure
 * for `storeFailedExports`, settled, abandoned) pass through at once.
 *
 * @example
 * tasks$.pipe(attemptExports({ sinkFor }), queueRetries({ queues }), storeFailedExports({ sinkFor }))
 */
export function queueRetries(options: QueueRetriesOptions): MonoTypeOperatorFunction<ExportTask> {
  const { queues, onQueued } = options;
  return step<ExportTask, ExportTask>(() => (task, out) => {
    if (task.outcome?.status === 'delivered') queues.succeeded(task.job.dataflowId);
    const err = task.error;
    if (!isOpen(task) || err === undefined || !(isRetryable(err) || (err instanceof DeliveryError && err.credentialsRenewed === true))) {
      return out.next(task);
    }
    settleTask(
      out,
      task,
      () => queues.enqueue(task.job, task.attempts, err),
      () => {
        task.error = undefined;
        task.outcome = { status: 'queued', job: task.job, attempts: task.attempts };
        onQueued?.(task);
      },
    );
  });
}
