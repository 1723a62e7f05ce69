/**
 * Waiting for the end of a backbone test's work: until the expected exports arrived, or the
 * source is idle and the receiver quiet.
 */
import type { RecordingReceiver } from './receiver.js';
import { type Backbone, sleep } from './servers.js';
import { consumerState } from './state.js';

/**
 * Waits until `done()` holds, or until the durable consumer has nothing pending or unacked
 * and no request reached the receiver for `quietMs`, or `timeoutMs` passed. Never throws:
 * the caller asserts what it expects afterwards.
 */
export async function settle(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  stream: string;
  durable: string;
  done: () => boolean;
  quietMs?: number;
  timeoutMs: number;
}): Promise<void> {
  await settleWhenIdle({
    ...o,
    idle: async () => {
      const st = await consumerState(o.bb.nats.url, o.stream, o.durable).catch(() => null);
      return st !== null && st.pending === 0 && st.ackPending === 0;
    },
  });
}

/**
 * Waits until `done()` holds, or until no request reached the receiver for `quietMs` and
 * then `idle()` says the source has nothing left, or `timeoutMs` passed. Never throws.
 */
export async function settleWhenIdle(o: {
  rx: RecordingReceiver;
  done: () => boolean;
  idle: () => Promise<boolean>;
  quietMs?: number;
  timeoutMs: number;
}): Promise<void> {
  const quietMs = o.quietMs ?? 3_000;
  const deadline = Date.now() + o.timeoutMs;
  let quietSince = Date.now();
  let lastCount = o.rx.requests.length;
  while (Date.now() < deadline && !o.done()) {
    if (o.rx.requests.length !== lastCount) {
      lastCount = o.rx.requests.length;
      quietSince = Date.now();
    }
    if (Date.now() - quietSince > quietMs) {
      if (await o.idle()) return;
      quietSince = Date.now();
    }
    await sleep(50);
  }
}
