import { describe, it, expect } from 'vitest';
import { from, lastValueFrom, map, toArray, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { decodeEvents } from '../src/operators/decode-events.js';
import { DIVERT_REJECTED_DEFAULTS, divertRejected, type DivertRejectedOptions } from '../src/operators/divert-rejected.js';
import type { Envelope } from '../src/streams/envelope.js';
import type { RejectedEvent, RejectedEventStore } from '../src/sinks/types.js';
import type { SourceMessage } from '../src/streams/types.js';
import { fakeMessage, type FakeMessage } from '../test/support/messages.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/**
 * An in-memory RejectedEventStore whose `put` settles `delay` virtual ms later (0: at once,
 * synchronously), failing for the records `fails` picks. It returns a thenable rather than a
 * Promise: a real Promise settles in a microtask, outside the TestScheduler's virtual time.
 */
function virtualStore(
  ts: TestScheduler,
  opts: { delay?: number; fails?: (r: RejectedEvent) => boolean } = {},
): RejectedEventStore & { records: RejectedEvent[]; putAt: number[] } {
  const records: RejectedEvent[] = [];
  const putAt: number[] = [];
  return {
    records,
    putAt,
    put(record) {
      putAt.push(ts.now());
      const thenable = {
        then(resolve: () => void, reject: (e: unknown) => void) {
          const settle = () => {
            if (opts.fails?.(record)) reject(new Error('store down'));
            else {
              records.push(record);
              resolve();
            }
          };
          if (opts.delay) ts.schedule(settle, opts.delay);
          else settle();
          return Promise.resolve();
        },
      };
      // Cast: RxJS `from` accepts any PromiseLike, which is all this operator relies on.
      return thenable as unknown as Promise<void>;
    },
    list: () => Promise.resolve(records),
    close: () => Promise.resolve(),
  };
}

const valid = (seq: number) => fakeMessage(`{"profileId":"p-${seq}"}`, seq);
const bad = (seq: number) => fakeMessage(`{"profileId":${seq}}`, seq);

function run(source: Observable<SourceMessage>, options: DivertRejectedOptions): Observable<string> {
  return source.pipe(
    decodeEvents(),
    divertRejected(options),
    map((env: Envelope) => env.update.profileId),
  );
}

describe('divertRejected', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('|');
      expectObservable(run(src, { store: virtualStore(ts) })).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('passes one valid update through as an envelope, without acking it', () => {
    const ts = scheduler();
    const a = valid(1);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('--a|', { a });
      const out = src.pipe(decodeEvents(), divertRejected({ store: virtualStore(ts) }));
      // updateBytes: the bound of the update's JSON size from its text, for the store's size check.
      expectObservable(out).toBe('--a|', { a: { msg: a, update: { profileId: 'p-1' }, updateBytes: 4 * String(a.data).length } });
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
    expect(a.calls).toEqual([]);
  });

  it('diverts rejected events to the store, acks them, and never delays the valid ones', () => {
    const ts = scheduler();
    const m = { a: valid(1), x: bad(2), b: valid(3), y: fakeMessage('nope', 4), c: valid(5) };
    const store = virtualStore(ts, { delay: 5 });
    const seen: Array<{ at: number; r: RejectedEvent }> = [];
    ts.run(({ cold, expectObservable, expectSubscriptions, flush }) => {
      const src = cold<SourceMessage>('-a-x-b-y-c|  ', m);
      const expected = '               -a---b---c--|';
      //                x stored at 3+5=8, y at 7+5=12: the output completes once y is stored
      expectObservable(run(src, { store, onRejected: (r) => seen.push({ at: ts.now(), r }) })).toBe(expected, {
        a: 'p-1',
        b: 'p-3',
        c: 'p-5',
      });
      expectSubscriptions(src.subscriptions).toBe('^---------!');
      flush();
      expect(store.putAt).toEqual([3, 7]);
      expect(seen.map((s) => s.at)).toEqual([8, 12]);
    });
    expect(store.records).toEqual([
      {
        sourceKey: 'test:2',
        code: 'ERR_EVENT_SHAPE',
        reason: 'profileId: must be a non-empty string',
        raw: '{"profileId":2}',
        rejectedAt: new Date(3).toISOString(),
      },
      {
        sourceKey: 'test:4',
        code: 'ERR_EVENT_JSON',
        reason: expect.stringMatching(/^event: not valid JSON: /) as unknown as string,
        raw: 'nope',
        rejectedAt: new Date(7).toISOString(),
      },
    ]);
    expect(seen.map((s) => s.r)).toEqual(store.records);
    expect(m.x.calls).toEqual(['ack']);
    expect(m.y.calls).toEqual(['ack']);
    expect([m.a, m.b, m.c].flatMap((v: FakeMessage) => v.calls)).toEqual([]);
  });

  it('naks a rejected event the store refuses, reports it, and goes on', () => {
    const ts = scheduler();
    const m = { a: valid(1), x: bad(2), y: bad(3), b: valid(4) };
    const store = virtualStore(ts, { delay: 2, fails: (r) => r.sourceKey === 'test:2' });
    const rejected: string[] = [];
    const storeErrors: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const src = cold<SourceMessage>('axyb|', m);
      const out = run(src, {
        store,
        onRejected: (r) => rejected.push(r.sourceKey),
        onStoreError: (e, r) => storeErrors.push(`${r.sourceKey}: ${(e as Error).message}`),
      });
      expectObservable(out).toBe('a--b|', { a: 'p-1', b: 'p-4' });
    });
    expect(m.x.calls).toEqual(['nak']);
    expect(m.y.calls).toEqual(['ack']);
    expect(rejected).toEqual(['test:3']);
    expect(storeErrors).toEqual(['test:2: store down']);
  });

  it('naks when put throws synchronously', () => {
    const ts = scheduler();
    const x = bad(1);
    const store: RejectedEventStore = {
      put: () => {
        throw new Error('not connected');
      },
      list: () => Promise.resolve([]),
      close: () => Promise.resolve(),
    };
    ts.run(({ cold, expectObservable }) => {
      expectObservable(run(cold<SourceMessage>('-x-|', { x }), { store })).toBe('---|');
    });
    expect(x.calls).toEqual(['nak']);
  });

  it('cuts the stored raw text to rawLimit, for text and bytes, never halving a character', () => {
    const ts = scheduler();
    const text = fakeMessage(`{"profileId":1,"x":"${'a'.repeat(100)}"}`, 1);
    const bytes = fakeMessage(new TextEncoder().encode(`{"profileId":2,"x":"${'é'.repeat(100)}"}`), 2);
    const emoji = fakeMessage(`{"profileId":3,"x":"😀😀"}`, 3); // 😀 is two UTF-16 units
    const store = virtualStore(ts);
    ts.run(({ cold, expectObservable }) => {
      expectObservable(run(cold<SourceMessage>('abc|', { a: text, b: bytes, c: emoji }), { store, rawLimit: 21 })).toBe('---|');
    });
    expect(store.records.map((r) => r.raw)).toEqual([
      '{"profileId":1,"x":"a',
      '{"profileId":2,"x":"é',
      '{"profileId":3,"x":"', // 20 units: the 21st would be half of 😀
    ]);
    expect(DIVERT_REJECTED_DEFAULTS.rawLimit).toBe(65_536);
  });

  it('passes a source error through', () => {
    const ts = scheduler();
    const a = valid(1);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-#', { a }, new Error('source down'));
      expectObservable(run(src, { store: virtualStore(ts) })).toBe('-a-#', { a: 'p-1' }, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    const m = { a: valid(1), x: bad(2), b: valid(3) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-x-b-', m);
      expectObservable(run(src, { store: virtualStore(ts, { delay: 1 }) })).toBe('-a---b-', { a: 'p-1', b: 'p-3' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
    expect(m.x.calls).toEqual(['ack']);
  });

  it('unsubscribes the source and abandons pending writes when unsubscribed early', () => {
    const ts = scheduler();
    const m = { a: valid(1), x: bad(2), b: valid(3) };
    const store = virtualStore(ts, { delay: 10 });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-x-b-|', m);
      const unsub = '                  ----!   ';
      expectObservable(run(src, { store }), unsub).toBe('-a---   ', { a: 'p-1' });
      expectSubscriptions(src.subscriptions).toBe('^---!   ');
    });
    // Neither acked nor nak'ed: the source redelivers it, as for any unfinished message.
    expect(m.x.calls).toEqual([]);
  });

  it('errors the output when onRejected throws, after the message was acked', () => {
    const ts = scheduler();
    const m = { a: valid(1), x: bad(2), b: valid(3) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-x-b|', m);
      const out = run(src, {
        store: virtualStore(ts, { delay: 1 }),
        onRejected: () => {
          throw new Error('metric broke');
        },
      });
      expectObservable(out).toBe('-a--#', { a: 'p-1' }, new Error('metric broke'));
      expectSubscriptions(src.subscriptions).toBe('^---!');
    });
    expect(m.x.calls).toEqual(['ack']);
  });
});

describe('divertRejected with a Promise-based store', () => {
  it('completes only after the real promises have settled', async () => {
    const records: RejectedEvent[] = [];
    const store: RejectedEventStore = {
      put: async (r) => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        records.push(r);
      },
      list: () => Promise.resolve(records),
      close: () => Promise.resolve(),
    };
    const m = [valid(1), bad(2), valid(3)];
    const out = await lastValueFrom(from(m).pipe(decodeEvents(), divertRejected({ store }), toArray()));
    expect(out.map((e) => e.msg.seq)).toEqual([1, 3]);
    expect(records.map((r) => r.sourceKey)).toEqual(['test:2']);
    expect(m[1].calls).toEqual(['ack']);
  });
});
