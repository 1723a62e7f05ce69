/**
 * A clock every thread of the process reads alike: the main thread (the sink, which knows when
 * a send permit expires) and the transport thread (which puts the request on the wire later)
 * compare times on it (`SendOptions.permitDeadline`).
 *
 * `performance.now()` reads the process's monotonic clock (`process.hrtime`) from an origin
 * that Node may set per thread (a worker's own start, in some versions; Node 20 shares the
 * process's), and `performance.timeOrigin` is a wall-clock reading taken at that origin, off
 * by whatever the wall clock was adjusted meanwhile. So each thread measures, once, where its
 * `performance.now()` stands on `process.hrtime`, and adds that: the same monotonic clock in
 * every thread, with `performance.now()`'s cost per read.
 */
import { performance } from 'node:perf_hooks';

/** `process.hrtime` in ms minus this thread's `performance.now()` (sub-µs error). */
const offset = Number(process.hrtime.bigint()) / 1e6 - performance.now();

/**
 * Now, in ms on the process's monotonic clock: comparable between threads.
 *
 * @example
 * ```ts
 * const permitDeadline = sharedClock() + limiter.maxPermitAgeMs; // on the main thread
 * if (sharedClock() > permitDeadline) staleAnswer(); // on the transport thread, before dispatch
 * ```
 */
export function sharedClock(): number {
  return performance.now() + offset;
}
