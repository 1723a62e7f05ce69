/**
 * The transport thread's last check of a dataflow's rate limit at the socket (pace-gate.ts):
 * at most perSecond leave in any sliding second, and none closer to the ones before than the
 * limit's spacing allows (40 ms early at most at high rates: a pause of the sender that long is caught up); the rest are held in order and released at that pace (a
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
    expect(gate.cap).toBe(20);
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
    // one interval (50 ms) apart after the first two, except the 21st: due at 950 ms, it waits
    // for the first two to leave the window (no more than 20 in any second) and leaves with the 22nd
    for (let i = 2; i < 30; i++) expect(left.get(i)! - t0).toBe(i === 20 ? 1_000 : (i - 1) * 50);
  });

  it('at a high rate, lets 40 ms of requests go at once (the limiter\'s own burst), then keeps the pace', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(10_000, (i) => left.set(i, Date.now()), () => Date.now());
    offer(gate, left, 0, 1_000);
    // 40 ms of 0.1-ms intervals early, and the one due now (± one for the sum of the intervals' rounding)
    expect(left.size).toBeGreaterThanOrEqual(400);
    expect(left.size).toBeLessThanOrEqual(401);
    vi.advanceTimersByTime(30);
    expect(left.size).toBeGreaterThanOrEqual(699);
    expect(left.size).toBeLessThanOrEqual(702);
    vi.advanceTimersByTime(31);
    expect(left.size).toBe(1_000);
    expect(gate.held).toBe(0);
  });

  it('after a pause of the sender of up to 40 ms, what it could not send leaves at once; a longer pause is caught up for 40 ms only', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(1_000, (i) => left.set(i, Date.now()), () => Date.now());
    // 1,000/s: one offer per ms, as the limiter grants them
    let next = 0;
    const steady = (ms: number): void => {
      for (let t = 0; t < ms; t++) {
        offer(gate, left, next++, 1);
        vi.advanceTimersByTime(1);
      }
    };
    // the sender pauses `ms`, then offers the `ms` permits granted meanwhile at once
    const pause = (ms: number): void => {
      vi.advanceTimersByTime(ms);
      offer(gate, left, next, ms);
      next += ms;
    };
    steady(100);
    expect(gate.held).toBe(0);
    pause(30); // a garbage collection: none of the 30 waits
    expect(gate.held).toBe(0);
    steady(100);
    expect(gate.held).toBe(0);
    pause(100); // 40 ms of it is caught up at once, the other 60 requests leave at the limit's pace
    expect(gate.held).toBeGreaterThanOrEqual(58);
    expect(gate.held).toBeLessThanOrEqual(60);
    vi.advanceTimersByTime(61);
    expect(gate.held).toBe(0);
    expect(left.size).toBe(next);
  });

  it('never lets more than the limit leave in any sliding second, also when offered more', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(100, (i) => left.set(i, Date.now()), () => Date.now());
    expect(gate.cap).toBe(100);
    // 3 s of offers at 130/s in bursts of 13 every 100 ms
    for (let step = 0; step < 30; step++) {
      offer(gate, left, step * 13, 13);
      vi.advanceTimersByTime(100);
    }
    vi.advanceTimersByTime(5_000);
    expect(left.size).toBe(390);
    const times = [...left.values()].sort((a, b) => a - b);
    for (let i = 0; i < times.length; i++) {
      expect(times.filter((t) => t >= times[i]! && t < times[i]! + 1_000).length).toBeLessThanOrEqual(100);
    }
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
