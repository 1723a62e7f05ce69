/**
 * The transport thread's last check of a dataflow's rate limit at the socket (pace-gate.ts):
 * at most floor(1.05 × perSecond) leave in any sliding second, and none closer to the ones before
 * than the limit's spacing allows; the rest are held in order and released at that pace (a
 * held item no longer wanted leaves without a place in the window). Fake timers and a fake clock: no real time.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PaceGate } from '../../src/sinks/http/pace-gate.js';

describe('PaceGate', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** Offers `n` items at the current time; returns when each left (ms on the fake clock). */
  function offer(gate: PaceGate<number>, left: Map<number, number>, from: number, n: number): void {
    for (let i = from; i < from + n; i++) {
      if (gate.admit()) left.set(i, Date.now());
      else gate.hold(i);
    }
  }

  it('lets a burst go at the limit\'s pace: two at once (one interval early), then one per interval, in order', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(20, (i) => left.set(i, Date.now()), () => Date.now());
    expect(gate.cap).toBe(21);
    const t0 = Date.now();
    offer(gate, left, 0, 30);
    expect(left.size).toBe(2);
    expect(gate.held).toBe(28);
    vi.advanceTimersByTime(49);
    expect(left.size).toBe(2);
    vi.advanceTimersByTime(1);
    expect(left.size).toBe(3);
    vi.advanceTimersByTime(28 * 50);
    expect(left.size).toBe(30);
    expect(gate.held).toBe(0);
    expect([...left.keys()]).toEqual(Array.from({ length: 30 }, (_, i) => i));
    // one interval (50 ms) apart after the first two
    for (let i = 2; i < 30; i++) expect(left.get(i)! - t0).toBe((i - 1) * 50);
  });

  it('at a high rate, lets 5 ms of requests go at once (timers have a 1-ms grain), then keeps the pace', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(10_000, (i) => left.set(i, Date.now()), () => Date.now());
    offer(gate, left, 0, 200);
    // 5 ms of 0.1-ms intervals early, and the one due now (± one for the sum of the intervals' rounding)
    expect(left.size).toBeGreaterThanOrEqual(50);
    expect(left.size).toBeLessThanOrEqual(51);
    vi.advanceTimersByTime(15);
    expect(left.size).toBe(200);
    expect(gate.held).toBe(0);
  });

  it('never has more than the cap in any sliding second, whatever the offers', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(10, (i) => left.set(i, Date.now()), () => Date.now());
    let next = 0;
    for (let step = 0; step < 40; step++) {
      offer(gate, left, next, step % 7);
      next += step % 7;
      vi.advanceTimersByTime(137);
    }
    vi.advanceTimersByTime(30_000);
    expect(left.size).toBe(next);
    const times = [...left.values()].sort((a, b) => a - b);
    for (let i = 0; i < times.length; i++) {
      const inWindow = times.filter((t) => t >= times[i]! && t < times[i]! + 1_000).length;
      expect(inWindow).toBeLessThanOrEqual(gate.cap);
      // and the spacing: at 10/s (100-ms intervals, 100 ms early at most), ≤ 3 in any 150 ms
      expect(times.filter((t) => t >= times[i]! && t < times[i]! + 150).length).toBeLessThanOrEqual(3);
    }
  });

  it('a held item that is no longer wanted (cancelled, permit expired) leaves at its turn without a place in the window', () => {
    const left = new Map<number, number>();
    const unwanted = new Set<number>();
    const gate = new PaceGate<number>(20, (i) => left.set(i, Date.now()), () => Date.now(), (i) => unwanted.has(i));
    const t0 = Date.now();
    offer(gate, left, 0, 5); // 0 and 1 leave at once; 2, 3, 4 are held, one per 50 ms
    unwanted.add(2);
    unwanted.add(3);
    vi.advanceTimersByTime(50);
    // 2 and 3 leave (unsent, by their owner) without spending 4's place: 4 leaves at 2's time
    expect([...left.keys()]).toEqual([0, 1, 2, 3, 4]);
    expect(left.get(4)! - t0).toBe(50);
    expect(gate.held).toBe(0);
  });

  it('holds nothing at a pace below the cap', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(50, (i) => left.set(i, Date.now()), () => Date.now());
    for (let i = 0; i < 200; i++) {
      offer(gate, left, i, 1);
      vi.advanceTimersByTime(20); // 50/s exactly
    }
    expect(left.size).toBe(200);
    expect(gate.held).toBe(0);
  });
});
