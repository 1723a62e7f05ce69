/**
 * What flows through the pipeline after decoding: the source message (for ack/nak and its
 * stable key) beside the validated update it carried.
 */
import type { ProfileUpdate } from '../domain/types.js';
import type { SourceMessage } from '../streams/types.js';

export interface Envelope {
  /** The source message: acknowledged once every export it caused has settled. */
  msg: SourceMessage;
  /** The validated update decoded from `msg.data`. */
  update: ProfileUpdate;
}
