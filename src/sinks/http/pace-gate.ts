/**
 * The transport thread's last check of a dataflow's rate limit, at the socket (`SendOptions.pace`).
 *
 * The rate limiter grants permits on the main thread; the transport thread sends a little
 * later — and, when it is short of CPU, 50–100 ms later, after which the requests permitted
 * meanwhile would leave together and crowd one second at the endpoint. The gate holds a
 * request (in order) rather than let it leave
 * - more than `perSecond` in any sliding second (at least one): SPEC §7 allows 5% over the
 *   limit in any second *at the endpoint*; the socket keeps all of it for the way there.
 *   Requests that leave spaced arrive bunched when the network or the endpoint stalls: at
 *   10,000/s the bench's receiver, sharing two cores with the worker, counted 250–350 more
 *   in its busiest second (25–35 ms of arrivals) than left the socket in any (bench/README.md,
 *   "The pace gate's tolerance"), or
 * - closer to the ones before than the limit's spacing allows (a virtual schedule, one
 *   request every `1000 / perSecond` ms, `max(one interval, 40 ms)` early at most: the
 *   generic cell rate algorithm), so that what was permitted before a long stall leaves at
 *   the limit's pace after it, not in one burst that a stall of the endpoint's own would then
 *   squeeze into one second with the next ones. 40 ms is the limiter's own burst (4% of a
 *   second's permits, `TOKEN_BUCKET_DEFAULTS.burst`): a pause of the sending side (a
 *   garbage collection, 10–20 ms) is caught up after it, as the limiter itself would. With
 *   5 ms, each pause longer than that was capacity lost for good: a drain at 10,000/s ran at
 *   ~9,100/s (bench/README.md, "The pace gate's tolerance").
 * Normally it holds little: the limiter's permits already come at that pace. A held request
 * that no longer needs the socket (`unwanted`: cancelled, or its send permit expired while it
 * waited) leaves the queue when it reaches its head without taking a place in the window: a
 * request not sent must not hold back the ones behind it.
 */
import { performance } from 'node:perf_hooks';

/** The sliding window, ms. */
export const PACE_WINDOW_MS = 1_000;
/**
 * How early a request may leave against the schedule at high rates, ms: the limiter's burst
 * (4% of a second), so a pause of the sending side up to that long is caught up after it.
 */
export const PACE_TOLERANCE_MS = 40;
/** Dropped window entries kept before the list is compacted. */
const COMPACT_AFTER = 1_024;

/**
 * One dataflow's window at the socket.
 *
 * @example
 * ```ts
 * const gate = new PaceGate<Req>(50, (r) => dispatch(r));
 * if (gate.admit()) dispatch(req); else gate.hold(req); // released in order, as the window allows
 * ```
 */
export class PaceGate<T> {
  /** Most requests in any window. */
  readonly cap: number;
  /** When the requests of the last window left (ascending; entries before `head` are dropped). */
  private times: number[] = [];
  private head = 0;
  private queue: T[] = [];
  private qHead = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The limit's spacing, ms. */
  private readonly interval: number;
  /** How early a request may leave against the virtual schedule, ms. */
  private readonly tolerance: number;
  /** When the next request is due on the virtual schedule (ms on `clock`). */
  private due = -Infinity;

  /**
   * @param release called for each held item as it leaves, in order (an unwanted one too)
   * @param clock @default performance.now
   * @param unwanted whether a held item no longer needs the socket: it leaves without a place
   *   in the window @default none (every item takes one)
   */
  constructor(
    perSecond: number,
    private readonly release: (item: T) => void,
    private readonly clock: () => number = performance.now.bind(performance),
    private readonly unwanted?: (item: T) => boolean,
  ) {
    this.cap = PaceGate.capFor(perSecond);
    this.interval = PACE_WINDOW_MS / perSecond;
    this.tolerance = Math.max(this.interval, PACE_TOLERANCE_MS);
  }

  /** The cap of a gate at `perSecond`: the limit itself, at least one. */
  static capFor(perSecond: number): number {
    return Math.max(1, Math.floor(perSecond));
  }

  /** Requests held now. */
  get held(): number {
    return this.queue.length - this.qHead;
  }

  /** True (and counted) when a request may leave now: nothing held before it and room in the window. */
  admit(): boolean {
    return this.qHead === this.queue.length && this.take(this.clock());
  }

  /** Holds `item` behind the others; `release(item)` is called when the window has room. */
  hold(item: T): void {
    this.queue.push(item);
    this.arm();
  }

  private take(now: number): boolean {
    let times = this.times;
    const from = now - PACE_WINDOW_MS;
    while (this.head < times.length && times[this.head]! <= from) this.head++;
    if (this.head > COMPACT_AFTER && this.head * 2 > times.length) {
      times = this.times = times.slice(this.head);
      this.head = 0;
    }
    if (times.length - this.head >= this.cap || now < this.due - this.tolerance) return false;
    this.due = Math.max(this.due, now) + this.interval;
    times.push(now);
    return true;
  }

  private arm(): void {
    if (this.timer !== undefined) return;
    const now = this.clock();
    const oldest = this.times[this.head];
    const full = this.times.length - this.head >= this.cap && oldest !== undefined;
    const wait = Math.max(full ? oldest + PACE_WINDOW_MS - now : 1, this.due - this.tolerance - now);
    this.timer = setTimeout(this.drain, Math.max(1, Math.ceil(wait)));
  }

  private readonly drain = (): void => {
    this.timer = undefined;
    const now = this.clock();
    while (this.qHead < this.queue.length) {
      const item = this.queue[this.qHead]!;
      if (!this.unwanted?.(item) && !this.take(now)) break;
      this.queue[this.qHead++] = undefined as T; // let it go
      this.release(item);
    }
    if (this.qHead === this.queue.length) {
      this.queue = [];
      this.qHead = 0;
    } else this.arm();
  };
}
