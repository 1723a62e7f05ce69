/**
 * The drain of the retry queues: per dataflow, at its own pace, the retries of the exports
 * queued by the chain (SPEC §6: three attempts in all, exponential backoff with jitter,
 * `Retry-After` honoured up to the destination's cap), each through the dataflow's rate
 * limiter; a superseded export is dropped; after the last attempt (or a permanent failure)
 * the export becomes a stored failed request.
 *
 * One dataflow's queue never waits for another's: each has its own loop and its own bound
 * on attempts in flight.
 *
 * Pool mode (`ownership`): a worker drains only the entries of the partitions it owns (the
 * queue's `due` reads only those), and each attempt carries the partition's lease as its fence
 * (`job.guard`), which the HTTP sink checks right before the request leaves: a worker paused
 * past its lease, or that lost the partition while an entry waited for its permit or its
 * credentials, sends nothing (the entry stays queued for the partition's new owner). So two
 * workers never send one entry at once, and entries of a worker that died are drained by the
 * partition's next owner.
 */
import { asyncScheduler, firstValueFrom, merge, Observable, Subscription, timer, type SchedulerLike } from 'rxjs';
import { DeliveryError, hasCode } from '../errors.js';
import { AttemptHandle } from '../operators/attempt-exports.js';
import { slot } from '../operators/rate-limit.js';
import { isRetryable } from '../operators/retry-exports.js';
import { backoffDelay } from '../operators/retry-with-backoff.js';
import type { DeliveredMarks, QueuedExport } from '../stores/retry-queue.js';
import { queueKey } from '../stores/retry-queue.js';
import type { RateLimiter } from '../stores/rate-limiter.js';
import type { DeliveryOutcome, ExportJob, ExportSink } from '../sinks/types.js';
import type { ExportQueues } from './export-queues.js';

/** The defaults of `drainRetries`, named in one place. */
export const DRAIN_RETRIES_DEFAULTS = {
  /** Attempts in all (SPEC §6: the first and two retries). */
  attempts: 3,
  /** Attempts in flight at once per dataflow. */
  concurrency: 64,
  /** Longest sleep of a dataflow's loop with nothing due (a new entry wakes it at once). */
  idleMs: 1_000,
  /** Wait before a settle that the store refused is tried again. */
  storeRetryMs: 1_000,
} as const;

/** How soon a new entry wakes an idle dataflow loop, at most once per this interval. */
const NUDGE_MS = 20;

/** What the drain did with one queued export. */
export type DrainEvent =
  | { kind: 'settled'; outcome: DeliveryOutcome }
  | { kind: 'superseded'; entry: QueuedExport }
  /**
   * A queued export replaced in the queue by a newer one of its (dataflow, profile) (`n: 1`);
   * `n: -1` when the drain's attempt of it, out at that moment, delivered it or stored it as
   * failed after all (counted there instead).
   */
  | { kind: 'superseded-queued'; dataflowId: string; n: 1 | -1 }
  | { kind: 'retry'; entry: QueuedExport; error: unknown; delayMs: number }
  | { kind: 'store-error'; error: unknown };

export interface DrainRetriesOptions {
  queues: ExportQueues;
  marks: Pick<DeliveredMarks, 'get' | 'record'>;
  dataflowIds: readonly string[];
  sinkFor: (dataflowId: string) => ExportSink;
  limiterFor: (dataflowId: string) => RateLimiter;
  /**
   * Pool mode: the fence of an entry's attempt — its partition's lease as held now — or
   * undefined when this worker does not own the entry's partition (not attempted).
   * @default one host: every entry is this worker's, unfenced
   */
  ownership?: (entry: QueuedExport) => { guard: () => boolean } | undefined;
  /** Stop once `until` has emitted and every queue is empty (`run --once`). @default never */
  until?: Observable<unknown>;
  /** @default 3 */
  attempts?: number;
  /** @default 64 */
  concurrency?: number;
  /** @default 1000 */
  idleMs?: number;
  /** @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** @default Math.random */
  random?: () => number;
}

function jobOf(e: QueuedExport): ExportJob {
  return {
    dataflowId: e.dataflowId,
    destinationId: e.destinationId,
    profileId: e.profileId,
    idempotencyKey: e.idempotencyKey,
    payload: e.payload,
    eventTime: e.eventTime,
    version: e.version,
  };
}

function attemptOnce(sink: ExportSink, job: ExportJob, handle: AttemptHandle): Promise<{ statusCode: number }> {
  return sink.attempt(job, handle, { renewOn401: true }).catch((err: unknown) => {
    // A 401 answered to credentials that were just renewed: resent once at once.
    if (err instanceof DeliveryError && err.credentialsRenewed === true && !handle.cancelled) return sink.attempt(job, handle, { renewOn401: false });
    throw err;
  });
}

/**
 * Drains the retry queues; emits what it did (for metrics and logs). Unsubscribing stops it:
 * attempts in flight are cancelled, their entries stay queued (durable) for the next run.
 * Completes only with `until`, once it fired and no export is queued.
 *
 * @example
 * drainRetries({ queues, marks, dataflowIds, sinkFor, limiterFor }).subscribe((e) => metrics…)
 */
export function drainRetries(options: DrainRetriesOptions): Observable<DrainEvent> {
  const d = DRAIN_RETRIES_DEFAULTS;
  const { queues, marks, sinkFor, limiterFor } = options;
  const maxAttempts = options.attempts ?? d.attempts;
  const concurrency = options.concurrency ?? d.concurrency;
  const idleMs = options.idleMs ?? d.idleMs;
  const scheduler = options.scheduler ?? asyncScheduler;
  const random = options.random ?? Math.random;
  return new Observable<DrainEvent>((subscriber) => {
    const subs = new Subscription();
    let ending = false;
    const inFlight = new Map<string, Set<string>>();
    const wake = new Map<string, () => void>();
    const emit = (e: DrainEvent): void => {
      if (!subscriber.closed) subscriber.next(e);
    };
    const checkEnd = (): void => {
      if (!ending || queues.size > 0) return;
      for (const s of inFlight.values()) if (s.size > 0) return;
      subscriber.complete();
    };

    const handle = async (e: QueuedExport, flight: Set<string>, k: string): Promise<void> => {
      const sink = sinkFor(e.dataflowId);
      const job = jobOf(e);
      if (options.ownership) {
        const own = options.ownership(e);
        if (own === undefined) return; // another worker's partition now
        job.guard = own.guard;
      }
      // Queued elsewhere (a replay, the partition's previous owner): later exports of its profile queue behind it.
      queues.adopt(e);
      /** Resolves false when a newer export of the profile replaced `e` meanwhile. */
      const settleAs = async (retry?: Parameters<typeof queues.queue.settle>[1]): Promise<boolean> => {
        const stored = await queues.queue.settle(e, retry);
        if (!retry && stored) queues.settled(e);
        return stored;
      };
      try {
        const delivered = await marks.get(e.dataflowId, e.profileId);
        if (delivered !== undefined && delivered >= e.version) {
          // (replaced meanwhile: counted as superseded when it was replaced)
          if (await settleAs()) emit({ kind: 'superseded', entry: e });
          return;
        }
        await firstValueFrom(slot(limiterFor(e.dataflowId)));
        if (subscriber.closed) return;
        const attempts = e.attempts + 1;
        const cancel = new AttemptHandle();
        subs.add(cancel);
        let res: { statusCode: number } | undefined;
        let failure: unknown;
        try {
          res = await attemptOnce(sink, job, cancel);
        } catch (err) {
          failure = err;
        } finally {
          subs.remove(cancel);
        }
        if (subscriber.closed) return;
        if (res !== undefined) {
          queues.succeeded(e.dataflowId);
          await marks.record([{ dataflowId: e.dataflowId, profileId: e.profileId, version: e.version }]);
          const stored = await settleAs();
          emit({ kind: 'settled', outcome: { status: 'delivered', job, attempts, statusCode: res.statusCode } });
          if (!stored) emit({ kind: 'superseded-queued', dataflowId: e.dataflowId, n: -1 });
          return;
        }
        if (hasCode(failure, 'ERR_FENCED')) return;
        if (isRetryable(failure) || (failure instanceof DeliveryError && failure.credentialsRenewed === true)) {
          queues.failed(e.dataflowId);
          if (attempts < maxAttempts) {
            const delayMs = backoffDelay({
              attempt: attempts,
              ...sink.retryDelays,
              random,
              retryAfter: failure instanceof DeliveryError ? failure.retryAfterMs : undefined,
            });
            const kept = await settleAs({
              attempts,
              dueAt: scheduler.now() + delayMs,
              lastErrorCode: failure instanceof DeliveryError ? failure.code : undefined,
              lastStatus: failure instanceof DeliveryError ? failure.statusCode : undefined,
            });
            // (replaced by a newer export while this attempt was out: counted as superseded then)
            if (kept) emit({ kind: 'retry', entry: e, error: failure, delayMs });
            return;
          }
        }
        // The last attempt, or a permanent failure: a stored failed request, the queue's end.
        const outcome = await sink.fail(job, attempts, failure);
        const stored = await settleAs();
        emit({ kind: 'settled', outcome });
        if (!stored) emit({ kind: 'superseded-queued', dataflowId: e.dataflowId, n: -1 });
      } catch (err) {
        // The store refused (queue, marks or failed store): the entry stays; tried again later.
        emit({ kind: 'store-error', error: err });
        await new Promise<void>((r) => {
          const t = timer(d.storeRetryMs, scheduler).subscribe(() => {
            subs.remove(t);
            r();
          });
          subs.add(t);
        });
      } finally {
        flight.delete(k);
      }
    };

    const loop = (dataflowId: string): void => {
      const flight = new Set<string>();
      inFlight.set(dataflowId, flight);
      let busy = false;
      let again = false;
      let sleeper: Subscription | undefined;
      const run = async (): Promise<void> => {
        if (busy) {
          again = true;
          return;
        }
        busy = true;
        if (sleeper) {
          sleeper.unsubscribe();
          subs.remove(sleeper);
          sleeper = undefined;
        }
        try {
          do {
            again = false;
            if (subscriber.closed) return;
            const free = concurrency - flight.size;
            if (free <= 0) break;
            const due = await queues.queue.due(dataflowId, scheduler.now(), free + flight.size);
            for (const e of due) {
              const k = queueKey(e.dataflowId, e.profileId);
              if (flight.has(k) || flight.size >= concurrency) continue;
              flight.add(k);
              void handle(e, flight, k).then(() => {
                checkEnd();
                wake.get(dataflowId)?.();
              });
            }
          } while (again);
          if (subscriber.closed) return;
          const next = await queues.queue.nextDue(dataflowId);
          // Due now but in flight (or no slot free): a finished attempt wakes the loop.
          const now = scheduler.now();
          const wait = next === undefined || next <= now ? idleMs : Math.min(idleMs, next - now);
          sleeper = timer(wait, scheduler).subscribe(() => void run());
          subs.add(sleeper);
        } catch (err) {
          emit({ kind: 'store-error', error: err });
          sleeper = timer(d.storeRetryMs, scheduler).subscribe(() => void run());
          subs.add(sleeper);
        } finally {
          busy = false;
          checkEnd();
        }
      };
      // A new entry wakes an idle loop soon, once for a burst (a `due` read per enqueue would
      // cost a scan of the queue each).
      let soon: Subscription | undefined;
      wake.set(dataflowId, () => {
        if (soon !== undefined || flight.size >= concurrency) return;
        soon = timer(NUDGE_MS, scheduler).subscribe(() => {
          if (soon) subs.remove(soon);
          soon = undefined;
          void run();
        });
        subs.add(soon);
      });
      void run();
    };

    for (const id of options.dataflowIds) loop(id);
    subs.add(queues.nudged$.subscribe((id) => wake.get(id)?.()));
    subs.add(queues.superseded$.subscribe((x) => emit({ kind: 'superseded-queued', dataflowId: x.dataflowId, n: 1 })));
    if (options.until) {
      subs.add(
        merge(options.until).subscribe(() => {
          ending = true;
          checkEnd();
        }),
      );
    }
    return () => subs.unsubscribe();
  });
}
