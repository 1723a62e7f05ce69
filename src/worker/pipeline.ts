/**
 * The export pipeline: source messages in, settled (delivered or stored) envelopes out.
 * Built from the operators' steps; it does not know which stores or sinks it is given.
 */
import { EMPTY, Observable, asyncScheduler, merge, tap, timer, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import type { Audience, DataflowRules } from '../domain/types.js';
import { HttpDestinationError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { backfillRead } from '../operators/apply-snapshot.js';
import { exportPlanner, type PlannedEnvelope } from '../operators/build-exports.js';
import { decodeEvents } from '../operators/decode-events.js';
import type { SettledEnvelope } from '../operators/deliver-exports.js';
import { decisionsFor, type DecidedEnvelope } from '../operators/detect-exports.js';
import { divertRejected } from '../operators/divert-rejected.js';
import type { Envelope } from '../streams/envelope.js';
import { serializeBy } from '../operators/serialize-by.js';
import type { DeliveryOutcome, ExportSink, RejectedEventStore } from '../sinks/types.js';
import type { ApplyResult, SnapshotStore } from '../stores/types.js';
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
  /** Clock of the store step's retry backoff. @default asyncScheduler */
  scheduler?: SchedulerLike;
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
  const { store, metrics, logger, sinkFor } = options;
  const retryAfter = options.retryStoreAfterMs ?? 1_000;
  const storeRetryMaxMs = options.storeRetryMaxMs ?? 30_000;
  const scheduler = options.scheduler ?? asyncScheduler;
  const { dataflows } = options;
  const plan = exportPlanner({ dataflows, audiences: options.audiences });
  let storeWarned = 0;
  const warnStore = (err: unknown, what: string): void => {
    metrics.storeErrors++;
    // One warning per burst of store failures, not one per message.
    if (Date.now() - storeWarned > 5_000) {
      storeWarned = Date.now();
      logger.warn({ err, code: (err as { code?: string }).code }, what);
    }
  };
  const settled = (done: SettledEnvelope): void => {
    metrics.inFlight--;
    const now = Date.now();
    for (const o of done.outcomes) {
      const t = o.job.eventTime;
      metrics.exportSettled(o.job.dataflowId, o.status, o.attempts, t === undefined ? undefined : (now - t) / 1000);
    }
  };
  const unsettled = (env: Envelope, err: unknown): void => {
    // Delivery could not settle (fenced, or the failed-request store refused the record): the
    // message comes back later; the store's replay record finds its exports again.
    warnStore(err, 'an export could not be settled; the message will be redelivered');
    metrics.inFlight--;
    env.msg.nak(retryAfter);
  };
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
          new Observable<SettledEnvelope>((subscriber) => {
            const run = new MessageRun(env, subscriber, {
              store,
              sinkFor,
              scheduler,
              storeRetryMaxMs,
              plan,
              dataflows,
              warnStore,
              metrics,
              settled,
              unsettled,
            });
            run.apply(0);
            return () => run.stop();
          }),
      }),
    );
  };
}

interface MessageRunDeps {
  store: SnapshotStore;
  sinkFor: (dataflowId: string) => ExportSink;
  scheduler: SchedulerLike;
  storeRetryMaxMs: number;
  plan: (env: DecidedEnvelope) => PlannedEnvelope['jobs'];
  dataflows: readonly DataflowRules[];
  warnStore: (err: unknown, what: string) => void;
  metrics: Metrics;
  settled: (done: SettledEnvelope) => void;
  unsettled: (env: Envelope, err: unknown) => void;
}

/**
 * One message's way through the actor, fused: apply (retried in place) → decide → build →
 * send every job → confirm → ack. The same steps as the operators `applySnapshot`,
 * `detectExports`, `buildExports`, `deliverExports` and `acknowledge` (whose own marble
 * tests pin them), run with promises and direct subscriptions instead of a chain of ~40
 * operator subscriptions per message: the chain was a fifth of the worker's CPU and most of
 * its garbage (bench/README.md). The sinks' sends are still subscriptions, so stopping the
 * run (shutdown, a lost partition) cancels requests in flight and backoff timers.
 *
 * No per-message keep-alive timer: the JetStream sources keep every open message alive
 * (`working()`) themselves.
 */
class MessageRun {
  private stopped = false;
  /** The sinks' sends in flight (one per job). */
  private readonly subs: Subscription[] = [];
  /** The store step's backoff timer, while one is pending. */
  private retry: Subscription | null = null;

  constructor(
    private readonly env: Envelope,
    private readonly out: { next(v: SettledEnvelope): void; complete(): void; readonly closed: boolean },
    private readonly deps: MessageRunDeps,
  ) {}

  stop(): void {
    this.stopped = true;
    this.retry?.unsubscribe();
    this.retry = null;
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
  }

  /** The store step, retried in place with backoff: the profile waits, the others go on. */
  apply(attempt: number): void {
    const { store } = this.deps;
    const { env } = this;
    let result: Promise<ApplyResult>;
    try {
      result = env.backfill
        ? store.get(env.update.profileId).then((snapshot) => backfillRead(env, snapshot))
        : store.apply(env.update, { key: env.msg.key, seq: env.msg.seq, watermark: env.msg.watermark, fence: env.msg.fence });
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (applied) => {
        if (!this.stopped) this.decide(applied);
      },
      (err: unknown) => {
        if (this.stopped) return;
        // Fenced: this worker lost the partition; the new owner gets the message again.
        if ((err as { code?: string }).code === 'ERR_FENCED') return this.fail(err);
        this.deps.warnStore(err, 'snapshot store step failed; retrying');
        const delay = Math.min(this.deps.storeRetryMaxMs, 100 * 2 ** Math.min(attempt + 1, 16));
        this.retry = timer(delay, this.deps.scheduler).subscribe(() => {
          this.retry = null;
          this.apply(attempt + 1);
        });
      },
    );
  }

  private decide(applied: ApplyResult): void {
    // One object per message carries it to the end: the steps fill in their fields in turn
    // (decisions, then jobs, then outcomes) instead of copying the envelope at each step.
    const done: SettledEnvelope = { ...this.env, applied, decisions: [], jobs: [], outcomes: [] };
    try {
      done.decisions = decisionsFor(done, this.deps.dataflows);
      // SPEC §10 received/excluded: every valid update, once per dataflow (not backfill items).
      if (!done.backfill) for (const f of this.deps.dataflows) this.deps.metrics.decided(f.id, done.decisions.some((d) => d.dataflowId === f.id));
      done.jobs = this.deps.plan(done);
    } catch (err) {
      return this.fail(err);
    }
    const { jobs } = done;
    if (jobs.length === 0) return this.acknowledge(done);
    // Every job (one per dataflow) is sent at once; the message settles when each has an outcome.
    const outcomes: DeliveryOutcome[] = new Array<DeliveryOutcome>(jobs.length);
    done.outcomes = outcomes;
    let left = jobs.length;
    for (let i = 0; i < jobs.length && !this.stopped; i++) {
      const job = jobs[i];
      let got = false;
      let sink: ExportSink;
      try {
        sink = this.deps.sinkFor(job.dataflowId);
      } catch (err) {
        return this.fail(err);
      }
      this.subs.push(
        sink.send(job).subscribe({
          next: (o) => {
            outcomes[i] = o;
            got = true;
          },
          error: (err: unknown) => this.fail(err),
          complete: () => {
            if (this.stopped) return;
            // A sink that completes without an outcome (e.g. shutting down) must not ack.
            if (!got) return this.fail(new HttpDestinationError('ERR_NO_OUTCOME', 'a sink completed without an outcome for an export'));
            if (--left === 0) this.acknowledge(done);
          },
        }),
      );
    }
  }

  /** The store forgets the replay record, then the message is acked (see `acknowledge`). */
  private acknowledge(done: SettledEnvelope): void {
    const ack = (): void => {
      if (this.stopped) return;
      this.stopped = true;
      this.env.msg.ack();
      this.deps.settled(done);
      this.out.next(done);
      this.out.complete();
    };
    // A failing confirm does not hold the ack back: the exports are settled; the store bounds
    // a leftover replay record.
    let confirmed: Promise<void>;
    try {
      confirmed = this.deps.store.confirm(this.env.update.profileId, this.env.msg.key);
    } catch {
      return ack();
    }
    confirmed.then(ack, ack);
  }

  /** The message could not be settled: nak it (it comes back later) and end this run. */
  private fail(err: unknown): void {
    if (this.stopped) return;
    this.stop();
    this.deps.unsettled(this.env, err);
    this.out.complete();
  }
}
