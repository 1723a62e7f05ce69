/**
 * `decodeEvents`: turns raw source messages into validated updates or rejections.
 */
import { map, type OperatorFunction } from 'rxjs';
import { DEFAULTS } from '../config/schema.js';
import { updateBytesBound } from '../domain/merge-checked.js';
import { decodeEvent } from '../domain/validate.js';
import type { ProfileUpdate } from '../domain/types.js';
import { EventRejectedError, toEventRejection } from '../errors.js';
import type { SourceMessage } from '../streams/types.js';

/** One decoded message: its update, or why it was rejected. */
export type Decoded =
  | {
      ok: true;
      msg: SourceMessage;
      update: ProfileUpdate;
      /** Upper bound of the update's JSON size in UTF-8 bytes (`updateBytesBound` of `msg.data`). */
      updateBytes: number;
    }
  | { ok: false; msg: SourceMessage; error: EventRejectedError };

export interface DecodeEventsOptions {
  /** Largest accepted event, in UTF-8 bytes. @default DEFAULTS.maxEventBytes (1 MiB) */
  maxBytes?: number;
}

/** The defaults of `decodeEvents`, named in one place. */
export const DECODE_EVENTS_DEFAULTS = {
  maxBytes: DEFAULTS.maxEventBytes,
} as const;

/**
 * Decodes and validates each message (SPEC §2), emitting one `Decoded` per message, in
 * order. Never errors because of a message: a bad one becomes `{ ok: false, error }` with
 * code `ERR_EVENT_TOO_LARGE`, `ERR_EVENT_JSON` or `ERR_EVENT_SHAPE`; any other throw while
 * decoding is also turned into an `ERR_EVENT_SHAPE` rejection. Errors and completion of the
 * source pass through.
 *
 * @example
 * messages$.pipe(decodeEvents({ maxBytes: 65_536 }), divertRejected({ store }))
 */
export function decodeEvents(options: DecodeEventsOptions = {}): OperatorFunction<SourceMessage, Decoded> {
  const decodeOptions = { maxBytes: options.maxBytes ?? DECODE_EVENTS_DEFAULTS.maxBytes };
  return map((msg): Decoded => {
    try {
      const update = decodeEvent(msg.data, decodeOptions);
      const { data } = msg;
      return { ok: true, msg, update, updateBytes: updateBytesBound(typeof data === 'string' ? data.length : data.byteLength) };
    } catch (err) {
      return { ok: false, msg, error: asRejection(err) };
    }
  });
}

function asRejection(err: unknown): EventRejectedError {
  // Not expected (decodeEvent throws only EventRejectedError), but a message must never
  // take the stream down: e.g. a RangeError from an exotic input becomes a rejection.
  return toEventRejection(err, 'decode');
}
