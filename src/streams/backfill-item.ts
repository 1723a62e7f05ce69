/**
 * A backfill item on the stream (SPEC §8, pool and JetStream workers): one message per member
 * of a newly mapped audience, published by the elected backfiller to the member's partition
 * subject, so the partition's owner handles it in stream order with the profile's live
 * updates. The header `Hd-Backfill` carries the backfill id and marks the message; the body is
 * `{"dataflowId","audienceId","profileId"}`. Its `Nats-Msg-Id` is stable per (backfill,
 * member), so a member published twice (a backfiller died between its publish and its
 * checkpoint) is stored once by JetStream's de-duplication.
 */
import type { Envelope } from './envelope.js';
import type { BackfillItemRef, SourceMessage } from './types.js';

export type { BackfillItemRef };

/** The header marking a backfill item; its value is the backfill id. */
export const BACKFILL_HEADER = 'Hd-Backfill';

/** The `Nats-Msg-Id` of a backfill item: stable per backfill and member. */
export function backfillMsgId(backfillId: string, profileId: string): string {
  return `backfill|${backfillId}|${profileId}`;
}

/** The body of a backfill item. */
export function encodeBackfillItem(item: BackfillItemRef): Uint8Array {
  return Buffer.from(JSON.stringify({ dataflowId: item.dataflowId, audienceId: item.audienceId, profileId: item.profileId }));
}

/**
 * The backfill item of a message marked with `BACKFILL_HEADER` (value `id`), or undefined
 * when its body is not one (the message then goes down the chain as a live event and is
 * rejected there if it is not a valid one either).
 */
export function decodeBackfillItem(id: string, data: string | Uint8Array): BackfillItemRef | undefined {
  try {
    const body: unknown = JSON.parse(typeof data === 'string' ? data : Buffer.from(data).toString('utf8'));
    if (body === null || typeof body !== 'object') return undefined;
    const { dataflowId, audienceId, profileId } = body as Record<string, unknown>;
    if (typeof dataflowId !== 'string' || typeof audienceId !== 'string' || typeof profileId !== 'string' || profileId === '') return undefined;
    return { id, dataflowId, audienceId, profileId };
  } catch {
    return undefined;
  }
}

/**
 * The stable source key of a backfill item: the same for the item of the in-process
 * backfill and of the stream, and across republishing, so its exports carry the same
 * Idempotency-Key however often it is handled.
 */
export function backfillItemKey(item: Pick<BackfillItemRef, 'dataflowId' | 'audienceId' | 'profileId'>): string {
  return `backfill:${item.dataflowId}:${item.audienceId}:${item.profileId}`;
}

/**
 * The envelope of a backfill item read from the stream: no update to apply, the profile is
 * exported to the dataflow from its snapshot at the time the item's turn comes. Keeps the
 * message's acks, fence and watermark; its key becomes the item's stable key.
 */
export function backfillEnvelope(msg: SourceMessage & { backfill: BackfillItemRef }): Envelope {
  const item = msg.backfill;
  const keyed: SourceMessage = {
    data: msg.data,
    key: backfillItemKey(item),
    seq: msg.seq,
    receivedAt: msg.receivedAt,
    ...(msg.watermark !== undefined && { watermark: msg.watermark }),
    ...(msg.fence && { fence: msg.fence }),
    ack: () => msg.ack(),
    working: () => msg.working(),
    nak: (delayMs) => msg.nak(delayMs),
  };
  return { msg: keyed, update: { profileId: item.profileId }, backfill: { dataflowId: item.dataflowId, audienceId: item.audienceId } };
}
