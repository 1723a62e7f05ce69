/**
 * `storeFailedExports`: settles each export that failed for good as a stored failed request.
 */
import type { MonoTypeOperatorFunction } from 'rxjs';
import type { ExportSink } from '../sinks/types.js';
import { isOpen, type ExportTask } from './deliver-exports.js';
import { settleTask, step } from './internal/step.js';

export interface StoreFailedExportsOptions {
  /** The sink of a dataflow (its `fail`: scrubbed reason, failed-request store, warning). */
  sinkFor: (dataflowId: string) => ExportSink;
}

/**
 * For each open task with an `error` (its last attempt failed and no retry is left), asks its
 * sink to record the failure (`sink.fail`: the failed-request store) and sets
 * `outcome: failed`. When the record cannot be stored, the task is `abandoned` (its message
 * is nak'ed and comes back). Other tasks pass through at once.
 *
 * @example
 * tasks$.pipe(retryExports({ sinkFor, limiterFor }), storeFailedExports({ sinkFor }))
 */
export function storeFailedExports(options: StoreFailedExportsOptions): MonoTypeOperatorFunction<ExportTask> {
  const { sinkFor } = options;
  return step<ExportTask, ExportTask>(() => (task, out) => {
    if (!isOpen(task) || task.error === undefined) return out.next(task);
    settleTask(
      out,
      task,
      () => sinkFor(task.job.dataflowId).fail(task.job, task.attempts, task.error),
      (outcome) => (task.outcome = outcome),
    );
  });
}
