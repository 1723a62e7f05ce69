/**
 * What flows through the pipeline after decoding: the source message (for ack/nak and its
 * stable key) beside the validated update it carried.
 */
import type { ProfileUpdate } from '../domain/types.js';
import type { SourceMessage } from './types.js';

export interface Envelope {
  /** The source message: acknowledged once every export it caused has settled. */
  msg: SourceMessage;
  /** The validated update decoded from `msg.data`. */
  update: ProfileUpdate;
  /**
   * Set on backfill items only: no update to apply (the update holds just the profileId);
   * the profile is exported to the target dataflow from its current snapshot.
   */
  backfill?: BackfillTarget;
}

/** A backfill item (SPEC §8): export the profile to this dataflow if it is in this audience. */
export interface BackfillTarget {
  dataflowId: string;
  audienceId: string;
}
