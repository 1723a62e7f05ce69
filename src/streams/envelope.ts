/**
 * What flows through the pipeline after decoding: the source message (for ack/nak and its
 * stable key) beside the validated update it carried. One object per message goes down the
 * whole chain; each step fills in its fields (`applied`, `decisions`, `jobs`, `outcomes`).
 */
import type { ProfileUpdate } from '../domain/types.js';
import type { EventRejectedError } from '../errors.js';
import type { SourceMessage } from './types.js';

export interface Envelope {
  /** The source message: acknowledged once every export it caused has settled. */
  msg: SourceMessage;
  /** The validated update decoded from `msg.data`. */
  update: ProfileUpdate;
  /**
   * Upper bound of `update`'s JSON size in UTF-8 bytes, when it was decoded from text
   * (`decodeEvents` sets it): lets a store skip measuring a snapshot that cannot reach its size limit.
   */
  updateBytes?: number;
  /**
   * Set on backfill items only: no update to apply (the update holds just the profileId);
   * the profile is exported to the target dataflow from its current snapshot.
   */
  backfill?: BackfillTarget;
  /**
   * Set by the step that gave up on this message. Later steps let a faulted envelope through
   * untouched (it never leaves the chain, so its profile's gate is always left), and
   * `acknowledge` settles it: a rejected one is stored and acked, an unsettled one nak'ed.
   */
  fault?: EnvelopeFault;
}

/** Why a message stopped short of its exports. */
export type EnvelopeFault =
  /** A poison event (a deterministic failure of a pure step): rejected, stored, acked. */
  | { kind: 'rejected'; error: EventRejectedError }
  /** Not settled now (fenced, the failed-request store down…): nak'ed, it comes back. */
  | { kind: 'unsettled'; error: unknown };

/** A backfill item (SPEC §8): export the profile to this dataflow if it is in this audience. */
export interface BackfillTarget {
  dataflowId: string;
  audienceId: string;
}

/**
 * The envelope of a live update (what `divertRejected` emits for a decoded message). Every
 * field a later stage sets (`applied`, `decisions`, `jobs`, `outcomes`, `fault`) is named
 * here, undefined: all envelopes then share one hidden class from the start and keep those
 * fields in the object, where a field added by a stage would cost each envelope a property
 * array and a change of hidden class per stage.
 *
 * @example
 * out.next(liveEnvelope(decoded.msg, decoded.update, decoded.updateBytes))
 */
export function liveEnvelope(msg: SourceMessage, update: ProfileUpdate, updateBytes: number | undefined): Envelope {
  const env = { msg, update, updateBytes, backfill: undefined, fault: undefined, applied: undefined, decisions: undefined, jobs: undefined, outcomes: undefined };
  return env;
}
