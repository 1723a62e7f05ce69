/**
 * The send slots one worker holds from the pool's schedule (redis-rate-limiter.ts): times on
 * the Redis clock, handed out oldest first, each only while it is within `[s, s + ttl]` on
 * Redis's clock whatever the clock offset truly is, and dropped (never used late) after.
 */
import { type ClockOffset, systemClock } from './clock-offset.js';

/** Slots `first + i × interval` (Redis clock, ms) for `i` in `used … count − 1`. */
interface Batch {
  first: number;
  count: number;
  used: number;
}

/**
 * Margin (ms) for sums of floating-point times: a slot's usable span is narrowed by it on both
 * sides (Redis keeps µs times near 1.7e15, to a quarter µs).
 */
const EPSILON_MS = 0.01;

export class HeldSlots {
  /** Oldest first (`batches[0 … head − 1]` are spent). */
  private batches: Batch[] = [];
  private head = 0;
  private held = 0;

  constructor(
    /** Spacing of the slots (ms). */
    private readonly intervalMs: number,
    /** How long after its slot (Redis clock) a slot may still be handed out. */
    private readonly ttlMs: number,
  ) {}

  /** Slots held and not yet handed out or dropped. */
  get size(): number {
    return this.held;
  }

  /** Holds `count` slots from `first` (Redis clock, ms), `intervalMs` apart. */
  add(first: number, count: number): void {
    this.batches.push({ first, count, used: 0 });
    this.held += count;
  }

  /**
   * Takes the first held slot if it is due at local time `now`; drops the ones that are past
   * their `ttlMs` (never used late).
   */
  take(now: number, offset: ClockOffset): boolean {
    if (this.held === 0) return false;
    const lo = offset.low(now);
    const hi = offset.high(now);
    while (this.head < this.batches.length) {
      const b = this.batches[this.head];
      if (b.used === b.count) {
        if (++this.head >= 64) {
          this.batches = this.batches.slice(this.head);
          this.head = 0;
        }
        continue;
      }
      const slot = b.first + b.used * this.intervalMs;
      if (now > slot + this.ttlMs - hi - EPSILON_MS) {
        b.used++;
        this.held--;
        continue;
      }
      if (now < slot - lo + EPSILON_MS) return false;
      b.used++;
      this.held--;
      return true;
    }
    this.clear();
    return false;
  }

  /** Local time from which the first held slot may be handed out (Infinity: none held). */
  nextDue(offset: ClockOffset): number {
    for (let i = this.head; i < this.batches.length; i++) {
      const b = this.batches[i];
      if (b.used < b.count) return b.first + b.used * this.intervalMs - offset.low(systemClock()) + EPSILON_MS;
    }
    return Infinity;
  }

  /** Drops every slot held. */
  clear(): void {
    this.batches = [];
    this.head = 0;
    this.held = 0;
  }
}
