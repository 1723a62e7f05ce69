/**
 * `tokenBucket` at very low rates (issue 14): a permit that accrues further away than a Node
 * timer can wait (2^31-1 ms) must not turn into a 1-ms timer that fires, finds nothing and is
 * set again (it spun at `rateLimit: 1e-300`, with a TimeoutOverflowWarning each time).
 */
import { asyncScheduler, type SchedulerAction, type SchedulerLike, type Subscription } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { tokenBucket } from '../../src/stores/memory-rate-limiter.js';

/** The async scheduler, counting the timers set through it. */
function countingScheduler(): SchedulerLike & { timers: number } {
  const s = {
    timers: 0,
    now: () => asyncScheduler.now(),
    schedule<T>(work: (this: SchedulerAction<T>, state?: T) => void, delay?: number, state?: T): Subscription {
      s.timers++;
      return asyncScheduler.schedule(work, delay, state);
    },
  };
  return s;
}

describe('tokenBucket at very low rates', () => {
  for (const rate of [1e-300, 1e-9]) {
    it(`rate ${rate}: the first permit at once, then one timer and no spin, no TimeoutOverflowWarning`, async () => {
      const warnings: string[] = [];
      const onWarning = (w: Error): void => void warnings.push(w.name);
      process.on('warning', onWarning);
      const scheduler = countingScheduler();
      const limiter = tokenBucket({ rate, scheduler });
      let granted = 0;
      const first = limiter.acquire().subscribe(() => granted++);
      const second = limiter.acquire().subscribe(() => granted++);
      try {
        await new Promise((r) => setTimeout(r, 200));
        expect(granted).toBe(1);
        expect(scheduler.timers, 'timers set in 200 ms').toBeLessThanOrEqual(1);
        expect(warnings).toEqual([]);
      } finally {
        first.unsubscribe();
        second.unsubscribe();
        process.off('warning', onWarning);
      }
    });
  }
});
