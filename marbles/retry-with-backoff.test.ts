import { describe, it, expect } from 'vitest';
import { defer, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import {
  backoffDelay,
  retryWithBackoff,
  type RetryInfo,
  type RetryWithBackoffOptions,
} from '../src/operators/retry-with-backoff.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/** random() = 1 makes the jitter take the full delay, so virtual times are exact. */
const base: RetryWithBackoffOptions = { minDelayMs: 10, maxDelayMs: 100, random: () => 1 };

describe('retryWithBackoff', () => {
  it('passes an empty source through', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('|');
      expectObservable(src.pipe(retryWithBackoff({ ...base, scheduler: ts }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('passes one value through', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('--a|');
      expectObservable(src.pipe(retryWithBackoff({ ...base, scheduler: ts }))).toBe('--a|');
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('passes many values through', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a-b-c|');
      expectObservable(src.pipe(retryWithBackoff({ ...base, scheduler: ts }))).toBe('-a-b-c|');
      expectSubscriptions(src.subscriptions).toBe('^-----!');
    });
  });

  it('resubscribes after 10 ms then 20 ms and errors after the last retry', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('--#', undefined, new Error('boom'));
      //  attempt 1: 0..2, wait 10 → attempt 2: 12..14, wait 20 → attempt 3: 34..36, error at 36
      expectObservable(src.pipe(retryWithBackoff({ ...base, scheduler: ts }))).toBe(
        '36ms #',
        undefined,
        new Error('boom'),
      );
      expectSubscriptions(src.subscriptions).toBe(['^-!', '12ms ^-!', '34ms ^-!']);
    });
  });

  it('caps the exponential delay at maxDelayMs and honours `retries`', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('#');
      // delays 10, 20, 25 (40 capped), 25 (80 capped)
      const out = src.pipe(retryWithBackoff({ ...base, maxDelayMs: 25, retries: 4, scheduler: ts }));
      expectObservable(out).toBe('80ms #');
      expectSubscriptions(src.subscriptions).toBe(['(^!)', '10ms (^!)', '30ms (^!)', '55ms (^!)', '80ms (^!)']);
    });
  });

  it('succeeds on the second attempt, keeping values of both attempts', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const first = cold('-x-#');
      const second = cold('--a|');
      const sources = [first, second];
      let n = 0;
      const src = defer(() => sources[n++]);
      //  first: 0..3, wait 10 → second subscribed at 13, a at 15, complete at 16
      expectObservable(src.pipe(retryWithBackoff({ ...base, scheduler: ts }))).toBe('-x 11ms --a|');
      expectSubscriptions(first.subscriptions).toBe('^--!');
      expectSubscriptions(second.subscriptions).toBe('13ms ^--!');
    });
  });

  it('rethrows a non-retryable error at once', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('--#', undefined, 'permanent');
      const out = src.pipe(
        retryWithBackoff({ ...base, scheduler: ts, isRetryable: (e) => e !== 'permanent' }),
      );
      expectObservable(out).toBe('--#', undefined, 'permanent');
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('honours Retry-After when it is longer than the backoff', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('#', undefined, { retryAfter: 50 });
      const out = src.pipe(
        retryWithBackoff({
          ...base,
          scheduler: ts,
          retryAfterMaxMs: 1_000,
          retryAfterMs: (e) => (e as { retryAfter: number }).retryAfter,
        }),
      );
      expectObservable(out).toBe('100ms #', undefined, { retryAfter: 50 });
      expectSubscriptions(src.subscriptions).toBe(['(^!)', '50ms (^!)', '100ms (^!)']);
    });
  });

  it('keeps the backoff when Retry-After is shorter', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('#');
      const out = src.pipe(retryWithBackoff({ ...base, scheduler: ts, retryAfterMs: () => 1 }));
      expectObservable(out).toBe('30ms #');
      expectSubscriptions(src.subscriptions).toBe(['(^!)', '10ms (^!)', '30ms (^!)']);
    });
  });

  it('caps Retry-After at retryAfterMaxMs', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('#');
      const out = src.pipe(
        retryWithBackoff({ ...base, scheduler: ts, retryAfterMaxMs: 40, retryAfterMs: () => 3_600_000 }),
      );
      expectObservable(out).toBe('80ms #');
      expectSubscriptions(src.subscriptions).toBe(['(^!)', '40ms (^!)', '80ms (^!)']);
    });
  });

  it('mirrors a never-ending source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a--');
      const unsub = '-------!';
      expectObservable(src.pipe(retryWithBackoff({ ...base, scheduler: ts })), unsub).toBe('-a------');
      expectSubscriptions(src.subscriptions).toBe('^------!');
    });
  });

  it('does not resubscribe when unsubscribed during a backoff wait', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a#');
      const unsub = '-------!';
      expectObservable(src.pipe(retryWithBackoff({ ...base, scheduler: ts })), unsub).toBe('-a------');
      // only the first subscription: the retry due at 12 never happens
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('errors with what a throwing isRetryable callback threw', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('--#');
      const failure = new Error('callback broke');
      const out = src.pipe(
        retryWithBackoff({
          ...base,
          scheduler: ts,
          isRetryable: () => {
            throw failure;
          },
        }),
      );
      expectObservable(out).toBe('--#', undefined, failure);
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('tells onRetry about each wait', () => {
    const ts = scheduler();
    const seen: RetryInfo[] = [];
    ts.run(({ cold, expectObservable }) => {
      const src: Observable<string> = cold('#', undefined, 'e');
      const out = src.pipe(retryWithBackoff({ ...base, scheduler: ts, onRetry: (i) => seen.push(i) }));
      expectObservable(out).toBe('30ms #', undefined, 'e');
    });
    expect(seen).toEqual([
      { error: 'e', attempt: 1, delayMs: 10 },
      { error: 'e', attempt: 2, delayMs: 20 },
    ]);
  });

  it('uses equal jitter: random 0 halves the delay', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('#');
      const out = src.pipe(retryWithBackoff({ ...base, random: () => 0, scheduler: ts }));
      expectObservable(out).toBe('15ms #');
      expectSubscriptions(src.subscriptions).toBe(['(^!)', '5ms (^!)', '15ms (^!)']);
    });
  });
});

describe('backoffDelay', () => {
  const opts = { minDelayMs: 1_000, maxDelayMs: 60_000, retryAfterMaxMs: 120_000 };
  it('grows exponentially with equal jitter in [d/2, d]', () => {
    expect(backoffDelay({ ...opts, attempt: 1, random: () => 0 })).toBe(500);
    expect(backoffDelay({ ...opts, attempt: 1, random: () => 0.5 })).toBe(750);
    expect(backoffDelay({ ...opts, attempt: 3, random: () => 1 })).toBe(4_000);
    expect(backoffDelay({ ...opts, attempt: 10, random: () => 1 })).toBe(60_000);
  });
  it('takes the larger of Retry-After and the backoff, capped', () => {
    expect(backoffDelay({ ...opts, attempt: 1, random: () => 1, retryAfter: 5_000 })).toBe(5_000);
    expect(backoffDelay({ ...opts, attempt: 1, random: () => 1, retryAfter: 10 })).toBe(1_000);
    expect(backoffDelay({ ...opts, attempt: 1, random: () => 1, retryAfter: 10_000_000 })).toBe(120_000);
  });
});
