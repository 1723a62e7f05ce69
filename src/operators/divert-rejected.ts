/**
 * `divertRejected`: lets valid updates through and files rejected events away.
 */
import { asyncScheduler, type OperatorFunction, type SchedulerLike } from 'rxjs';
import type { EventRejectedError } from '../errors.js';
import type { SourceMessage } from '../streams/types.js';
import { settle, step } from './internal/step.js';
import type { RejectedEvent, RejectedEventStore } from '../sinks/types.js';
import type { Decoded } from './decode-events.js';
import { liveEnvelope, type Envelope } from '../streams/envelope.js';

export interface DivertRejectedOptions {
  /** Where rejected events are written (beside the failed requests). */
  store: RejectedEventStore;
  /**
   * Called after a rejected event was stored and its message acknowledged (count it in a
   * metric). A throw errors the output. @default none
   */
  onRejected?: (rejected: RejectedEvent) => void;
  /**
   * Called when the store refused a rejected event (the message is then nak'ed and comes
   * back later). A throw errors the output. @default none
   */
  onStoreError?: (error: unknown, rejected: RejectedEvent) => void;
  /** The stored raw event is cut to this many characters. @default 65_536 */
  rawLimit?: number;
  /** Clock of `rejectedAt`. @default asyncScheduler */
  scheduler?: SchedulerLike;
}

/** The defaults of `divertRejected`, named in one place. */
export const DIVERT_REJECTED_DEFAULTS = {
  rawLimit: 65_536,
  scheduler: asyncScheduler as SchedulerLike,
} as const;

/**
 * Emits the valid updates as `Envelope`s, at once and in order; takes the rejected ones out
 * of the stream (SPEC §2). A rejected event is written to `store` with its code, reason and
 * raw text (cut to `rawLimit`), then its message is `ack()`ed and `onRejected` is called. If
 * the write fails, the message is `nak()`ed instead (to be redelivered when the store is
 * back) and the stream goes on. Valid updates never wait for a rejected one's write; the
 * output completes once the source has completed and every pending write has settled.
 *
 * @example
 * messages$.pipe(
 *   decodeEvents(),
 *   divertRejected({ store: rejectedStore, onRejected: () => metrics.rejected.inc() }),
 * )
 */
export function divertRejected(options: DivertRejectedOptions): OperatorFunction<Decoded, Envelope> {
  const { store, onRejected, onStoreError } = options;
  const rawLimit = options.rawLimit ?? DIVERT_REJECTED_DEFAULTS.rawLimit;
  const scheduler = options.scheduler ?? DIVERT_REJECTED_DEFAULTS.scheduler;

  // A valid one goes out at once (one `next`, no inner Observable); a rejected one is a
  // pending write that holds back only the completion.
  return step<Decoded, Envelope>(() => (decoded, out) => {
    if (decoded.ok) return out.next(liveEnvelope(decoded.msg, decoded.update, decoded.updateBytes));
    const { msg, error } = decoded;
    const record = rejectedRecord(msg, error, scheduler.now(), rawLimit);
    out.hold();
    settle(
      () => store.put(record),
      () => {
        if (out.closed) return;
        msg.ack();
        try {
          onRejected?.(record);
        } catch (err) {
          return out.error(err);
        }
        out.release();
      },
      (err: unknown) => {
        if (out.closed) return;
        msg.nak();
        try {
          onStoreError?.(err, record);
        } catch (thrown) {
          return out.error(thrown);
        }
        out.release();
      },
    );
  });
}

/** The record of a rejected event: its source key, code, reason and raw text (cut to `rawLimit`). */
export function rejectedRecord(
  msg: SourceMessage,
  error: EventRejectedError,
  now: number,
  rawLimit: number = DIVERT_REJECTED_DEFAULTS.rawLimit,
): RejectedEvent {
  return {
    sourceKey: msg.key,
    code: error.code,
    reason: error.message,
    raw: rawText(msg.data, rawLimit),
    rejectedAt: new Date(now).toISOString(),
  };
}

const lenient = new TextDecoder('utf-8');

/** The raw event as text, at most `limit` UTF-16 units, never ending in half a surrogate pair. */
function rawText(data: string | Uint8Array, limit: number): string {
  // A UTF-16 unit takes at most 3 UTF-8 bytes, so 3 × limit bytes always yield enough text.
  let text = typeof data === 'string' ? data : lenient.decode(data.subarray(0, limit * 3));
  if (text.length > limit) {
    const end = text.charCodeAt(limit - 1) >= 0xd800 && text.charCodeAt(limit - 1) <= 0xdbff ? limit - 1 : limit;
    text = text.slice(0, end);
  }
  return text;
}
