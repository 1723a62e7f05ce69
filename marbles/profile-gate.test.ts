import { describe, it, expect } from 'vitest';
import { delay, mergeMap, of, type MonoTypeOperatorFunction } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { profileGate } from '../src/operators/profile-gate.js';

const ts = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));

/** Values are `<key><n>` (e.g. a1: key a); the stage between enter and leave takes `ms(value)` frames. */
const key = (v: string): string => v[0]!;
const work = (ms: (v: string) => number): MonoTypeOperatorFunction<string> => mergeMap((v) => of(v).pipe(delay(ms(v))));

function gated(maxInside: number, ms: (v: string) => number): MonoTypeOperatorFunction<string> {
  return (src) => {
    const gate = profileGate<string>({ key, maxInside });
    return src.pipe(gate.enter(), work(ms), gate.leave());
  };
}

describe('profileGate', () => {
  it('completes at once on an empty source', () => {
    ts().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('|');
      expectObservable(src.pipe(gated(2, () => 1))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('lets one value through', () => {
    ts().run(({ cold, expectObservable }) => {
      expectObservable(cold('a|', { a: 'a1' }).pipe(gated(2, () => 2))).toBe('--(a|)', { a: 'a1' });
    });
  });

  it('keeps one key in order (the next enters only once the previous left); other keys run meanwhile', () => {
    ts().run(({ cold, expectObservable }) => {
      const v = { a: 'a1', b: 'b1', c: 'a2' };
      // a1 takes 5, b1 2, a2 1: a2 waits for a1 (out at 5), enters at 5, out at 6.
      expectObservable(cold('abc|', v).pipe(gated(10, (x) => ({ a1: 5, b1: 2, a2: 1 })[x] ?? 0))).toBe('---b-a(c|)', v);
    });
  });

  it('holds at most maxInside values inside; the others wait in arrival order', () => {
    const t = ts();
    const out: string[] = [];
    t.run(({ cold }) => {
      const v = { a: 'a1', b: 'b1', c: 'c1', d: 'd1' };
      cold('(abcd|)', v).pipe(gated(2, () => 3)).subscribe((x) => out.push(`${t.now()} ${x}`));
    });
    expect(out).toEqual(['3 a1', '3 b1', '6 c1', '6 d1']);
  });

  it('passes a source error through', () => {
    ts().run(({ cold, expectObservable }) => {
      expectObservable(cold('a#', { a: 'a1' }).pipe(gated(2, () => 0))).toBe('a#', { a: 'a1' });
    });
  });

  it('stays open on a never-ending source', () => {
    ts().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('a-', { a: 'a1' });
      expectObservable(src.pipe(gated(2, () => 1))).toBe('-a-', { a: 'a1' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribing early unsubscribes the source and forgets what waits', () => {
    ts().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('(ab)c|', { a: 'a1', b: 'a2', c: 'a3' });
      expectObservable(src.pipe(gated(2, () => 3)), '----!').toBe('---a', { a: 'a1' });
      expectSubscriptions(src.subscriptions).toBe('^---!');
    });
  });

  it('errors when the key function throws', () => {
    ts().run(({ cold, expectObservable }) => {
      const gate = profileGate<string>({
        key: () => {
          throw new Error('no key');
        },
      });
      expectObservable(cold('a|', { a: 'a1' }).pipe(gate.enter(), gate.leave())).toBe('#', undefined, new Error('no key'));
    });
  });

  it('refuses maxInside below 1', () => {
    expect(() => profileGate<string>({ key, maxInside: 0 })).toThrow(RangeError);
  });
});
