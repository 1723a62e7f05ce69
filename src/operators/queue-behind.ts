/**
 * `queueBehind`: the first stage of delivery with retry queues — stamps each export's version
 * and sends to the retry queue, without an attempt, what must wait there.
 */
import { asyncScheduler, type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs';
import type { ExportJob } from '../sinks/types.js';
import { isOpen, type ExportTask } from './deliver-exports.js';
import { settleTask, step } from './internal/step.js';

/** What `queueBehind` needs of the worker's retry queues (see src/worker/export-queues.ts). */
export interface QueueBehindTarget {
  /** Whether an export of (dataflow, profile) is queued. Synchronous: no store round-trip. */
  isQueued(dataflowId: string, profileId: string): boolean;
  /** Whether the dataflow's endpoint is failing (its exports go straight to the queue). */
  backingOff(dataflowId: string): boolean;
  /** Queues `job` durably; resolves once stored. */
  enqueue(job: ExportJob, attempts: number): Promise<void>;
}

export interface QueueBehindOptions {
  queues: QueueBehindTarget;
  /** Clock of the versions (ms). @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Called for each export queued here. Must not throw. @default none */
  onQueued?: (task: ExportTask) => void;
}

/**
 * For each open task not attempted yet:
 * - stamps `job.version` (when unset): the time the state was built, in µs, strictly
 *   increasing in this process — a state built later is newer (one profile is built by one
 *   worker at a time, in order; a takeover happens only after a lease of seconds);
 * - when its (dataflow, profile) already has an export in the retry queue (order: it must not
 *   overtake it), or its dataflow's endpoint is failing (the queue probes it; the message does
 *   not wait), queues it durably and settles it as `queued`; a queue that cannot store it
 *   abandons the task (its message is nak'ed and comes back).
 * Other tasks pass through at once, synchronously: the hot path asks no store.
 *
 * @example
 * tasks$.pipe(queueBehind({ queues }), rateLimit({ limiter }), attemptExports({ sinkFor }), queueRetries({ queues }))
 */
export function queueBehind(options: QueueBehindOptions): MonoTypeOperatorFunction<ExportTask> {
  const { queues, onQueued } = options;
  const scheduler = options.scheduler ?? asyncScheduler;
  return step<ExportTask, ExportTask>(() => {
    let last = 0;
    return (task, out) => {
      if (!isOpen(task) || task.attempts > 0 || task.error !== undefined) return out.next(task);
      const { job } = task;
      if (job.version === undefined) {
        last = Math.max(Math.floor(scheduler.now() * 1000), last + 1);
        job.version = last;
      }
      if (!queues.isQueued(job.dataflowId, job.profileId) && !queues.backingOff(job.dataflowId)) return out.next(task);
      settleTask(
        out,
        task,
        () => queues.enqueue(job, task.attempts),
        () => {
          task.outcome = { status: 'queued', job, attempts: task.attempts };
          onQueued?.(task);
        },
      );
    };
  });
}
