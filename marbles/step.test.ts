/**
 * `step`, the building block of the chain's asynchronous operators, with a synchronous step
 * (`out.next` at once) and an asynchronous one (`out.hold()`, work on the TestScheduler
 * `delay(v)` frames later, then `out.next` and `out.release()`); and `settle`.
 */
import { describe, it, expect } from 'vitest';
import type { Unsubscribable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { settle, step, type StepOutput } from '../src/operators/internal/step.js';

const scheduler = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));

/** Emits each value at once, upper-cased. */
const upper = step<string, string>(() => (v, out) => out.next(v.toUpperCase()));

/**
 * Emits each value upper-cased `delay(v)` frames later, with the work's timer added as a
 * teardown (and removed once done); `log` sees starts, ends and teardowns.
 */
function later(ts: TestScheduler, log: string[], delay: (v: string) => number) {
  return step<string, string>(() => (v, out) => {
    out.hold();
    log.push(`${ts.now()} start ${v}`);
    const timer = ts.schedule(() => {
      out.remove(teardown);
      log.push(`${ts.now()} end ${v}`);
      out.next(v.toUpperCase());
      out.release();
    }, delay(v));
    const teardown: Unsubscribable = {
      unsubscribe: () => {
        log.push(`${ts.now()} teardown ${v}`);
        timer.unsubscribe();
      },
    };
    out.add(teardown);
  });
}

describe('step', () => {
  it('completes at once on an empty source', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('|');
      expectObservable(src.pipe(upper)).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('one value: a synchronous step emits it at once', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a|', { a: 'x' });
      expectObservable(src.pipe(upper)).toBe('-a|', { a: 'X' });
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('many: an asynchronous step emits in the order its work ends, and completes once the source is done and nothing is held', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const src = cold('ab|', { a: 'a', b: 'b' });
      expectObservable(src.pipe(later(ts, log, (v) => (v === 'a' ? 5 : 1)))).toBe('--b--(a|)', { a: 'A', b: 'B' });
    });
    expect(log).toEqual(['0 start a', '1 start b', '2 end b', '5 end a']);
  });

  it('a value released before the source completes does not complete the output', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold('a---|', { a: 'a' }).pipe(later(ts, [], () => 1))).toBe('-a--|', { a: 'A' });
    });
  });

  it('passes a source error through and runs the teardowns of the work in flight', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('a-#', { a: 'a' }, new Error('source broke'));
      expectObservable(src.pipe(later(ts, log, () => 5))).toBe('--#', undefined, new Error('source broke'));
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
    expect(log).toEqual(['0 start a', '2 teardown a']);
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a-', { a: 'a' });
      expectObservable(src.pipe(later(ts, [], () => 2))).toBe('---a-', { a: 'A' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribed early: unsubscribes the source and runs every teardown still added, not the removed ones', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('ab--c|', { a: 'a', b: 'b', c: 'c' });
      expectObservable(src.pipe(later(ts, log, (v) => (v === 'a' ? 1 : 10))), '---!').toBe('-a', { a: 'A' });
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
    expect(log).toEqual(['0 start a', '1 start b', '1 end a', '3 teardown b']);
  });

  it('unsubscribed early: a result that arrives late is not emitted, and `closed` says so', () => {
    const ts = scheduler();
    const seen: string[] = [];
    let output: StepOutput<string> | undefined;
    ts.run(({ cold, expectObservable }) => {
      const op = step<string, string>(() => (v, out) => {
        output = out;
        out.hold();
        // work that cannot be cancelled (no teardown added)
        ts.schedule(() => {
          seen.push(`closed=${out.closed}`);
          out.next(v);
          out.release();
        }, 3);
      });
      expectObservable(cold('a|', { a: 'a' }).pipe(op), '-!').toBe('');
    });
    expect(seen).toEqual(['closed=true']);
    expect(output?.closed).toBe(true);
  });

  it('a throwing onValue errors the output and unsubscribes the source', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('ab|', { a: 'ok', b: 'bad' });
      const op = step<string, string>(() => (v, out) => {
        if (v === 'bad') throw new Error('onValue broke');
        out.next(v);
      });
      expectObservable(src.pipe(op)).toBe('a#', { a: 'ok' }, new Error('onValue broke'));
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
  });

  it('a throwing init errors the output at subscription; out.error errors it later', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const broken = step<string, string>(() => {
        throw new Error('init broke');
      });
      expectObservable(cold('a|', { a: 'a' }).pipe(broken)).toBe('#', undefined, new Error('init broke'));
      const failing = step<string, string>(() => (_v, out) => out.error(new Error('a bug')));
      expectObservable(cold('-a|', { a: 'a' }).pipe(failing)).toBe('-#', undefined, new Error('a bug'));
    });
  });

  it('calls init once per subscription: each has its own state', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const counting = step<string, number>(() => {
        let n = 0;
        return (_v, out) => out.next(++n);
      });
      const src = cold('ab|', { a: 'a', b: 'b' });
      const out = src.pipe(counting);
      expectObservable(out).toBe('ab|', { a: 1, b: 2 });
      expectObservable(out).toBe('ab|', { a: 1, b: 2 });
    });
  });
});

describe('settle', () => {
  it('hands a synchronous throw to fail at once, and an answer or a rejection later', async () => {
    const log: string[] = [];
    settle(
      () => {
        throw new Error('sync');
      },
      () => log.push('ok'),
      (e) => log.push(`fail ${(e as Error).message}`),
    );
    expect(log).toEqual(['fail sync']);
    settle(() => Promise.resolve(1), (v) => log.push(`ok ${v}`), () => log.push('fail'));
    settle(() => Promise.reject(new Error('async')), () => log.push('ok'), (e) => log.push(`fail ${(e as Error).message}`));
    expect(log).toEqual(['fail sync']);
    await Promise.resolve();
    expect(log).toEqual(['fail sync', 'ok 1', 'fail async']);
  });
});
