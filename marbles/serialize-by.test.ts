import { describe, it, expect } from 'vitest';
import { from, lastValueFrom, Observable, of, Subject, take, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { serializeBy, serializeByLiveKeys } from '../src/operators/serialize-by.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/** Values are `<key><n>`: `A1` is the first value of key `A`. */
const keyOf = (v: string): string => v[0];

describe('serializeBy', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('|');
      expectObservable(src.pipe(serializeBy({ key: keyOf, project: (v) => of(v) }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('projects one value', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('-a|', { a: 'A1' });
      const inner = cold<string>(' --(x|)', { x: 'A1!' });
      expectObservable(src.pipe(serializeBy({ key: keyOf, project: () => inner }))).toBe('---(x|)', { x: 'A1!' });
      expectSubscriptions(src.subscriptions).toBe('^-!');
      expectSubscriptions(inner.subscriptions).toBe('-^-!');
    });
  });

  it('runs one key strictly in order and different keys concurrently', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const values = { a: 'A1', b: 'B1', c: 'A2', d: 'B2' };
      const inners: Record<string, Observable<string>> = {};
      const subs: Record<string, ReturnType<typeof cold<string>>['subscriptions']> = {};
      for (const v of Object.values(values)) {
        const c = cold<string>('---(x|)', { x: v });
        inners[v] = c;
        subs[v] = c.subscriptions;
      }
      const src = cold<string>('abcd|', values);
      const out = src.pipe(serializeBy({ key: keyOf, project: (v) => inners[v] }));
      expectObservable(out).toBe('---ab-c(d|)', values);
      expectSubscriptions(src.subscriptions).toBe('^---!');
      expectSubscriptions(subs.A1).toBe('^--!      ');
      expectSubscriptions(subs.B1).toBe('-^--!     ');
      expectSubscriptions(subs.A2).toBe('---^--!   '); // waited for A1
      expectSubscriptions(subs.B2).toBe('----^--!  '); // waited for B1
    });
  });

  it('passes the arrival index to project and merges every emission of a project', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const src = cold<string>('ab|', { a: 'A1', b: 'A2' });
      const out = src.pipe(serializeBy({ key: keyOf, project: (v, i) => cold('-x-y|', { x: `${v}#${i}`, y: `${v}.` }) }));
      expectObservable(out).toBe('-x-y-z-w|', { x: 'A1#0', y: 'A1.', z: 'A2#1', w: 'A2.' });
    });
  });

  it('keeps the global concurrency limit and starts waiting values in arrival order', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      // concurrency 1: A1 runs; B1, B2, A2, C1 wait. Arrival order is kept across keys
      // (A2 before C1) and B2 never overtakes B1.
      const values = { a: 'A1', b: 'B1', c: 'B2', d: 'A2', e: 'C1' };
      const src = cold<string>('abcde|', values);
      const out = src.pipe(serializeBy({ key: keyOf, project: (v) => cold('--(x|)', { x: v }), concurrency: 1 }));
      expectObservable(out).toBe('--a-b-c-d-(e|)', values);
    });
  });

  it('never lets a waiting value overtake an earlier one of its key under a limit of 2', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      // A1 (long) and B1 fill both slots; A2 and C1 wait. When B1 ends, A2 is the earliest
      // waiting value but A is busy, so C1 starts; A2 starts when A1 ends.
      const values = { a: 'A1', b: 'B1', c: 'A2', d: 'C1' };
      const durations: Record<string, string> = { A1: '------(x|)', B1: '--(x|)', A2: '--(x|)', C1: '----(x|)' };
      const src = cold<string>('abcd|', values);
      const out = src.pipe(
        serializeBy({ key: keyOf, project: (v) => cold(durations[v], { x: v }), concurrency: 2 }),
      );
      // B1 1..3, C1 3..7, A1 0..6, A2 6..8
      expectObservable(out).toBe('---b--ad(c|)', values);
    });
  });

  it('errors when the source errors, unsubscribing running projects', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('ab-#', { a: 'A1', b: 'B1' }, new Error('source down'));
      const inner = cold<string>('-----x|');
      const out = src.pipe(serializeBy({ key: keyOf, project: () => inner }));
      expectObservable(out).toBe('---#', undefined, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^--!');
      expectSubscriptions(inner.subscriptions).toBe(['^--!', '-^-!']);
    });
  });

  it('errors when a project errors, unsubscribing the source and the other projects', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('ab---c|', { a: 'A1', b: 'B1', c: 'C1' });
      const slow = cold<string>('------x|');
      const failing = cold<string>('-y-#', { y: 'B1' }, new Error('apply failed'));
      const out = src.pipe(serializeBy({ key: keyOf, project: (v) => (v === 'B1' ? failing : slow) }));
      expectObservable(out).toBe('--y-#', { y: 'B1' }, new Error('apply failed'));
      expectSubscriptions(src.subscriptions).toBe('^---!');
      expectSubscriptions(slow.subscriptions).toBe('^---!');
      expectSubscriptions(failing.subscriptions).toBe('-^--!');
    });
  });

  it('errors when the key callback throws', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('a-b-c|', { a: 'A1', b: 'B1', c: 'C1' });
      const inner = cold<string>('----x|');
      const key = (v: string): string => {
        if (v === 'B1') throw new Error('no key');
        return keyOf(v);
      };
      expectObservable(src.pipe(serializeBy({ key, project: () => inner }))).toBe('--#', undefined, new Error('no key'));
      expectSubscriptions(src.subscriptions).toBe('^-!');
      expectSubscriptions(inner.subscriptions).toBe('^-!');
    });
  });

  it('errors when the project callback throws', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('a-b-c|', { a: 'A1', b: 'B1', c: 'C1' });
      const inner = cold<string>('----x|');
      const project = (v: string): Observable<string> => {
        if (v === 'B1') throw new Error('bad project');
        return inner;
      };
      expectObservable(src.pipe(serializeBy({ key: keyOf, project }))).toBe('--#', undefined, new Error('bad project'));
      expectSubscriptions(src.subscriptions).toBe('^-!');
      expectSubscriptions(inner.subscriptions).toBe('^-!');
    });
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('-a-b-', { a: 'A1', b: 'A2' });
      const out = src.pipe(serializeBy({ key: keyOf, project: (v) => cold('-(x|)', { x: v }) }));
      expectObservable(out).toBe('--a-b-', { a: 'A1', b: 'A2' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source and every running project when unsubscribed early', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<string>('abc---|', { a: 'A1', b: 'B1', c: 'A2' });
      const inner = cold<string>('--x---|');
      const unsub = '             ----!   ';
      const out = src.pipe(serializeBy({ key: keyOf, project: () => inner }));
      expectObservable(out, unsub).toBe('--xx    ');
      expectSubscriptions(src.subscriptions).toBe('^---!   ');
      // A2 never started: A1 was still running when the output was unsubscribed.
      expectSubscriptions(inner.subscriptions).toBe(['^---!', '-^--!']);
    });
  });

  it('unsubscribes a project that emits synchronously into a consumer that stops', () => {
    let finalized = 0;
    const project = (v: number): Observable<number> =>
      new Observable<number>((subscriber) => {
        subscriber.next(v); // the consumer (take(1)) unsubscribes during this call
        return () => finalized++;
      });
    const out: number[] = [];
    const sub = of(1, 2)
      .pipe(serializeBy({ key: String, project }), take(1))
      .subscribe((v) => out.push(v));
    expect(out).toEqual([1]);
    expect(sub.closed).toBe(true);
    expect(finalized).toBe(1);
  });

  it('drops a key as soon as its queue is empty', () => {
    const ts = scheduler();
    const base = serializeByLiveKeys();
    const counts: number[] = [];
    ts.run(({ cold, expectObservable }) => {
      const values = { a: 'A1', b: 'B1', c: 'A2' };
      const durations: Record<string, string> = { A1: '-(x|)', B1: '------(x|)', A2: '-(x|)' };
      const src = cold<string>('ab-c|', values);
      const out = src.pipe(serializeBy({ key: keyOf, project: (v) => cold(durations[v], { x: v }) }));
      // Probes between frames (x.5), so they never race an event of the same frame.
      for (const at of [0.5, 1.5, 2.5, 3.5, 5.5, 7.5]) ts.schedule(() => counts.push(serializeByLiveKeys() - base), at);
      expectObservable(out).toBe('-a--c--(b|)', values);
    });
    // A1 runs 0..1: {A}; B1 runs 1..7: {B}; A2 runs 3..4: {A, B}; then {B}; then nothing
    expect(counts).toEqual([1, 1, 1, 2, 1, 0]);
    expect(serializeByLiveKeys()).toBe(base);
  });

  it('holds no state after a many-keys run, synchronous or not', async () => {
    const base = serializeByLiveKeys();
    const n = 50_000;
    const values = Array.from({ length: n }, (_, i) => i);
    let peak = 0;
    // Asynchronous projects: every key is alive at once, then all are dropped.
    const got = await lastValueFrom(
      from(values).pipe(
        serializeBy({
          key: (i) => `k${i}`,
          project: (i) => {
            peak = Math.max(peak, serializeByLiveKeys() - base);
            return Promise.resolve(i);
          },
        }),
        toArray(),
      ),
    );
    expect(got).toHaveLength(n);
    expect(peak).toBe(n);
    expect(serializeByLiveKeys()).toBe(base);
    // Synchronous projects: a key lives only while its project runs.
    let syncPeak = 0;
    const sync = await lastValueFrom(
      from(values).pipe(
        serializeBy({
          key: (i) => `k${i % 1000}`,
          project: (i) => {
            syncPeak = Math.max(syncPeak, serializeByLiveKeys() - base);
            return of(i);
          },
        }),
        toArray(),
      ),
    );
    expect(sync).toEqual(values);
    expect(syncPeak).toBe(1);
    expect(serializeByLiveKeys()).toBe(base);
  });

  it('drains a long queue of synchronous projects without growing the stack', () => {
    const first = new Subject<number>();
    const out: number[] = [];
    let done = false;
    const src = new Subject<number>();
    src
      .pipe(serializeBy({ key: () => 'same', project: (v) => (v === 0 ? first : of(v)), concurrency: 4 }))
      .subscribe({ next: (v) => out.push(v), complete: () => (done = true) });
    const n = 200_000;
    for (let i = 0; i < n; i++) src.next(i);
    src.complete();
    expect(out).toEqual([]);
    first.complete();
    expect(out).toHaveLength(n - 1);
    expect(out[0]).toBe(1);
    expect(out[n - 2]).toBe(n - 1);
    expect(done).toBe(true);
  });

  it('rejects a concurrency below 1', () => {
    expect(() => serializeBy({ key: keyOf, project: of, concurrency: 0 })).toThrow(RangeError);
  });
});
