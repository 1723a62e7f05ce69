/**
 * Publishing backfill items to JetStream (a pool's backfill): apart from ./backfill-item.ts so
 * that what reads items (every worker, the embedded default included) does not load the NATS
 * client.
 */
import { jetstream } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { partitionSubject } from '../domain/partition.js';
import { BACKFILL_HEADER, backfillMsgId, encodeBackfillItem } from './backfill-item.js';
import type { BackfillItemRef } from './types.js';

/**
 * Publishes a page of backfill items to their partitions' subjects (`<subject>.<partition>`),
 * each with its stable `Nats-Msg-Id`, and resolves once JetStream acked every one (a
 * duplicate ack counts: the item is in the stream already). Rejects on the first failure.
 */
export function backfillPublisher(options: { nc: NatsConnection; subject: string; partitions: number; timeoutMs?: number }): (items: BackfillItemRef[]) => Promise<void> {
  const js = jetstream(options.nc);
  return async (items) => {
    await Promise.all(
      items.map((item) => {
        const h = headers();
        h.set(BACKFILL_HEADER, item.id);
        return js.publish(partitionSubject(options.subject, item.profileId, options.partitions), encodeBackfillItem(item), {
          msgID: backfillMsgId(item.id, item.profileId),
          headers: h,
          ...(options.timeoutMs !== undefined && { timeout: options.timeoutMs }),
        });
      }),
    );
  };
}
