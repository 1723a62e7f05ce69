/**
 * A rate limiter hands out permission to send one request. The in-memory token bucket
 * (`tokenBucket`) serves one worker; a Redis-backed one serves a pool. Time goes through an
 * RxJS scheduler so limits run in virtual time in marble tests.
 */
import type { Observable } from 'rxjs';

export interface RateLimiter {
  /**
   * Emits once (then completes) when one request may be sent. Waiters are served in the
   * order they subscribed. Unsubscribing before the emission gives the place up.
   */
  acquire(): Observable<void>;
  /**
   * Takes a slot at once when one is free and nobody waits (`true`), else does nothing
   * (`false`: use `acquire()`). Optional: the chain's fast path, no subscription per request.
   */
  tryAcquire?(): boolean;
  /**
   * How long a granted permit stays good for a send, in ms: a request whose permit is older
   * than this at the last moment before the socket (credentials awaited, an event loop
   * stalled) takes a new one instead, so the time from permit to the wire varies by no more
   * than the limiter's schedule budgets for. Optional: a limiter without it lets a permit be
   * used whenever. (The Redis-backed limiter sets its `deliveryJitterMs`.)
   */
  readonly maxPermitAgeMs?: number;
}
