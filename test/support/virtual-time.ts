/**
 * Promises in virtual time, for marble tests: a real Promise settles in a microtask, outside
 * the TestScheduler's frames; a thenable settled by a scheduled action stays inside them.
 */
import type { TestScheduler } from 'rxjs/testing';

/**
 * A promise in virtual time: a thenable that runs `work` `delay` frames later on the
 * TestScheduler (at once, synchronously, for 0) and settles with its result or its throw.
 * Every `then` runs `work` again and returns the same thenable: give it to one consumer, do
 * not chain it.
 */
export function later<T>(ts: TestScheduler, delay: number, work: () => T): Promise<T> {
  const t = {
    then(ok: (v: T) => void, fail: (e: unknown) => void) {
      const go = (): void => {
        let v: T;
        try {
          v = work();
        } catch (err) {
          fail(err);
          return;
        }
        ok(v);
      };
      if (delay > 0) ts.schedule(go, delay);
      else go();
      return t;
    },
  };
  // A thenable is all the stages use of the promise (`settle`, `.then(ok, fail)`).
  return t as unknown as Promise<T>;
}
