/**
 * `deliverExports`: fans an envelope's jobs out through the delivery stages and gathers them
 * back: the envelope goes on once every job is settled.
 */
import { Observable, type MonoTypeOperatorFunction, type OperatorFunction, type Subscriber } from 'rxjs';
import { HttpDestinationError } from '../errors.js';
import type { DeliveryOutcome, ExportJob } from '../sinks/types.js';
import type { PlannedEnvelope } from './build-exports.js';

/** A planned envelope whose every export was delivered or stored as failed (or that faulted). */
export interface SettledEnvelope extends PlannedEnvelope {
  /** One per job, in job order (empty for a faulted envelope). */
  outcomes: DeliveryOutcome[];
}

/**
 * One export on its way through the delivery stages. Each stage handles the tasks still open
 * (no `outcome`, not `abandoned`) and passes the others on untouched.
 */
export interface ExportTask {
  readonly job: ExportJob;
  /** The envelope it came from (for the stages: read only); none for a lone job (`HttpSink.send`). */
  readonly env?: PlannedEnvelope;
  /** Attempts made so far. */
  attempts: number;
  /** The failure of the last attempt, while no stage has settled it. */
  error?: unknown;
  /** Settled: delivered, or stored as failed. */
  outcome?: DeliveryOutcome;
  /** Cannot be settled now (fenced, the failed-request store down, shutting down): the message is nak'ed. */
  abandoned?: unknown;
}

/** Whether a task still needs a stage (not settled, not abandoned). */
export function isOpen(task: ExportTask): boolean {
  return task.outcome === undefined && task.abandoned === undefined;
}

/**
 * Sends each envelope's jobs (one per exporting dataflow) as `ExportTask`s through `stages`
 * — one pipeline, subscribed once for the life of the output, not once per message — and
 * emits the envelope with its `outcomes` once every task came back. Jobs of one envelope run
 * concurrently; an envelope without jobs (or faulted) goes on at once.
 *
 * A task that comes back without an outcome (abandoned, or no stage settled it) faults the
 * envelope (`unsettled`: `acknowledge` naks it, it comes back); its other tasks still finish.
 * Completes once the source has completed and every envelope is out; an error of the source
 * or of a stage errors the output; unsubscribing unsubscribes the stages (cancelling sends
 * and timers).
 *
 * The stages are the seam of delivery: today rate limit → first attempt → retries → failed
 * store; the retry stage can be replaced by one that hands the task to a durable queue and
 * settles it as "queued", without the message waiting for its retries.
 *
 * @example
 * planned$.pipe(deliverExports(rateLimit({ limiter }), attemptExports({ sinkFor }), retryExports({ sinkFor, limiterFor }), storeFailedExports({ sinkFor })))
 */
export function deliverExports(...stages: MonoTypeOperatorFunction<ExportTask>[]): OperatorFunction<PlannedEnvelope, SettledEnvelope> {
  return (source) =>
    new Observable<SettledEnvelope>((subscriber) => {
      /** Tasks still out, per envelope. */
      const left = new Map<PlannedEnvelope, number>();
      let sourceDone = false;
      let tasksIn: Subscriber<ExportTask> | null = null;
      const done = (env: PlannedEnvelope): void => {
        subscriber.next(env as SettledEnvelope);
        if (sourceDone && left.size === 0) {
          tasksIn?.complete();
          subscriber.complete();
        }
      };
      const tasks$ = stages.reduce<Observable<ExportTask>>(
        (o, stage) => stage(o),
        new Observable<ExportTask>((s) => {
          tasksIn = s;
        }),
      );
      const stagesSub = tasks$.subscribe({
        next: (task) => {
          const env = task.env as SettledEnvelope | undefined;
          if (env === undefined) return;
          const i = env.jobs.indexOf(task.job);
          if (task.outcome !== undefined) env.outcomes[i] = task.outcome;
          else if (env.fault === undefined) {
            env.fault = {
              kind: 'unsettled',
              error: task.abandoned ?? task.error ?? new HttpDestinationError('ERR_NO_OUTCOME', 'no delivery stage settled an export'),
            };
          }
          const n = (left.get(env) ?? 1) - 1;
          if (n > 0) left.set(env, n);
          else {
            left.delete(env);
            done(env);
          }
        },
        error: (err: unknown) => subscriber.error(err),
      });
      const sourceSub = source.subscribe({
        next: (env) => {
          const settled = env as SettledEnvelope;
          settled.outcomes = [];
          const { jobs } = env;
          if (env.fault || jobs.length === 0) return done(settled);
          left.set(env, jobs.length);
          // Every field a stage sets, named at once: one hidden class, no property array per task.
          for (let i = 0; i < jobs.length; i++) tasksIn?.next({ job: jobs[i]!, env, attempts: 0, error: undefined, outcome: undefined, abandoned: undefined });
        },
        error: (err: unknown) => subscriber.error(err),
        complete: () => {
          sourceDone = true;
          if (left.size === 0) {
            tasksIn?.complete();
            subscriber.complete();
          }
        },
      });
      return () => {
        sourceSub.unsubscribe();
        stagesSub.unsubscribe();
      };
    });
}
