/**
 * The export pipeline: source messages in, settled (delivered or stored) envelopes out.
 * Built only from the operators; it does not know which stores or sinks it is given.
 */
import { EMPTY, catchError, merge, of, tap, type Observable, type OperatorFunction } from 'rxjs';
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
import type { Envelope } from '../operators/envelope.js';
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
  /** Delay before a message whose store step failed is delivered again. @default 1000 */
  retryStoreAfterMs?: number;
  /** Backfill items (SPEC §8), processed by the same per-profile actors as live updates. */
  backfill$?: Observable<Envelope>;
}

/**
 * decode → divert rejected → (with backfill items) one actor per profile (apply → detect →
 * build → deliver → acknowledge). A failure of the store step naks the message (it comes back later) and the
 * stream goes on; nothing else is held up by it.
 *
 * @example
 * source.messages$.pipe(exportPipeline(options)).subscribe()
 */
export function exportPipeline(options: PipelineOptions): OperatorFunction<SourceMessage, SettledEnvelope> {
  const { store, metrics, logger } = options;
  const retryAfter = options.retryStoreAfterMs ?? 1_000;
  let storeWarned = 0;
  // Operators are built once and reused by every actor.
  const apply = applySnapshot({ store });
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
              metrics.storeErrors++;
              // One warning per burst of store failures, not one per message.
              if (Date.now() - storeWarned > 5_000) {
                storeWarned = Date.now();
                logger.warn({ err, code: (err as { code?: string }).code }, 'snapshot store step failed; messages will be redelivered');
              }
              metrics.inFlight--;
              env.msg.nak(retryAfter);
              return EMPTY;
            }),
          ),
      }),
    );
  };
}
