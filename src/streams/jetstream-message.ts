/**
 * A JetStream message as the source hands it on (jetstream.ts): a `SourceMessage` whose
 * `ack`/`nak`/`working` map to the JetStream message, counted until it is settled.
 */
import type { JsMsg } from '@nats-io/jetstream';
import type { Subject } from 'rxjs';
import { BACKFILL_HEADER, decodeBackfillItem } from './backfill-item.js';
import type { SourceMessage } from './types.js';

/** The messages a subscription emitted and not yet acked or nak'ed; `settled$` fires at zero. */
export interface Outstanding {
  count: number;
  readonly settled$: Subject<void>;
}

/**
 * `key` is `js:<stream>:<stream sequence>`, `seq` the stream sequence, `data` the bytes; a
 * backfill item (header `Hd-Backfill`) carries its `backfill` reference. The first `ack` or
 * `nak` settles it (later ones do nothing); after the connection closed they are dropped (the
 * message is redelivered).
 */
export function toSourceMessage(m: JsMsg, stream: string, receivedAt: number, open: Outstanding): SourceMessage {
  const seq = m.info.streamSequence;
  let settled = false;
  open.count++;
  const settle = (): boolean => {
    if (settled) return false;
    settled = true;
    open.count--;
    if (open.count === 0) open.settled$.next();
    return true;
  };
  const attempt = (f: () => void): void => {
    try {
      f();
    } catch {
      /* connection closed */
    }
  };
  const backfillId = m.headers?.get(BACKFILL_HEADER);
  const backfill = backfillId ? decodeBackfillItem(backfillId, m.data) : undefined;
  return {
    data: m.data,
    key: `js:${stream}:${seq}`,
    ...(backfill && { backfill }),
    seq,
    receivedAt,
    ack: () => {
      if (settle()) attempt(() => m.ack());
    },
    working: () => {
      if (!settled) attempt(() => m.working());
    },
    nak: (delayMs?: number) => {
      if (settle()) attempt(() => m.nak(delayMs));
    },
  };
}
