import { describe, it, expect } from 'vitest';
import { map, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { DEFAULTS } from '../src/config/schema.js';
import { DECODE_EVENTS_DEFAULTS, decodeEvents, type Decoded } from '../src/operators/decode-events.js';
import type { SourceMessage } from '../src/streams/types.js';
import { fakeMessage } from '../test/support/messages.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/** A plain summary of a Decoded, comparable with toEqual. */
type Summary = { ok: true; seq: number; profileId: string } | { ok: false; seq: number; code: string; reason: string };

function summarize(source: Observable<Decoded>): Observable<Summary> {
  return source.pipe(
    map((d): Summary =>
      d.ok
        ? { ok: true, seq: d.msg.seq, profileId: d.update.profileId }
        : { ok: false, seq: d.msg.seq, code: d.error.code, reason: d.error.message },
    ),
  );
}

const msgs = {
  a: fakeMessage('{"profileId":"p-a"}', 1),
  b: fakeMessage(new TextEncoder().encode('{"profileId":"p-b","attributes":{"x":1}}'), 2),
  c: fakeMessage('{"profileId":"p-c"}', 3),
  j: fakeMessage('{"profileId":', 4),
  s: fakeMessage('{"profileId":"p","segmentMembership":{"ups":{"aud-1":{"status":"in"}}}}', 5),
  l: fakeMessage(`{"profileId":"${'x'.repeat(100)}"}`, 6),
};

const ok = (seq: number, profileId: string): Summary => ({ ok: true, seq, profileId });

describe('decodeEvents', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('|');
      expectObservable(summarize(src.pipe(decodeEvents()))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('decodes one message', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('--a|', msgs);
      expectObservable(summarize(src.pipe(decodeEvents()))).toBe('--a|', { a: ok(1, 'p-a') });
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('decodes many messages, text and bytes, in order', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-b-c|', msgs);
      expectObservable(summarize(src.pipe(decodeEvents()))).toBe('-a-b-c|', {
        a: ok(1, 'p-a'),
        b: ok(2, 'p-b'),
        c: ok(3, 'p-c'),
      });
      expectSubscriptions(src.subscriptions).toBe('^-----!');
    });
  });

  it('turns malformed messages into rejections and goes on', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-j-s-l-c|', msgs);
      expectObservable(summarize(src.pipe(decodeEvents({ maxBytes: 100 })))).toBe('-a-j-s-l-c|', {
        a: ok(1, 'p-a'),
        j: { ok: false, seq: 4, code: 'ERR_EVENT_JSON', reason: 'event: not valid JSON: Unexpected end of JSON input' },
        s: {
          ok: false,
          seq: 5,
          code: 'ERR_EVENT_SHAPE',
          reason: 'segmentMembership.ups.aud-1.status: must be one of realized, existing, exited',
        },
        l: { ok: false, seq: 6, code: 'ERR_EVENT_TOO_LARGE', reason: 'event: 116 bytes is over the limit of 100 bytes' },
        c: ok(3, 'p-c'),
      });
      expectSubscriptions(src.subscriptions).toBe('^---------!');
    });
  });

  it('turns an unexpected throw while decoding into an ERR_EVENT_SHAPE rejection', () => {
    const broken: SourceMessage = {
      ...fakeMessage('', 9),
      get data(): string {
        throw new TypeError('detached buffer');
      },
    };
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const src = cold<SourceMessage>('-x-a|', { x: broken, a: msgs.a });
      expectObservable(summarize(src.pipe(decodeEvents()))).toBe('-x-a|', {
        x: { ok: false, seq: 9, code: 'ERR_EVENT_SHAPE', reason: 'event: could not be processed (decode: TypeError: detached buffer)' },
        a: ok(1, 'p-a'),
      });
    });
  });

  it('passes a source error through', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-#', msgs, new Error('source down'));
      expectObservable(summarize(src.pipe(decodeEvents()))).toBe('-a-#', { a: ok(1, 'p-a') }, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-b-', msgs);
      expectObservable(summarize(src.pipe(decodeEvents()))).toBe('-a-b-', { a: ok(1, 'p-a'), b: ok(2, 'p-b') });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source when the output is unsubscribed early', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SourceMessage>('-a-b-c|', msgs);
      const unsub = '----!  ';
      expectObservable(summarize(src.pipe(decodeEvents())), unsub).toBe('-a-b-  ', { a: ok(1, 'p-a'), b: ok(2, 'p-b') });
      expectSubscriptions(src.subscriptions).toBe('^---!  ');
    });
  });

  it('limits events to DEFAULTS.maxEventBytes by default', () => {
    expect(DECODE_EVENTS_DEFAULTS.maxBytes).toBe(DEFAULTS.maxEventBytes);
    const head = '{"profileId":"p","attributes":{"x":"';
    const tail = '"}}';
    const pad = (n: number) => `${head}${'x'.repeat(n - head.length - tail.length)}${tail}`;
    expect(pad(DEFAULTS.maxEventBytes)).toHaveLength(DEFAULTS.maxEventBytes);
    const fits = fakeMessage(pad(DEFAULTS.maxEventBytes), 1);
    const over = fakeMessage(pad(DEFAULTS.maxEventBytes + 1), 2);
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const out = cold<SourceMessage>('ab|', { a: fits, b: over }).pipe(
        decodeEvents(),
        map((d) => (d.ok ? 'ok' : d.error.code)),
      );
      expectObservable(out).toBe('ab|', { a: 'ok', b: 'ERR_EVENT_TOO_LARGE' });
    });
  });

  it('never acknowledges anything itself', () => {
    const a = fakeMessage('{"profileId":"p"}', 1);
    const j = fakeMessage('nope', 2);
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<SourceMessage>('ab|', { a, b: j }).pipe(decodeEvents(), map((d) => d.ok))).toBe('ab|', {
        a: true,
        b: false,
      });
    });
    expect([...a.calls, ...j.calls]).toEqual([]);
  });
});
