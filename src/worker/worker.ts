/**
 * One worker: opens what the config names, runs the export pipeline over the source, and
 * stops gracefully (no new messages, in-flight exports drained, everything closed).
 */
import type { AppConfig } from '../config/load.js';
import type { Logger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { fileSource, type FileProgress, type Source } from '../streams/file.js';
import { openSourceLag, type SourceLagMonitor } from '../observability/source-lag.js';
import { backoffDelay, retryWithBackoff } from '../operators/retry-with-backoff.js';
import { DeliveryError } from '../errors.js';
import type { HttpSink } from '../sinks/http/sink.js';
import { backfillSource, beginBackfills } from '../streams/backfill.js';
import { backfillEnvelope, type BackfillItemRef } from '../streams/backfill-item.js';
import type { SourceMessage } from '../streams/types.js';
import { backfillsPublished, type Backfiller } from './backfiller.js';
import { exportPipeline } from './pipeline.js';
import type { Health } from '../observability/health.js';
import type { FailedRequestStore } from '../sinks/types.js';
import type { PoolCoordinator } from './pool.js';
import { httpThreadOf, openFailureStores, openSinks, openSnapshotStore } from './runtime.js';
import { sharedTransportThread } from '../sinks/http/thread-transport.js';
import { LocalSnapshotStore } from '../stores/local-snapshot-store.js';
import type { SnapshotStore } from '../stores/types.js';
import type { DeliveredMarks } from '../stores/retry-queue.js';
import { EMPTY, filter, map, merge, share, Subject, takeUntil, tap, type Observable } from 'rxjs';
import { throttledWarn } from '../observability/throttled-warn.js';
import { openRetryQueue, type RetryQueueHandle } from './retry-queue-stores.js';
import { drainRetries, type DrainEvent } from './drain-retries.js';

/** The warning of a config that still uses the JSON Lines failed store (issue 12). */
export const FILE_STORE_DEPRECATED =
  'failedRequests.kind: file is deprecated: not safe beside failed replay (records can be lost); use kind: local (failed list --json exports JSON Lines)';

export interface RunSummary {
  eventsRead: number;
  rejected: number;
  /** Profiles considered by backfills of newly mapped audiences. */
  backfilled: number;
  delivered: number;
  failed: number;
  /** Exports not sent because a newer state of their (dataflow, profile) went instead (SPEC §6). */
  superseded: number;
  /** Per dataflow: delivered, failed (stored) and superseded exports. */
  dataflows: Record<string, { delivered: number; failed: number; superseded: number }>;
  /** Messages left unfinished when the drain timed out (they will be redelivered). */
  abandoned: number;
  durationMs: number;
}

export interface WorkerHandle {
  /** Resolves when the worker has stopped and closed everything. */
  readonly done: Promise<RunSummary>;
  /** Graceful stop: no new messages; in-flight exports finish (up to the drain timeout). */
  stop(): void;
  readonly metrics: Metrics;
  /** The failed-request store this worker writes (the admin API lists it). */
  readonly failed: FailedRequestStore;
  /**
   * The delivered-version marks this worker records (SPEC §6), when its store keeps retry
   * queues: the admin API's replays read them, so a superseded record is not sent.
   */
  readonly marks?: DeliveredMarks;
  /** The source lag, measured while an admin server runs or a delay rule needs it. */
  readonly lag?: SourceLagMonitor;
  /** The pool coordinator (pool mode). */
  readonly pool?: PoolCoordinator;
}

export interface WorkerOptions {
  config: AppConfig;
  logger: Logger;
  /** Process the source to its current end, then stop. */
  once?: boolean;
  metrics?: Metrics;
  /** Readiness checks of what this worker opens are added to it (admin server, `/readyz`). */
  health?: Health;
}

async function openSource(
  config: AppConfig,
  once: boolean,
  logger: Logger,
  store: SnapshotStore,
  queued: () => number,
): Promise<Source & { coordinator?: PoolCoordinator; progress?: () => FileProgress | undefined }> {
  // `run --once` ends only once the backfills of the config are published to the stream, and
  // this worker's retry queues are drained (a pool worker releasing its partitions at the end
  // would leave them to the next owner).
  const endWhen = async (): Promise<boolean> => queued() === 0 && (await backfillsPublished(store, config.dataflows));
  const s = config.source;
  if (s.kind === 'file') {
    return fileSource({
      path: s.path,
      follow: !once,
      maxInFlight: config.worker.maxInFlight,
      maxLineBytes: config.worker.maxEventBytes,
      // The local store keeps the read position: a new run goes on where this one stops.
      positions: store instanceof LocalSnapshotStore ? store : undefined,
      onWarning: (message, details) => logger.warn(details, message),
    });
  }
  const { openJetStreamSource, openJetStreamPoolSource } = await import('./backbone.js');
  if (config.store.kind === 'redis') {
    return openJetStreamPoolSource(s, config.store, {
      once,
      maxInFlight: config.worker.maxInFlight,
      drainTimeoutMs: config.worker.drainTimeoutMs,
      logger,
      endWhen,
    });
  }
  return openJetStreamSource(s, {
    once,
    maxInFlight: config.worker.maxInFlight,
    drainTimeoutMs: config.worker.drainTimeoutMs,
    logger,
    endWhen,
  });
}

/**
 * Starts a worker.
 *
 * @example
 * const w = await startWorker({ config, logger, once: true });
 * const summary = await w.done;
 */
export async function startWorker(options: WorkerOptions): Promise<WorkerHandle> {
  const { config, logger } = options;
  const once = options.once ?? false;
  const metrics = options.metrics ?? new Metrics();
  const started = Date.now();

  if (config.failedRequests.kind === 'file') logger.warn({ field: 'failedRequests.kind' }, FILE_STORE_DEPRECATED);
  for (const d of config.destinations) {
    if (d.tls && !d.tls.rejectUnauthorized) {
      logger.warn({ destinationId: d.id }, 'tls.rejectUnauthorized is false: the endpoint\'s certificate is NOT verified');
    }
  }
  // Monitoring wiring: wait for the backbone (exit 1 after worker.startupTimeoutMs).
  if (config.source.kind === 'jetstream' || config.store.kind === 'redis' || config.failedRequests.kind === 'jetstream') {
    await (await import('./backbone.js')).waitForBackbone(config, logger);
  }
  const store = await openSnapshotStore(config, logger, { exclusive: true });
  const failures = await openFailureStores(config);
  const limiters = config.store.kind === 'redis' ? (await import('./backbone.js')).openRedisLimiters(config.store, logger) : undefined;
  const sinks = openSinks(config, { failed: failures.failed, logger, limiterFor: limiters?.limiterFor, metrics });
  const sinksReady = sinks.ready(); // the HTTP transport thread starts while the rest opens
  let retry: RetryQueueHandle | undefined;
  const source = await openSource(config, once, logger, store, () => retry?.queues.size ?? 0);
  // Retry queues (SPEC §6) where the store can hold them durably beside the snapshots.
  retry = await openRetryQueue(config, {
    delayAfter: (id, attempts, error) =>
      backoffDelay({ attempt: attempts, ...sinkFor(id).retryDelays, retryAfter: error instanceof DeliveryError ? error.retryAfterMs : undefined }),
    coordinator: source.coordinator,
    logger,
  });
  if (retry) metrics.queueDepth = () => retry.queues.depths();
  if (httpThreadOf(config)) metrics.transportThreadTroubles = () => Object.entries(sharedTransportThread().troubles);
  // Monitoring wiring: readiness checks of what was opened.
  if (options.health) {
    const { checksFor } = await import('../observability/health-probes.js');
    for (const check of checksFor(config, { coordinator: source.coordinator })) options.health.add(check);
    options.health.ready();
  }
  // Monitoring wiring: the source lag (gauges, delay alerts, /api/partitions).
  const lag =
    options.health !== undefined || config.alerts?.rules.some((r) => r.kind === 'delay')
      ? await openSourceLag(config, source, { metrics, logger })
      : undefined;

  const sinkFor = (id: string): HttpSink => {
    const sink = sinks.get(id);
    if (!sink) throw new Error(`no sink for dataflow ${id}`);
    return sink;
  };
  let abandoned = 0;
  let drainTimer: NodeJS.Timeout | undefined;
  let resolveStopped!: () => void;
  let rejectStopped!: (err: unknown) => void;
  const stopped = new Promise<void>((res, rej) => {
    resolveStopped = res;
    rejectStopped = rej;
  });

  // Freeze every new mapping's members before the first live update is applied (SPEC §8: the
  // profiles already in the audience, once). A store that fails here is retried by the
  // backfill source itself, which then begins them lazily.
  try {
    for (const b of await beginBackfills({ store, dataflows: config.dataflows })) {
      if (b.phase === 'restart') logger.warn(b, 'backfill restart: its frozen member list was lost (store data loss); frozen again, scanning from the start');
    }
  } catch (err) {
    logger.warn({ err }, 'could not begin the backfills at start; they begin when the store answers');
  }

  // SPEC §8. JetStream: the elected backfiller publishes one item per member to the member's
  // partition, and the items come back from the source in stream order with the live updates
  // (backfiller.ts). File source (the embedded default): this process is the stream, and the
  // same walk emits the items into the chain directly (`backfillSource`).
  const onStream = config.source.kind === 'jetstream';
  let backfiller: Backfiller | undefined;
  if (config.source.kind === 'jetstream') {
    const { openStreamBackfiller } = await import('./stream-backfill.js');
    const workerId = source.coordinator?.workerId ?? `${process.pid}`;
    backfiller = openStreamBackfiller({ config, source: config.source, store, logger, workerId });
  }
  const messages$ = source.messages$.pipe(share());
  let lastProgressLine = 0;
  const isItem = (m: SourceMessage): m is SourceMessage & { backfill: BackfillItemRef } => m.backfill !== undefined;
  const local$ = onStream
    ? EMPTY
    : backfillSource({
        store,
        dataflows: config.dataflows,
        onProgress: (e) => {
          if (e.phase === 'restart') logger.warn(e, 'backfill restart: its frozen member list was lost (store data loss); frozen again, scanning from the start');
          else if (e.phase === 'progress') {
            // At most one progress line per backfill every 2 s.
            if (Date.now() - lastProgressLine < 2_000) return;
            lastProgressLine = Date.now();
            logger.info(e, 'backfill progress');
          } else if (e.phase !== 'start' || e.sent > 0) logger.info(e, `backfill ${e.phase}`);
        },
      }).pipe(
        // A store outage during a backfill: start again from the last checkpoint.
        retryWithBackoff({
          retries: Infinity,
          minDelayMs: 1_000,
          maxDelayMs: 30_000,
          onRetry: ({ error, delayMs }) => logger.warn({ err: error, delayMs }, 'backfill interrupted; resuming from its last checkpoint'),
        }),
      );

  const liveDone = new Subject<void>();
  const stopping = new Subject<void>();
  const warnDrain = throttledWarn({ logger, intervalMs: 5_000 });
  const drain$: Observable<DrainEvent> = retry
    ? drainRetries({
        queues: retry.queues,
        marks: retry.marks,
        dataflowIds: config.dataflows.map((f) => f.id),
        sinkFor,
        limiterFor: (id) => sinkFor(id).limiter,
        ownership: retry.ownership,
        // `run --once`: the queued exports are finished (delivered or stored as failed) before it ends.
        until: once ? liveDone : undefined,
      }).pipe(
        tap((e) => {
          if (e.kind === 'settled') {
            const t = e.outcome.job.eventTime;
            if (e.outcome.status !== 'queued') metrics.exportSettled(e.outcome.job.dataflowId, e.outcome.status, e.outcome.attempts, t === undefined ? undefined : (Date.now() - t) / 1000);
          } else if (e.kind === 'superseded') metrics.exportSuperseded(e.entry.dataflowId);
          else if (e.kind === 'superseded-queued') metrics.exportSuperseded(e.dataflowId, e.n);
          else if (e.kind === 'store-error') {
            metrics.storeErrors++;
            warnDrain({ err: e.error }, 'retry queue: a store step failed; the export stays queued and is tried again');
          }
        }),
        takeUntil(stopping),
      )
    : EMPTY;

  // The live messages are the chain's input (subscribed first, which connects the source);
  // the stream's backfill items join them in the order they arrived.
  const live$ = messages$
    .pipe(
      filter((m) => !isItem(m)),
      exportPipeline({
        dataflows: config.dataflows,
        audiences: config.audiences,
        store,
        rejected: failures.rejected,
        sinkFor,
        limiterFor: (id) => sinkFor(id).limiter,
        metrics,
        logger,
        concurrency: config.worker.maxInFlight,
        maxEventBytes: config.worker.maxEventBytes,
        backfill$: merge(messages$.pipe(filter(isItem), map(backfillEnvelope)), local$),
        retryQueue: retry,
      }),
      tap({ complete: () => liveDone.next() }),
    );
  // No rate-limit permit before the transport thread takes requests (worker.httpThread).
  await sinksReady;
  const subscription = merge(live$, drain$).subscribe({
    error: (err: unknown) => rejectStopped(err),
    complete: () => resolveStopped(),
  });

  const stop = (): void => {
    if (drainTimer) return;
    options.health?.stop();
    logger.info({ inFlight: metrics.inFlight }, 'stopping: draining in-flight exports');
    source.stop();
    // The retry queues stay on disk for the next run; attempts in flight are cancelled.
    stopping.next();
    drainTimer = setTimeout(() => {
      abandoned = metrics.inFlight;
      logger.warn({ abandoned }, 'drain timeout: unfinished messages will be redelivered');
      subscription.unsubscribe();
      resolveStopped();
    }, config.worker.drainTimeoutMs);
  };

  const done = (async (): Promise<RunSummary> => {
    try {
      await stopped;
    } finally {
      if (drainTimer) clearTimeout(drainTimer);
      subscription.unsubscribe();
      await backfiller?.stop();
      await Promise.allSettled([sinks.close(), store.close(), failures.close(), limiters?.close(), lag?.close(), retry?.close()]);
    }
    const totals = metrics.totals();
    const dataflows: RunSummary['dataflows'] = {};
    let superseded = 0;
    for (const flow of config.dataflows) {
      const c = metrics.flow(flow.id);
      dataflows[flow.id] = { delivered: c.delivered, failed: c.failed, superseded: c.superseded };
      superseded += c.superseded;
    }
    return {
      eventsRead: metrics.eventsRead,
      rejected: metrics.eventsRejected,
      backfilled: metrics.backfillItems,
      delivered: totals.delivered,
      failed: totals.failed,
      superseded,
      dataflows,
      abandoned,
      durationMs: Date.now() - started,
    };
  })();

  return { done, stop, metrics, failed: failures.failed, marks: retry?.marks, lag, pool: source.coordinator };
}

