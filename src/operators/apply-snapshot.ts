/**
 * `applySnapshot`: merges each update into its profile's snapshot in the store.
 */
import { asyncScheduler, type OperatorFunction, type SchedulerLike, type Subscription } from 'rxjs';
import { emptySnapshot } from '../domain/merge.js';
import type { ProfileSnapshot } from '../domain/types.js';
import { EventRejectedError, hasCode } from '../errors.js';
import type { ApplyResult, SnapshotStore } from '../stores/types.js';
import type { Envelope } from '../streams/envelope.js';
import { backoffDelay } from './retry-with-backoff.js';
import { settle, step } from './internal/step.js';

/** An envelope whose update has been merged into the profile's snapshot. */
export interface AppliedEnvelope extends Envelope {
  applied: ApplyResult;
}

export interface ApplySnapshotOptions {
  /** Where snapshots live (memory, local or Redis). */
  store: Pick<SnapshotStore, 'apply' | 'get'>;
  /** First wait before a failing store step is tried again, in ms. @default 200 */
  retryMinDelayMs?: number;
  /** Longest wait between two tries of a failing store step, in ms. @default 30_000 */
  retryMaxDelayMs?: number;
  /** Told of each failing try before its wait (count it, warn). Must not throw. @default none */
  onStoreError?: (err: unknown, env: Envelope) => void;
  /** Clock of the waits. @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Jitter source in [0, 1). @default Math.random */
  random?: () => number;
}

/** The defaults of `applySnapshot`, named in one place. */
export const APPLY_SNAPSHOT_DEFAULTS = {
  retryMinDelayMs: 200,
  retryMaxDelayMs: 30_000,
  scheduler: asyncScheduler as SchedulerLike,
  random: Math.random,
} as const;

/**
 * Merges each update into its profile's snapshot (a backfill item only reads it) and emits the
 * same envelope with `applied` (before/after states) set, as soon as its store step answers:
 * values of different profiles run concurrently (order within a profile is the gate's job).
 *
 * A failing store step is tried again in place after a jittered exponential wait (that message
 * waits, the others go on), except:
 * - `EventRejectedError` (the merge refused the event: a prototype-named namespace, a snapshot
 *   over its size limit): the envelope goes on with `fault: rejected` — never retried;
 * - `FencedError` (`ERR_FENCED`, this worker lost the partition): `fault: unsettled` — nak'ed,
 *   the new owner gets it.
 * A faulted envelope passes through untouched. Unsubscribing cancels the waits.
 *
 * @example
 * envelopes$.pipe(applySnapshot({ store: new MemorySnapshotStore() }))
 */
export function applySnapshot(options: ApplySnapshotOptions): OperatorFunction<Envelope, AppliedEnvelope> {
  const d = APPLY_SNAPSHOT_DEFAULTS;
  const { store, onStoreError } = options;
  const minDelayMs = options.retryMinDelayMs ?? d.retryMinDelayMs;
  const maxDelayMs = options.retryMaxDelayMs ?? d.retryMaxDelayMs;
  const scheduler = options.scheduler ?? d.scheduler;
  const random = options.random ?? d.random;
  // The envelope is the step's output too: `applied` is filled in on the same object.
  return step<Envelope, AppliedEnvelope>(() => (env, out) => {
    if (env.fault) return out.next(env as AppliedEnvelope);
    out.hold();
    let attempt = 0;
    const done = (applied: ApplyResult): void => {
      if (out.closed) return;
      (env as AppliedEnvelope).applied = applied;
      out.next(env as AppliedEnvelope);
      out.release();
    };
    const failed = (err: unknown): void => {
      if (out.closed) return;
      if (err instanceof EventRejectedError) {
        env.fault = { kind: 'rejected', error: err };
      } else if (hasCode(err, 'ERR_FENCED')) {
        env.fault = { kind: 'unsettled', error: err };
      } else {
        onStoreError?.(err, env);
        attempt++;
        const wait: Subscription = scheduler.schedule(() => {
          out.remove(wait);
          tryOnce();
        }, backoffDelay({ attempt, minDelayMs, maxDelayMs, random }));
        out.add(wait);
        return;
      }
      out.next(env as AppliedEnvelope);
      out.release();
    };
    // `settle`, not `.then` chains: a store's synchronous answer stays synchronous.
    const tryOnce = env.backfill
      ? (): void => settle(() => store.get(env.update.profileId), (snapshot) => done(backfillRead(env, snapshot)), failed)
      : (): void =>
          settle(() => store.apply(env.update, {
                key: env.msg.key,
                seq: env.msg.seq,
                watermark: env.msg.watermark,
                fence: env.msg.fence,
                updateBytes: env.updateBytes,
              }), done, failed);
    tryOnce();
  });
}

/**
 * What a backfill item "applies": nothing; the snapshot as it is (an empty one when the
 * profile is unknown).
 */
export function backfillRead(env: Envelope, snapshot: ProfileSnapshot | null | undefined): ApplyResult {
  return snapshot
    ? { update: env.update, before: snapshot, after: snapshot, replayed: false }
    : { update: env.update, before: null, after: emptySnapshot(env.update.profileId), replayed: false };
}
