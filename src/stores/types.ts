/**
 * The snapshot store: one record per profile, updated atomically. Two implementations:
 * memory (embedded default) and Redis. The pipeline never knows which.
 */
import type { AppliedUpdate, ProfileSnapshot, ProfileUpdate } from '../domain/types.js';
import type { HttpDestinationError } from '../errors.js';

export interface ApplyContext {
  /** The source message's stable key (SourceMessage.key). */
  key: string;
  /** The source message's position (SourceMessage.seq). */
  seq: number;
  /**
   * A position that increases with every update of a profile across the whole source (the
   * JetStream stream sequence), when the source has one. A message at or below the
   * profile's watermark was applied already: it is never merged again (see `ApplyResult.stale`).
   */
  watermark?: number;
  /**
   * Fencing (pool mode): the write succeeds only while the Redis key `key` still holds
   * `value` (this worker's lease of the profile's partition); otherwise `FencedError`.
   */
  fence?: { key: string; value: string };
  /**
   * Upper bound of the update's JSON size in UTF-8 bytes (`Envelope.updateBytes`), when known:
   * a store that writes no JSON (memory) measures the merged snapshot only when this bound
   * could take it past `maxSnapshotBytes`.
   */
  updateBytes?: number;
}

export interface ApplyResult extends AppliedUpdate {
  /**
   * `true` when this message had been applied before and not yet confirmed (a redelivery
   * after a crash): `before` / `after` are those of the first application, so the exports it
   * owed are found again instead of looking like "no change".
   */
  replayed: boolean;
  /**
   * `true` when the message is older than the profile's watermark and has no replay record:
   * it was applied and settled before (a redelivery whose ack was lost). Nothing is merged;
   * `before` and `after` are both the current snapshot, and nothing is to be exported.
   */
  stale?: boolean;
  /**
   * Set on a replay when newer updates of the profile were applied since: the current
   * snapshot. Exports owed by the replayed message are built from it, so the endpoint never
   * gets a state older than one it may already have.
   */
  latest?: ProfileSnapshot;
}

/** Progress of one backfill: a (dataflow, audience mapping) pair. */
export interface BackfillState {
  done: boolean;
  /** Where to resume the scan of its frozen members (`scanMembers` cursor with `frozenAs`). */
  cursor: string;
  /** Profiles sent so far (for operators; a restarted scan keeps counting). */
  sent: number;
  /** Members frozen when it began, when the store tells (`scanMembers` with `frozenAs`). */
  total?: number;
}

/** What `beginBackfill` found and did. */
export interface BackfillBegin {
  /** The state to go on from (`done` when the backfill had finished already). */
  state: BackfillState;
  /**
   * `start`: the members were frozen just now, the scan starts at `'0'`. `resume`: the
   * backfill had started (or finished) before; its frozen members are still there, nothing
   * changed. `restart`: it had started but its frozen members are gone (the store lost data):
   * they were frozen again, from the audience as it is now, and the scan starts over at `'0'`
   * (profiles already sent may be sent again; none is missed).
   */
  phase: 'start' | 'resume' | 'restart';
}

export interface SnapshotStore {
  /**
   * Set while the store has lost its data (Redis: its epoch marker is missing or changed):
   * every `apply` rejects with it (code `ERR_STORE_LOST`) until an operator runs
   * `http-destination pool reset-state`. Null or absent otherwise. For readiness checks.
   */
  readonly lost?: HttpDestinationError | null;
  /**
   * Merges `update` into the profile's snapshot atomically and returns the state before and
   * after. Until `confirm` is called for the same key, applying the same key again returns the
   * first application's result without merging twice.
   */
  apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult>;
  /** Every export of the message `key` is settled: forget its replay record. */
  confirm(profileId: string, key: string): Promise<void>;
  /** The current snapshot, or null. */
  get(profileId: string): Promise<ProfileSnapshot | null>;
  /** Profile ids currently *in* the audience, in batches. */
  members(audienceId: string, batchSize?: number): AsyncIterable<string[]>;
  /**
   * One page of the audience's members from `cursor` (`'0'` to start). The returned cursor
   * resumes after this page, also in another process; `'0'` means the scan is complete.
   *
   * Without `frozenAs`, the live member set is read: a member present for the whole scan is
   * returned at least once; one that enters or leaves meanwhile may or may not be.
   * With `frozenAs: <backfill id>`, the members frozen by `beginBackfill` are read instead
   * (`audienceId` is then not used): each exactly once, whatever entered or left since, and
   * the cursor stays valid across restarts of the store's server. Rejects with `StoreError`
   * when that frozen copy is gone (the store lost data; `beginBackfill` freezes again).
   * A store may tell the frozen copy's size as `total`.
   */
  scanMembers(audienceId: string, options: { cursor: string; count: number; frozenAs?: string }): Promise<{ ids: string[]; cursor: string; total?: number }>;
  /**
   * Starts backfill `id` of `audienceId` (SPEC §8: the members *at its start*, once), or finds
   * it started. The first call freezes the audience's current members — a copy that later
   * entries and exits do not change, read by `scanMembers(…, { frozenAs: id })` — and records
   * the state `{ done: false, cursor: '0', sent: 0 }`, in one atomic step, so workers calling
   * it at the same time share one frozen copy. See `BackfillBegin.phase` for the other cases.
   */
  beginBackfill(id: string, audienceId: string): Promise<BackfillBegin>;
  /** Backfill bookkeeping (SPEC §8), by backfill id; null when it never started. */
  getBackfill(id: string): Promise<BackfillState | null>;
  /** Records a checkpoint; a `done` state also drops the backfill's frozen members, in the same step. */
  setBackfill(id: string, state: BackfillState): Promise<void>;
  close(): Promise<void>;
}
