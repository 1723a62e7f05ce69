/**
 * The offset between this host's clock and the Redis server's, as an interval that narrows
 * with every reply and widens as it ages (drift). Used by the Redis send slots, whose slots
 * are times on the Redis clock.
 */
import { performance } from 'node:perf_hooks';

/**
 * How fast the offset between this host's clock and the Redis server's may drift, as a
 * fraction (500 ppm: more than NTP ever slews); a measured offset widens by it as it ages.
 */
export const MAX_DRIFT = 5e-4;

/** Wall-clock time in ms with sub-ms precision, monotonic (the offset to Redis is measured). */
export const systemClock = (): number => performance.timeOrigin + performance.now();

/**
 * What is known of `offset = Redis clock − this host's clock` (ms): it lies in `[lo, hi]` as
 * of local time `at`, and that interval widens by `MAX_DRIFT` per ms since.
 */
export class ClockOffset {
  private lo = -Infinity;
  private hi = Infinity;
  private at = 0;

  /** The least the offset can be at local time `now`. */
  low(now: number): number {
    return this.lo - MAX_DRIFT * Math.max(0, now - this.at);
  }

  /** The most the offset can be at local time `now`. */
  high(now: number): number {
    return this.hi + MAX_DRIFT * Math.max(0, now - this.at);
  }

  /** The middle of what the offset can be at local time `now` (a best guess). */
  middle(now: number): number {
    return (this.low(now) + this.high(now)) / 2;
  }

  /** Redis read `redisNow` on its clock after local time `sentAt` and before `handledAt`. */
  sample(sentAt: number, handledAt: number, redisNow: number): void {
    const drift = MAX_DRIFT * (handledAt - sentAt);
    const lo = redisNow - handledAt - drift;
    const hi = redisNow - sentAt + drift;
    const jointLo = Math.max(this.low(handledAt), lo);
    const jointHi = Math.min(this.high(handledAt), hi);
    // Disjoint: a clock stepped (or drifted faster than allowed); only the new sample holds.
    if (jointLo <= jointHi) {
      this.lo = jointLo;
      this.hi = jointHi;
    } else {
      this.lo = lo;
      this.hi = hi;
    }
    this.at = handledAt;
  }
}
