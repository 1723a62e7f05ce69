/**
 * Test doubles for source messages: a SourceMessage whose ack / nak / working calls are
 * recorded in order, for assertions.
 */
import type { SourceMessage } from '../../src/streams/types.js';

/** One recorded call: `ack`, `working`, `nak`, or `nak:<delayMs>`. */
export type MessageCall = 'ack' | 'working' | 'nak' | `nak:${number}`;

export interface FakeMessage extends SourceMessage {
  /** Every ack / nak / working call, in order. */
  readonly calls: MessageCall[];
}

/**
 * A SourceMessage for tests: `key` is `test:<seq>`, `receivedAt` is 0.
 *
 * @example
 * const m = fakeMessage('{"profileId":"p"}', 1);
 * m.ack();
 * expect(m.calls).toEqual(['ack']);
 */
export function fakeMessage(data: string | Uint8Array, seq: number): FakeMessage {
  const calls: MessageCall[] = [];
  return {
    data,
    key: `test:${seq}`,
    seq,
    receivedAt: 0,
    calls,
    ack: () => {
      calls.push('ack');
    },
    working: () => {
      calls.push('working');
    },
    nak: (delayMs?: number) => {
      calls.push(delayMs === undefined ? 'nak' : `nak:${delayMs}`);
    },
  };
}
