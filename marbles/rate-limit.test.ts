import { describe, it, expect } from 'vitest';
import {
  concatMap,
  EMPTY,
  from,
  lastValueFrom,
  map,
  mergeMap,
  of,
  throwError,
  toArray,
  timer,
  type SchedulerAction,
  type SchedulerLike,
  type Subscription,
} from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { rateLimit } from '../src/operators/rate-limit.js';
import { TOKEN_BUCKET_DEFAULTS, tokenBucket } from '../src/stores/memory-rate-limiter.js';
import type { RateLimiter } from '../src/stores/rate-limiter.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/** Virtual times at which `n` values (all queued at time 0) are let through. */
function grantTimes(ts: TestScheduler, limiter: RateLimiter, n: number): number[] {
  const times: number[] = [];
  ts.run(() => {
    from(Array.from({ length: n }, (_, i) => i))
      .pipe(rateLimit({ limiter }))
      .subscribe(() => times.push(ts.now()));
  });
  return times;
}

/** Most grants in any half-open window [t, t + 1000). */
function maxPerSecond(times: number[]): number {
  let max = 0;
  let j = 0;
  for (let i = 0; i < times.length; i++) {
    while (times[j] < times[i] - 1000 + 1e-9) j++; // keep times[j..i] within (t_i − 1000, t_i]
    max = Math.max(max, i - j + 1);
  }
  return max;
}

/** A small seeded PRNG (mulberry32), so the property runs are reproducible. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('rateLimit', () => {
  it('tells `waited` how long each value waited for its slot (0 when one was free)', () => {
    const ts = scheduler();
    const waits: Array<[number, number]> = [];
    ts.run(() => {
      const limiter = tokenBucket({ rate: 10, burst: 1, scheduler: ts });
      from([0, 1, 2])
        .pipe(rateLimit({ limiter, waited: (v, ms) => waits.push([v, ms]), now: () => ts.now() }))
        .subscribe();
    });
    // one slot at once, then one every 100 ms at 10/s
    expect(waits).toEqual([
      [0, 0],
      [1, 100],
      [2, 200],
    ]);
  });

  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('|');
      expectObservable(src.pipe(rateLimit({ limiter: tokenBucket({ rate: 10, scheduler: ts }) }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('lets one value through at once while a permit is in store', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a|');
      expectObservable(src.pipe(rateLimit({ limiter: tokenBucket({ rate: 10, scheduler: ts }) }))).toBe('-a|');
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('spaces many values by the rate, in order, completing after the last', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('abc|');
      const out = src.pipe(rateLimit({ limiter: tokenBucket({ rate: 10, scheduler: ts }) }));
      expectObservable(out).toBe('a 99ms b 99ms (c|)');
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('uses the virtual asyncScheduler by default inside TestScheduler.run', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const out = cold('ab|').pipe(rateLimit({ limiter: tokenBucket({ rate: 4 }) }));
      expectObservable(out).toBe('a 249ms (b|)');
    });
  });

  it('errors at once when the source errors, giving up the queued places', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const limiter = tokenBucket({ rate: 10, scheduler: ts });
      const src = cold('abc#', undefined, new Error('source down'));
      expectObservable(src.pipe(rateLimit({ limiter }))).toBe('a--#', undefined, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^--!');
      // b and c left the queue: a later newcomer gets the very next permit, at 100.
      const later = cold('50ms x|').pipe(rateLimit({ limiter }));
      expectObservable(later).toBe('100ms (x|)');
    });
  });

  it('errors when the limiter errors', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      let n = 0;
      const limiter: RateLimiter = {
        acquire: () => (n++ === 1 ? throwError(() => new Error('redis down')) : of(undefined)),
      };
      const src = cold('a-b-c|');
      expectObservable(src.pipe(rateLimit({ limiter }))).toBe('a-#', undefined, new Error('redis down'));
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('errors when acquire throws (the callback of this operator)', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const limiter: RateLimiter = {
        acquire: () => {
          throw new Error('no limiter');
        },
      };
      const src = cold('-a-b|');
      expectObservable(src.pipe(rateLimit({ limiter }))).toBe('-#', undefined, new Error('no limiter'));
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
  });

  it('errors with ERR_RATE_LIMITER when the limiter completes without a permit', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const limiter: RateLimiter = { acquire: () => EMPTY };
      expectObservable(cold('-a|').pipe(rateLimit({ limiter }))).toBe(
        '-#',
        undefined,
        expect.objectContaining({ code: 'ERR_RATE_LIMITER' }) as unknown as Error,
      );
    });
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a-b-');
      expectObservable(src.pipe(rateLimit({ limiter: tokenBucket({ rate: 1000, burst: 1, scheduler: ts }) }))).toBe('-a-b-');
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source and gives up queued places when unsubscribed early', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const limiter = tokenBucket({ rate: 10, scheduler: ts });
      const src = cold('abc|');
      const unsub = '   150ms !';
      expectObservable(src.pipe(rateLimit({ limiter })), unsub).toBe('a 99ms b');
      expectSubscriptions(src.subscriptions).toBe('^--!');
      // c gave its place up at 150: another stream gets the permit of 200.
      expectObservable(cold('160ms x|').pipe(rateLimit({ limiter }))).toBe('200ms (x|)');
    });
  });

  it('emits each value when its own grant comes (a limiter per value: a slow dataflow does not hold a fast one)', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const slow = tokenBucket({ rate: 10, burst: 1, scheduler: ts });
      const fast = tokenBucket({ rate: 1000, burst: 1, scheduler: ts });
      const src = cold('abcd|', { a: 'slow', b: 'slow', c: 'fast', d: 'fast' });
      const out = src.pipe(rateLimit<string>({ limiter: (v) => (v === 'slow' ? slow : fast) }));
      expectObservable(out).toBe('a-cd 96ms (b|)', { a: 'slow', b: 'slow', c: 'fast', d: 'fast' });
    });
  });

  it('takes a free slot without subscribing (tryAcquire), and queues through acquire() otherwise', () => {
    const ts = scheduler();
    let subscribed = 0;
    ts.run(({ cold, expectObservable }) => {
      const bucket = tokenBucket({ rate: 10, burst: 1, scheduler: ts });
      const limiter: RateLimiter = {
        tryAcquire: () => bucket.tryAcquire?.() ?? false,
        acquire: () => {
          subscribed++;
          return bucket.acquire();
        },
      };
      expectObservable(cold('ab|').pipe(rateLimit({ limiter }))).toBe('a 99ms (b|)');
    });
    expect(subscribed).toBe(1);
  });

  it('refuses a value whose limiter errors or completes without granting: marked and passed on with `refused`, else the output errors', () => {
    const ts = scheduler();
    const refusedBy: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const closed: RateLimiter = { acquire: () => cold('--|') };
      const broken: RateLimiter = { acquire: () => cold('-#', undefined, new Error('redis limiter closed')) };
      const src = cold('ab|', { a: 'closed', b: 'broken' });
      const marked = src.pipe(
        rateLimit<string>({ limiter: (v) => (v === 'closed' ? closed : broken), refused: (v, err) => refusedBy.push(`${v} ${(err as { code?: string; message: string }).code ?? (err as Error).message}`) }),
      );
      expectObservable(marked).toBe('--(ab|)', { a: 'closed', b: 'broken' });
      expectObservable(cold('a|').pipe(rateLimit({ limiter: closed }))).toBe('--#', undefined, expect.objectContaining({ code: 'ERR_RATE_LIMITER' }) as unknown as Error);
    });
    expect(refusedBy).toEqual(['closed ERR_RATE_LIMITER', 'broken redis limiter closed']);
  });
});

describe('tokenBucket in virtual time', () => {
  it('grants 30 queued values of a 10/s limiter every 100 ms, the first at once', () => {
    const ts = scheduler();
    const times = grantTimes(ts, tokenBucket({ rate: 10, scheduler: ts }), 30);
    expect(times).toEqual(Array.from({ length: 30 }, (_, i) => i * 100));
  });

  it('serves fractional rates: 0.5/s and 2.5/s', () => {
    const ts = scheduler();
    expect(grantTimes(ts, tokenBucket({ rate: 0.5, scheduler: ts }), 4)).toEqual([0, 2000, 4000, 6000]);
    const ts2 = scheduler();
    const times = grantTimes(ts2, tokenBucket({ rate: 2.5, scheduler: ts2 }), 6);
    times.forEach((t, i) => expect(t).toBeCloseTo(i * 400, 6));
  });

  it('lets a full bucket out at once after an idle spell, then spaces by the rate', () => {
    const ts = scheduler();
    const limiter = tokenBucket({ rate: 100, burst: 3, scheduler: ts });
    const times: number[] = [];
    ts.run(({ cold }) => {
      cold('1000ms (abcdef|)')
        .pipe(rateLimit({ limiter }))
        .subscribe(() => times.push(ts.now()));
    });
    expect(times).toEqual([1000, 1000, 1000, 1010, 1020, 1030]);
  });

  it('defaults burst to max(1, floor(rate × 4%))', () => {
    expect(TOKEN_BUCKET_DEFAULTS.burst(10)).toBe(1);
    expect(TOKEN_BUCKET_DEFAULTS.burst(50)).toBe(2);
    expect(TOKEN_BUCKET_DEFAULTS.burst(100)).toBe(4);
    expect(TOKEN_BUCKET_DEFAULTS.burst(10_000)).toBe(400);
    const ts = scheduler();
    const times = grantTimes(ts, tokenBucket({ rate: 10_000, scheduler: ts }), 500);
    expect(times.filter((t) => t === 0)).toHaveLength(400);
    // then one every 0.1 ms: the 500th (index 499) at (499 − 399) × 0.1 ms
    expect(times[499]).toBeCloseTo(10, 6);
  });

  for (const rate of [1, 2.5, 7, 10, 99.5, 333, 1000, 10_000]) {
    it(`never exceeds rate × 1.05 in any 1-second window, and leaves no idle gap (rate ${rate}/s)`, () => {
      const ts = scheduler();
      const limiter = tokenBucket({ rate, scheduler: ts });
      const random = prng(Math.round(rate * 1000));
      // Demand in 60 bursts at random times in [0, 1000) and [2500, 3500): 20% over the rate
      // while it lasts, then an idle spell that refills the bucket, then a second wave.
      const n = Math.max(40, Math.ceil(rate * 2.4));
      const bursts = Array.from({ length: 60 }, (_, i) => ({
        at: Math.floor(random() * 1000) + (i % 2 === 0 ? 0 : 2500),
        size: 0,
      }));
      for (let i = 0; i < n; i++) bursts[Math.floor(random() * bursts.length)].size++;
      const granted: Array<{ arrived: number; at: number }> = [];
      ts.run(() => {
        from(bursts)
          .pipe(
            // one timer per burst, its values all at once: cheap for the virtual scheduler
            mergeMap(({ at, size }) => timer(at, ts).pipe(mergeMap(() => Array.from({ length: size }, () => at)))),
            rateLimit({ limiter }),
          )
          .subscribe((arrived) => granted.push({ arrived, at: ts.now() }));
      });
      expect(granted).toHaveLength(n);
      const times = granted.map((g) => g.at);
      const busiest = maxPerSecond(times);
      // A permit is a whole request: below 20/s, a 1-second window may hold ceil(rate).
      expect(busiest).toBeLessThanOrEqual(Math.max(rate * 1.05, Math.ceil(rate)));
      expect(busiest).toBeGreaterThanOrEqual(Math.floor(rate)); // and the rate is reached
      // No idle gap: a value that had to wait got the very next permit, which accrues at most
      // one interval after the previous grant.
      const interval = 1000 / rate;
      let waited = 0;
      let longestWait = 0;
      for (let i = 1; i < granted.length; i++) {
        const { arrived, at } = granted[i];
        if (at > arrived + 1e-6) {
          waited++;
          longestWait = Math.max(longestWait, at - granted[i - 1].at);
        }
      }
      expect(longestWait).toBeLessThanOrEqual(interval + 1e-6);
      expect(waited).toBeGreaterThan(n / 4); // the run did keep a queue
    });
  }

  it('keeps at most one timer pending however many wait', () => {
    const ts = scheduler();
    let pending = 0;
    let maxPending = 0;
    // A scheduler that counts its pending actions.
    const counting: SchedulerLike = {
      now: () => ts.now(),
      schedule<S>(work: (this: SchedulerAction<S>, state?: S) => void, delay?: number, state?: S): Subscription {
        let done = false;
        pending++;
        maxPending = Math.max(maxPending, pending);
        const sub = ts.schedule<S>(
          function (this: SchedulerAction<S>, s?: S) {
            if (!done) pending--;
            done = true;
            work.call(this, s);
          },
          delay,
          state,
        );
        sub.add(() => {
          if (!done) pending--;
          done = true;
        });
        return sub;
      },
    };
    const times = grantTimes(ts, tokenBucket({ rate: 50, scheduler: counting }), 1000);
    expect(times).toHaveLength(1000);
    expect(times[999]).toBeCloseTo(998 * 20, 6); // burst 2 at once, then one every 20 ms
    expect(maxPending).toBe(1);
    expect(pending).toBe(0);
  });

  it('serves waiters first in, first out, and a waiter that gives up loses its place', () => {
    const ts = scheduler();
    const limiter = tokenBucket({ rate: 10, scheduler: ts });
    const log: string[] = [];
    ts.run(() => {
      const take = (name: string) => limiter.acquire().subscribe(() => log.push(`${name}@${ts.now()}`));
      take('a');
      take('b');
      const c = take('c');
      take('d');
      ts.schedule(() => c.unsubscribe(), 150);
    });
    expect(log).toEqual(['a@0', 'b@100', 'd@200']);
  });

  it('serves a consumer that asks for its next permit from inside a grant (concatMap)', () => {
    const ts = scheduler();
    const limiter = tokenBucket({ rate: 10, burst: 2, scheduler: ts });
    const times: number[] = [];
    ts.run(() => {
      from([1, 2, 3, 4, 5])
        .pipe(concatMap((v) => limiter.acquire().pipe(map(() => v))))
        .subscribe(() => times.push(ts.now()));
    });
    expect(times).toEqual([0, 0, 100, 200, 300]);
  });

  it('leaves no timer behind when every waiter gives up', () => {
    const ts = scheduler();
    const limiter = tokenBucket({ rate: 1, scheduler: ts });
    let fired = 0;
    ts.run(() => {
      limiter.acquire().subscribe(); // the permit in store
      const waiting = limiter.acquire().subscribe(() => fired++);
      ts.schedule(() => waiting.unsubscribe(), 10);
    });
    expect(fired).toBe(0);
    // The cancelled timer never ran: the virtual clock stopped at the unsubscribe.
    expect(ts.now()).toBe(10);
  });

  it('rejects a rate out of (0, 10000] and a burst below 1', () => {
    expect(() => tokenBucket({ rate: 0 })).toThrow(RangeError);
    expect(() => tokenBucket({ rate: 10_001 })).toThrow(RangeError);
    expect(() => tokenBucket({ rate: Number.NaN })).toThrow(RangeError);
    expect(() => tokenBucket({ rate: 10, burst: 0 })).toThrow(RangeError);
    expect(() => tokenBucket({ rate: 10, burst: 1.5 })).toThrow(RangeError);
  });
});

describe('tokenBucket in real time', () => {
  it('paces 300 values at 1000/s on the real asyncScheduler, never faster', async () => {
    const limiter = tokenBucket({ rate: 1000 }); // burst 40
    const started = Date.now();
    const times = await lastValueFrom(
      from(Array.from({ length: 300 }, (_, i) => i)).pipe(rateLimit({ limiter }), map(() => Date.now() - started), toArray()),
    );
    expect(times).toHaveLength(300);
    // 40 at once, then 260 more at one per ms: never sooner than 259 ms.
    expect(times[299]).toBeGreaterThanOrEqual(259);
    expect(times[299]).toBeLessThan(5000);
    expect(maxPerSecond(times)).toBeLessThanOrEqual(1050);
  });
});
