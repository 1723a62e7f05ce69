/**
 * The export pipeline: source messages in, settled (delivered or stored) envelopes out.
 * Built only from the operators; it does not know which stores or sinks it is given.
 */
import { EMPTY, catchError, merge, of, retry, tap, timer, type Observable, type OperatorFunction } from 'rxjs';
import type { Audience, DataflowRules } from '../domain/types.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { acknowledge } from '../operators/acknowledge.js';
import { applySnapshot } from '../operators/apply-snapshot.js';
import { buildExports } from '../operators/build-exports.js';
import { decodeEvents } from '../operators/decode-events.js';
import { deliverExports, type SettledEnvelope } from '../operators/deliver-exports.js';
import { detectExports } from '../operators/detect-exports.js';
import { divertRejected } from '../operators/divert-rejected.js';
import type { Envelope } from '../streams/envelope.js';
import { serializeBy } from '../operators/serialize-by.js';
import type { ExportSink, RejectedEventStore } from '../sinks/types.js';
import type { SnapshotStore } from '../stores/types.js';
import type { SourceMessage } from '../streams/types.js';

export interface PipelineOptions {
  dataflows: readonly DataflowRules[];
  audiences: readonly Audience[];
  store: SnapshotStore;
  rejected: RejectedEventStore;
  sinkFor: (dataflowId: string) => ExportSink;
  metrics: Metrics;
  logger: Logger;
  /** Profiles processed at once. */
  concurrency: number;
  maxEventBytes: number;
  /** Delay before a message whose exports could not be settled is delivered again. @default 1000 */
  retryStoreAfterMs?: number;
  /** Longest wait between two tries of a failing snapshot-store step. @default 30000 */
  storeRetryMaxMs?: number;
  /** Backfill items (SPEC §8), processed by the same per-profile actors as live updates. */
  backfill$?: Observable<Envelope>;
}

/**
 * decode → divert rejected → (with backfill items) one actor per profile (apply → detect →
 * build → deliver → acknowledge). A failing snapshot-store step is retried in place with
 * backoff (that profile waits, the others go on); an export that cannot be settled naks its
 * message, which comes back later. Nothing else is held up.
 *
 * @example
 * source.messages$.pipe(exportPipeline(options)).subscribe()
 */
export function exportPipeline(options: PipelineOptions): OperatorFunction<SourceMessage, SettledEnvelope> {
  const { store, metrics, logger } = options;
  const retryAfter = options.retryStoreAfterMs ?? 1_000;
  const storeRetryMaxMs = options.storeRetryMaxMs ?? 30_000;
  let storeWarned = 0;
  // Operators are built once and reused by every actor.
  // A store failure (Redis down, a conflict storm) is retried in place with backoff, so a
  // profile's later updates wait behind it and per-profile order holds through the outage.
  const warnStore = (err: unknown, what: string): void => {
    metrics.storeErrors++;
    // One warning per burst of store failures, not one per message.
    if (Date.now() - storeWarned > 5_000) {
      storeWarned = Date.now();
      logger.warn({ err, code: (err as { code?: string }).code }, what);
    }
  };
  const applyStep = applySnapshot({ store });
  const apply = (env$: Observable<Envelope>) =>
    env$.pipe(
      applyStep,
      retry({
        delay: (err: unknown, n: number) => {
          // Fenced: this worker lost the partition; the new owner gets the message again.
          if ((err as { code?: string }).code === 'ERR_FENCED') throw err;
          warnStore(err, 'snapshot store step failed; retrying');
          return timer(Math.min(storeRetryMaxMs, 100 * 2 ** Math.min(n, 16)));
        },
      }),
    );
  const detect = detectExports({ dataflows: options.dataflows });
  const build = buildExports({ dataflows: options.dataflows, audiences: options.audiences });
  const deliver = deliverExports({ sinkFor: options.sinkFor });
  const ack = acknowledge({ store });
  const backfill$ = (options.backfill$ ?? EMPTY).pipe(
    tap(() => {
      metrics.backfillItems++;
      metrics.inFlight++;
    }),
  );
  return (source$) => {
    const live$ = source$.pipe(
      tap(() => {
        metrics.eventsRead++;
        metrics.inFlight++;
      }),
      decodeEvents({ maxBytes: options.maxEventBytes }),
      divertRejected({
        store: options.rejected,
        onRejected: (r) => {
          metrics.eventsRejected++;
          metrics.inFlight--;
          logger.debug({ sourceKey: r.sourceKey, code: r.code }, 'event rejected');
        },
        onStoreError: (err, r) => {
          // The message was nak'ed: it comes back and is rejected again once the store works.
          metrics.inFlight--;
          metrics.storeErrors++;
          logger.warn({ err, sourceKey: r.sourceKey }, 'could not store a rejected event; it will be redelivered');
        },
      }),
    );
    return merge(live$, backfill$).pipe(
      serializeBy({
        key: (env) => env.update.profileId,
        concurrency: options.concurrency,
        project: (env) =>
          of(env).pipe(
            apply,
            detect,
            build,
            deliver,
            ack,
            tap((settled) => {
              metrics.inFlight--;
              const now = Date.now();
              for (const o of settled.outcomes) {
                const t = o.job.eventTime;
                metrics.exportSettled(o.job.dataflowId, o.status, o.attempts, t === undefined ? undefined : (now - t) / 1000);
              }
            }),
            catchError((err: unknown) => {
              // Delivery could not settle (the failed-request store refused the record): the
              // message comes back later; the store's replay record finds its exports again.
              warnStore(err, 'an export could not be settled; the message will be redelivered');
              metrics.inFlight--;
              env.msg.nak(retryAfter);
              return EMPTY;
            }),
          ),
      }),
    );
  };
}
