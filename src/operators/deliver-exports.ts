import {
  asyncScheduler,
  concatMap,
  forkJoin,
  ignoreElements,
  interval,
  map,
  merge,
  of,
  connect,
  materialize,
  takeUntil,
  throwIfEmpty,
  tap,
  type OperatorFunction,
  type SchedulerLike,
} from 'rxjs';
import { HttpDestinationError } from '../errors.js';
import type { DeliveryOutcome, ExportSink } from '../sinks/types.js';
import type { PlannedEnvelope } from './build-exports.js';

/** A planned envelope whose every export was delivered or stored as failed. */
export interface SettledEnvelope extends PlannedEnvelope {
  outcomes: DeliveryOutcome[];
}

export interface DeliverExportsOptions {
  /** The sink of a dataflow. */
  sinkFor: (dataflowId: string) => ExportSink;
  /**
   * While exports are still going (retries backing off), call `msg.working()` this often so
   * the source does not redeliver the message.
   * @default 10000
   */
  workingIntervalMs?: number;
  /** @default asyncScheduler */
  scheduler?: SchedulerLike;
}

/**
 * Sends an envelope's jobs (its dataflows in parallel) and emits it once every job has an
 * outcome. Envelopes are handled one at a time in order, so inside a per-profile actor a
 * later export of a profile never overtakes an earlier one, even while that one backs off.
 * A sink that completes without an outcome errors the stream (`ERR_NO_OUTCOME`), so the
 * message is redelivered instead of waiting forever.
 *
 * @example
 * planned$.pipe(deliverExports({ sinkFor: (id) => sinks.get(id)! }))
 */
export function deliverExports(options: DeliverExportsOptions): OperatorFunction<PlannedEnvelope, SettledEnvelope> {
  const { sinkFor, workingIntervalMs = 10_000, scheduler = asyncScheduler } = options;
  return concatMap((env) => {
    if (env.jobs.length === 0) return of({ ...env, outcomes: [] });
    // connect(): both branches subscribe before the sends start, so a sink that answers
    // synchronously is still subscribed (and its request sent) exactly once.
    return forkJoin(env.jobs.map((job) => sinkFor(job.dataflowId).send(job))).pipe(
      throwIfEmpty(() => new HttpDestinationError('ERR_NO_OUTCOME', 'a sink completed without an outcome for an export')),
      connect((sent$) =>
        merge(
          sent$,
          interval(workingIntervalMs, scheduler).pipe(
            tap(() => env.msg.working()),
            takeUntil(sent$.pipe(materialize())),
            ignoreElements(),
          ),
        ),
      ),
      map((outcomes): SettledEnvelope => ({ ...env, outcomes })),
    );
  });
}
