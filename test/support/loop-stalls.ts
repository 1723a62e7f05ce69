/**
 * Stalls of this process's event loop, as a 2-ms ticker sees them: every gap between two
 * ticks longer than `overMs`.
 *
 * Why tests need it: a receiver timestamps an arrival when its loop gets to it. After a stall
 * of S ms (a loaded machine, a collection) the requests that came in meanwhile are stamped
 * together, up to S late, so a sliding 1-s window of arrival times can hold what arrived in
 * 1 + S/1000 s. A bound on what an endpoint counts allows for that (`arrivalAllowance`) — and
 * only that: on a quiet machine the allowance is one request.
 */
import { performance } from 'node:perf_hooks';

export interface LoopStalls {
  /** The stalls seen so far, ms. */
  readonly stalls: readonly number[];
  /** The longest stall so far, ms (0 when none). */
  longestMs(): number;
  /** Stops the ticker; returns the stalls. */
  stop(): number[];
}

/** Starts watching this process's event loop. @param overMs shortest gap counted @default 10 */
export function watchLoopStalls(overMs = 10): LoopStalls {
  const stalls: number[] = [];
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    if (now - last > overMs) stalls.push(now - last);
    last = now;
  }, 2);
  return {
    stalls,
    longestMs: () => stalls.reduce((m, s) => Math.max(m, s), 0),
    stop: () => {
      clearInterval(ticker);
      return stalls;
    },
  };
}

/**
 * The arrivals a stall of `stallMs` of the receiver's loop can add to a sliding 1-s window at
 * `perSecond`: those of the `stallMs` before the window, stamped inside it (and one for the
 * rounding).
 *
 * @example expect(maxInWindow(times)).toBeLessThanOrEqual(bound + arrivalAllowance(500, watch.longestMs()))
 */
export function arrivalAllowance(perSecond: number, stallMs: number): number {
  return Math.ceil((perSecond * stallMs) / 1000) + 1;
}
