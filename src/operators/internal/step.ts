/**
 * `step`: the building block of the chain's asynchronous operators — one subscription for the
 * life of the worker, a counter of values in flight, no Observable per value.
 *
 * Not a stage of the chain (src/worker/pipeline.ts composes the operators built on it), hence
 * under `internal/`; its own marble file is marbles/step.test.ts.
 */
import { Observable, type OperatorFunction, type Unsubscribable } from 'rxjs';

/** What a step's `onValue` may do with the output. */
export interface StepOutput<R> {
  /** Emits `value` (ignored once the output is closed). */
  next(value: R): void;
  /** One more value is in flight: the output does not complete before `release()`. */
  hold(): void;
  /** A value held by `hold()` is out; completes the output when the source is done and none is left. */
  release(): void;
  /** Errors the output (a bug, not a message's trouble: the chain stops). */
  error(err: unknown): void;
  /** Unsubscribes `teardown` when the output is unsubscribed (timers, requests in flight). O(1). */
  add(teardown: Unsubscribable): void;
  /** Forgets a teardown added by `add` (its work is done). O(1). */
  remove(teardown: Unsubscribable): void;
  /** True once the output ended or was unsubscribed: results that arrive late are dropped. */
  readonly closed: boolean;
}

/**
 * Builds an operator from `onValue(value, out)`, called once per value. A synchronous step
 * calls `out.next` at once; an asynchronous one calls `out.hold()`, starts its work, and later
 * `out.next(…)` then `out.release()`. The output completes once the source has completed and
 * every held value was released; a source error passes through; unsubscribing runs every
 * teardown added with `out.add` (cancelling requests and timers). A throwing `onValue` errors
 * the output.
 *
 * `new Observable` because the RxJS combinations (`mergeMap` over `from(promise)`) cost an
 * inner Observable and subscription per value, which is most of a message's CPU at the
 * chain's rates (bench/README.md).
 *
 * @example
 * const confirmEach = step<Env, Env>(() => (env, out) => {
 *   out.hold();
 *   store.confirm(env.id).then(() => { out.next(env); out.release(); });
 * });
 */
export function step<T, R>(init: () => (value: T, out: StepOutput<R>) => void): OperatorFunction<T, R> {
  return (source) =>
    new Observable<R>((subscriber) => {
      const onValue = init();
      const teardowns = new Set<Unsubscribable>();
      let held = 0;
      let sourceDone = false;
      const out: StepOutput<R> = {
        next: (value) => {
          if (!subscriber.closed) subscriber.next(value);
        },
        hold: () => {
          held++;
        },
        release: () => {
          held--;
          if (sourceDone && held === 0) subscriber.complete();
        },
        error: (err) => subscriber.error(err),
        add: (t) => {
          teardowns.add(t);
        },
        remove: (t) => {
          teardowns.delete(t);
        },
        get closed() {
          return subscriber.closed;
        },
      };
      const sub = source.subscribe({
        next: (value) => {
          try {
            onValue(value, out);
          } catch (err) {
            subscriber.error(err);
          }
        },
        error: (err: unknown) => subscriber.error(err),
        complete: () => {
          sourceDone = true;
          if (held === 0) subscriber.complete();
        },
      });
      return () => {
        sub.unsubscribe();
        for (const t of teardowns) t.unsubscribe();
        teardowns.clear();
      };
    });
}

/**
 * Calls `fn` and hands its answer to `ok` or `fail`: a synchronous throw goes to `fail` at
 * once (not a microtask later, so it stays in a marble test's virtual time), a rejection later.
 */
export function settle<T>(fn: () => PromiseLike<T>, ok: (value: T) => void, fail: (err: unknown) => void): void {
  let answer: PromiseLike<T>;
  try {
    answer = fn();
  } catch (err) {
    fail(err);
    return;
  }
  answer.then(ok, fail);
}

/**
 * The store step of an export task (queue it, store it as failed): holds `out`, runs `fn`, and
 * once it settles emits the task — marked by `done` on success, abandoned (its message comes
 * back later) on failure. Results after the output closed are dropped.
 *
 * @example
 * settleTask(out, task, () => queues.enqueue(task.job, task.attempts), () => (task.outcome = queued(task)));
 */
export function settleTask<T, R extends { abandoned?: unknown }>(out: StepOutput<R>, task: R, fn: () => PromiseLike<T>, done: (value: T) => void): void {
  out.hold();
  settle(
    fn,
    (value) => {
      if (out.closed) return;
      done(value);
      out.next(task);
      out.release();
    },
    (err: unknown) => {
      if (out.closed) return;
      task.abandoned = err;
      out.next(task);
      out.release();
    },
  );
}
