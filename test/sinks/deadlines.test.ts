/**
 * The transport's one timer for every request's overall deadline (`Deadlines`): requests
 * expire in the order they started, each at its own deadline, a settled one leaves the list
 * and never expires, and the timer is re-armed for the next request still pending. Fake
 * timers and a fake clock: no real time.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Deadlines, type DeadlineEntry } from '../../src/sinks/http/exchange.js';

function entry(name: string, expired: string[]): DeadlineEntry {
  return { deadline: 0, prev: undefined, next: undefined, expire: () => expired.push(name) };
}

describe('Deadlines', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('expires each request at its own deadline, in start order, re-arming for the next', () => {
    const expired: string[] = [];
    const d = new Deadlines(100, () => Date.now());
    d.add(entry('a', expired));
    vi.advanceTimersByTime(40);
    d.add(entry('b', expired));
    vi.advanceTimersByTime(59);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1); // a: 100 ms after it started
    expect(expired).toEqual(['a']);
    vi.advanceTimersByTime(39);
    expect(expired).toEqual(['a']);
    vi.advanceTimersByTime(1); // b: 100 ms after it started
    expect(expired).toEqual(['a', 'b']);
    expect(d.size).toBe(0);
  });

  it('a settled request leaves the list and never expires; the others still do', () => {
    const expired: string[] = [];
    const d = new Deadlines(100, () => Date.now());
    const a = entry('a', expired);
    const b = entry('b', expired);
    const c = entry('c', expired);
    d.add(a);
    d.add(b);
    vi.advanceTimersByTime(10);
    d.add(c);
    d.remove(a); // first
    d.remove(c); // last
    d.remove(c); // twice: nothing
    expect(d.size).toBe(1);
    vi.advanceTimersByTime(200);
    expect(expired).toEqual(['b']);
    d.remove(b); // already expired: nothing
    expect(d.size).toBe(0);
  });

  it('arms again once the list emptied and a new request comes', () => {
    const expired: string[] = [];
    const d = new Deadlines(50, () => Date.now());
    d.add(entry('a', expired));
    vi.advanceTimersByTime(60);
    d.add(entry('b', expired));
    vi.advanceTimersByTime(49);
    expect(expired).toEqual(['a']);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual(['a', 'b']);
  });
});
