/**
 * The single-consumer JetStream source's keep-alive: a message waiting its profile's turn is
 * not redelivered meanwhile (see `keepAlive`).
 */
import { Observable, type MonoTypeOperatorFunction } from 'rxjs';
import type { SourceMessage } from '../streams/types.js';

/**
 * Keeps every emitted, unsettled message alive (`working()`) every `intervalMs`, so a message
 * queued behind its profile's earlier updates (which may be backing off) is not redelivered
 * while it waits its turn.
 */
export function keepAlive(intervalMs: number): MonoTypeOperatorFunction<SourceMessage> {
  return (source$) =>
    new Observable<SourceMessage>((subscriber) => {
      const open = new Set<SourceMessage>();
      const timer = setInterval(() => {
        for (const m of open) m.working();
      }, intervalMs);
      const sub = source$.subscribe({
        next: (m) => {
          const wrapped: SourceMessage = {
            data: m.data,
            key: m.key,
            seq: m.seq,
            // The stream sequence orders every update of a profile across redeliveries.
            watermark: m.seq,
            ...(m.backfill && { backfill: m.backfill }),
            receivedAt: m.receivedAt,
            ack: () => {
              open.delete(wrapped);
              m.ack();
            },
            nak: (delayMs) => {
              open.delete(wrapped);
              m.nak(delayMs);
            },
            working: () => m.working(),
          };
          open.add(wrapped);
          subscriber.next(wrapped);
        },
        error: (e: unknown) => subscriber.error(e),
        complete: () => subscriber.complete(),
      });
      return () => {
        sub.unsubscribe();
        // Acks of messages still in the pipeline go on after the stream ends (graceful stop);
        // keep them alive until they settle or the process stops.
        if (open.size === 0) clearInterval(timer);
        else {
          const done = setInterval(() => {
            if (open.size === 0) {
              clearInterval(timer);
              clearInterval(done);
            }
          }, intervalMs);
          done.unref();
        }
        timer.unref();
      };
    });
}
