/**
 * The transport thread's last check of a dataflow's rate limit at the socket (pace-gate.ts):
 * at most floor(1.05 × perSecond) leave in any sliding second, the rest are held in order and
 * released as the window moves on. Fake timers and a fake clock: no real time.
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

  it('lets floor(1.05 × perSecond) go in a second, holds the rest in order, releases them as the window moves', () => {
    const left = new Map<number, number>();
    const gate = new PaceGate<number>(20, (i) => left.set(i, Date.now()), () => Date.now());
    expect(gate.cap).toBe(21);
    const t0 = Date.now();
    offer(gate, left, 0, 30);
    expect(left.size).toBe(21);
    expect(gate.held).toBe(9);
    vi.advanceTimersByTime(999);
    expect(left.size).toBe(21);
    vi.advanceTimersByTime(1);
    expect(left.size).toBe(30);
    expect(gate.held).toBe(0);
    // in order, and the held ones left one window after the first ones
    expect([...left.keys()]).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(left.get(21)! - t0).toBe(1_000);
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
    }
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
