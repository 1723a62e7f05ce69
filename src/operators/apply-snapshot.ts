import { concatMap, from, map, type OperatorFunction } from 'rxjs';
import { emptySnapshot } from '../domain/merge.js';
import type { ProfileSnapshot } from '../domain/types.js';
import type { ApplyResult, SnapshotStore } from '../stores/types.js';
import type { Envelope } from '../streams/envelope.js';

/** An envelope whose update has been merged into the profile's snapshot. */
export interface AppliedEnvelope extends Envelope {
  applied: ApplyResult;
}

export interface ApplySnapshotOptions {
  /** Where snapshots live (memory or Redis). */
  store: SnapshotStore;
}

/**
 * Merges each update into its profile's snapshot, one at a time in arrival order, and emits
 * the envelope with the before/after states. A backfill item only reads the snapshot. A store failure errors the stream: run it
 * inside a per-profile actor (`serializeBy`) that naks the message and goes on.
 *
 * @example
 * envelopes$.pipe(applySnapshot({ store: new MemorySnapshotStore() }))
 */
export function applySnapshot(options: ApplySnapshotOptions): OperatorFunction<Envelope, AppliedEnvelope> {
  const { store } = options;
  return concatMap((env) => {
    if (env.backfill) {
      // Nothing to merge: read the snapshot as it is.
      return from(store.get(env.update.profileId)).pipe(
        map((snapshot): AppliedEnvelope => ({ ...env, applied: backfillRead(env, snapshot) })),
      );
    }
    const { key, seq, watermark, fence } = env.msg;
    return from(store.apply(env.update, { key, seq, watermark, fence })).pipe(
      map((applied): AppliedEnvelope => ({ ...env, applied })),
    );
  });
}

/**
 * What a backfill item "applies": nothing; the snapshot as it is (an empty one when the
 * profile is unknown). Shared with the fused per-message path of the worker's pipeline.
 */
export function backfillRead(env: Envelope, snapshot: ProfileSnapshot | null | undefined): ApplyResult {
  return snapshot
    ? { update: env.update, before: snapshot, after: snapshot, replayed: false }
    : { update: env.update, before: null, after: emptySnapshot(env.update.profileId), replayed: false };
}
