/**
 * `attemptExports`: the first attempt of each export, straight to its sink.
 */
import type { MonoTypeOperatorFunction } from 'rxjs';
import { hasCode } from '../errors.js';
import type { AttemptCancellation, ExportSink } from '../sinks/types.js';
import { isOpen, type ExportTask } from './deliver-exports.js';
import { settle, step } from './internal/step.js';

export interface AttemptExportsOptions {
  /** The sink of a dataflow. */
  sinkFor: (dataflowId: string) => ExportSink;
}

/**
 * Makes one attempt (`sink.attempt`) for each open task that has not failed yet: a 2xx sets
 * `outcome: delivered`; a failure sets `error` (for the retry stage) — a `FencedError` sets
 * `abandoned` instead (the new owner of the partition exports it), and so does the limiter's
 * refusal of a new permit (`ERR_RATE_LIMITER`: it is closing; the message comes back). Tasks go on in the order
 * their attempts end. Other tasks pass through at once. Unsubscribing cancels the requests
 * in flight.
 *
 * @example
 * tasks$.pipe(rateLimit({ limiter }), attemptExports({ sinkFor: (id) => sinks.get(id)! }))
 */
export function attemptExports(options: AttemptExportsOptions): MonoTypeOperatorFunction<ExportTask> {
  const { sinkFor } = options;
  return step<ExportTask, ExportTask>(() => (task, out) => {
    if (!isOpen(task) || task.error !== undefined) return out.next(task);
    out.hold();
    const cancellation = new AttemptHandle();
    out.add(cancellation);
    task.attempts++;
    settle(
      () => sinkFor(task.job.dataflowId).attempt(task.job, cancellation),
      (res) => {
        if (out.closed) return;
        out.remove(cancellation);
        task.outcome = { status: 'delivered', job: task.job, attempts: task.attempts, statusCode: res.statusCode };
        out.next(task);
        out.release();
      },
      (err: unknown) => {
        if (out.closed) return;
        out.remove(cancellation);
        if (hasCode(err, 'ERR_FENCED') || hasCode(err, 'ERR_RATE_LIMITER')) task.abandoned = err;
        else task.error = err;
        out.next(task);
        out.release();
      },
    );
  });
}

/**
 * The cancellation of one attempt: unsubscribing the chain cancels it, and it cancels what
 * the sink attached (the transport's request). Also a teardown (`unsubscribe`).
 */
export class AttemptHandle implements AttemptCancellation {
  private target: { cancel(): void } | undefined;
  cancelled = false;

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.target?.cancel();
  }

  attach(target: { cancel(): void }): void {
    this.target = target;
    if (this.cancelled) target.cancel();
  }

  /** As a teardown of the chain. */
  unsubscribe(): void {
    this.cancel();
  }
}
