/**
 * The export pipeline: source messages in, settled (acked, rejected or nak'ed) envelopes out.
 * One chain of the operators of src/operators, composed here and subscribed once per worker;
 * it does not know which stores or sinks it is given.
 */
import { asyncScheduler, defer, EMPTY, merge, tap, type MonoTypeOperatorFunction, type Observable, type OperatorFunction, type SchedulerLike } from 'rxjs';
import type { Audience, DataflowRules } from '../domain/types.js';
import { codeOf } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { throttledWarn } from '../observability/throttled-warn.js';
import { acknowledge } from '../operators/acknowledge.js';
import { applySnapshot } from '../operators/apply-snapshot.js';
import { attemptExports } from '../operators/attempt-exports.js';
import { buildExports, type PlannedEnvelope } from '../operators/build-exports.js';
import { decodeEvents } from '../operators/decode-events.js';
import { deliverExports, type ExportTask, type SettledEnvelope } from '../operators/deliver-exports.js';
import { detectExports, type DecidedEnvelope } from '../operators/detect-exports.js';
import { divertRejected } from '../operators/divert-rejected.js';
import { filterExports, type ExportFilter } from '../operators/filter-exports.js';
import { profileGate } from '../operators/profile-gate.js';
import { queueBehind } from '../operators/queue-behind.js';
import { queueRetries } from '../operators/queue-retries.js';
import { recordDelivered } from '../operators/record-delivered.js';
import { rateLimit } from '../operators/rate-limit.js';
import { retryExports } from '../operators/retry-exports.js';
import { storeFailedExports } from '../operators/store-failed-exports.js';
import type { ExportSink, RejectedEventStore } from '../sinks/types.js';
import type { RateLimiter } from '../stores/rate-limiter.js';
import type { DeliveredMarks } from '../stores/retry-queue.js';
import type { ExportQueueing } from './export-queues.js';
import type { SnapshotStore } from '../stores/types.js';
import type { Envelope } from '../streams/envelope.js';
import type { SourceMessage } from '../streams/types.js';

export interface PipelineOptions {
  /** The dataflows (with their optional `filter`). */
  dataflows: ReadonlyArray<DataflowRules & { filter?: ExportFilter }>;
  audiences: readonly Audience[];
  store: SnapshotStore;
  rejected: RejectedEventStore;
  /** The sink of a dataflow (one attempt; the record of a final failure). */
  sinkFor: (dataflowId: string) => ExportSink;
  /** The rate limiter of a dataflow (per worker, or pool-wide). */
  limiterFor: (dataflowId: string) => RateLimiter;
  metrics: Metrics;
  logger: Logger;
  /** Messages inside the per-profile gate at once (`worker.maxInFlight`). */
  concurrency: number;
  maxEventBytes: number;
  /** Delay before a message whose exports could not be settled is delivered again. @default 1000 */
  retryStoreAfterMs?: number;
  /** Longest wait between two tries of a failing snapshot-store step. @default 30000 */
  storeRetryMaxMs?: number;
  /** Backfill items (SPEC §8), processed by the same per-profile gate as live updates. */
  backfill$?: Observable<Envelope>;
  /** Clock of every wait of the chain (store-step retries, HTTP retries, `rejectedAt`). @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Jitter source of the backoffs, in [0, 1). @default Math.random */
  random?: () => number;
  /**
   * The worker's retry queues and delivered-version marks (SPEC §6). With them, a failed first
   * attempt goes to its dataflow's durable queue and the message is acked once every export is
   * delivered or queued (the queue's drain, src/worker/drain-retries.ts, retries it); without
   * them, the retries run inline and the message waits for them. @default inline retries
   */
  retryQueue?: { queues: ExportQueueing; marks: Pick<DeliveredMarks, 'record'> };
}

/**
 * The chain (DESIGN.md, "The chain is the product"):
 *
 * decode → divert rejected → (with backfill items) enter the profile's gate → apply to the
 * snapshot → detect exports → filter → count decisions → build payloads → deliver each export
 * (with retry queues: queue behind → rate limit → attempt → queue retries → failed store;
 * without: rate limit → attempt → retries → failed store) → record delivered versions → acknowledge (confirm, then ack; or
 * reject; or nak) → leave the gate.
 *
 * A profile's next message enters only once the previous one left; different profiles run
 * concurrently, at most `concurrency` inside. A failing snapshot-store step is retried in
 * place (that profile waits, the others go on); a poison event is rejected and acked; an
 * export that cannot be settled naks its message, which comes back later.
 *
 * @example
 * source.messages$.pipe(exportPipeline(options)).subscribe()
 */
export function exportPipeline(options: PipelineOptions): OperatorFunction<SourceMessage, SettledEnvelope> {
  const { store, metrics, logger, sinkFor, limiterFor, dataflows } = options;
  const scheduler = options.scheduler ?? asyncScheduler;
  const random = options.random ?? Math.random;
  const warnStore = throttledWarn({ logger, intervalMs: 5_000 });
  const warnUnsettled = throttledWarn({ logger, intervalMs: 5_000 });

  const countRead = tap<SourceMessage>(() => {
    metrics.eventsRead++;
    metrics.inFlight++;
  });
  const countBackfill = tap<Envelope>(() => {
    metrics.backfillItems++;
    metrics.inFlight++;
  });
  // SPEC §10: received / excluded, once per (valid live update, dataflow), after the filters.
  const countDecisions = tap<DecidedEnvelope>((env) => {
    if (env.fault || env.backfill || env.applied.stale) return;
    for (const flow of dataflows) metrics.decided(flow.id, env.decisions.some((d) => d.dataflowId === flow.id));
  });
  const settled = (env: SettledEnvelope): void => {
    metrics.inFlight--;
    const now = scheduler.now();
    for (const o of env.outcomes) {
      if (o.status === 'queued') {
        metrics.exportQueued(o.job.dataflowId);
        continue;
      }
      const t = o.job.eventTime;
      metrics.exportSettled(o.job.dataflowId, o.status, o.attempts, t === undefined ? undefined : (now - t) / 1000);
    }
  };

  const limit = rateLimit<ExportTask>({
    limiter: (task) => limiterFor(task.job.dataflowId),
    refused: (task, err) => (task.abandoned = err),
    waited: (task, ms) => metrics.rateLimitWaited(task.job.dataflowId, ms / 1000),
  });
  const rq = options.retryQueue;
  // With retry queues: order and a failing endpoint first (queueBehind), then one attempt;
  // a retryable failure is queued (queueRetries), a permanent one stored. Without: inline retries.
  // `limit` sits directly before `attemptExports`, nothing asynchronous between: the sink dates a
  // send permit from the call of `attempt` (marbles/chain.test.ts pins it for both variants).
  const stages: Array<MonoTypeOperatorFunction<ExportTask>> = rq
    ? [queueBehind({ queues: rq.queues, scheduler }), limit, attemptExports({ sinkFor }), queueRetries({ queues: rq.queues }), storeFailedExports({ sinkFor })]
    : [limit, attemptExports({ sinkFor }), retryExports({ sinkFor, limiterFor, scheduler, random }), storeFailedExports({ sinkFor })];
  const recordMarks: MonoTypeOperatorFunction<SettledEnvelope> = rq
    ? recordDelivered({
        marks: rq.marks,
        onError: (err) => warnStore({ err, code: codeOf(err) }, 'could not record delivered versions; older failed or queued exports may be sent again'),
      })
    : (o) => o;

  return (source$) =>
    defer(() => {
      const gate = profileGate<Envelope>({ key: (env) => env.update.profileId, maxInside: options.concurrency });
      const live$ = source$.pipe(
        countRead,
        decodeEvents({ maxBytes: options.maxEventBytes }),
        divertRejected({
          store: options.rejected,
          scheduler,
          onRejected: (r) => {
            metrics.eventsRejected++;
            metrics.inFlight--;
            logger.debug({ sourceKey: r.sourceKey, code: r.code }, 'event rejected');
          },
          onStoreError: (err, r) => {
            // The message was nak'ed: it comes back and is rejected again once the store works.
            metrics.inFlight--;
            metrics.storeErrors++;
            warnStore({ err, sourceKey: r.sourceKey }, 'could not store a rejected event; it will be redelivered');
          },
        }),
      );
      return merge(live$, (options.backfill$ ?? EMPTY).pipe(countBackfill)).pipe(
        gate.enter(),
        applySnapshot({
          store,
          retryMaxDelayMs: options.storeRetryMaxMs,
          scheduler,
          random,
          onStoreError: (err) => {
            metrics.storeErrors++;
            warnStore({ err, code: codeOf(err) }, 'snapshot store step failed; retrying');
          },
        }),
        detectExports({ dataflows }),
        filterExports({ dataflows }),
        countDecisions,
        buildExports({ dataflows, audiences: options.audiences }),
        (planned$: Observable<PlannedEnvelope>) => planned$.pipe(deliverExports(...stages), recordMarks),
        acknowledge({
          store,
          rejected: options.rejected,
          nakDelayMs: options.retryStoreAfterMs,
          scheduler,
          onAcked: settled,
          onRejected: (env, r) => {
            metrics.eventsRejected++;
            metrics.inFlight--;
            logger.debug({ sourceKey: r.sourceKey, code: r.code, profileId: env.update.profileId }, 'event rejected');
          },
          onNak: (_env, err) => {
            // Fenced, or the failed-request (or rejected) store refused the record: the message
            // comes back later; the store's replay record finds its exports again.
            metrics.inFlight--;
            metrics.storeErrors++;
            warnUnsettled({ err, code: codeOf(err) }, 'an export could not be settled; the message will be redelivered');
          },
        }),
        gate.leave(),
      );
    });
}
