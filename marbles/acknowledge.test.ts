import { describe, it, expect } from 'vitest';
import { from, lastValueFrom, map, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { emptySnapshot } from '../src/domain/merge.js';
import { acknowledge, type AcknowledgeOptions } from '../src/operators/acknowledge.js';
import type { SettledEnvelope } from '../src/operators/deliver-exports.js';
import type { SourceMessage } from '../src/streams/types.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/** One log for the store and the messages: `<frame> confirm <profile> <key>` / `<frame> ack <key>`. */
type Log = string[];

/** A source message whose ack / nak calls go to `log` with their virtual frame. */
function message(ts: TestScheduler, log: Log, seq: number): SourceMessage {
  const key = `test:${seq}`;
  return {
    data: '',
    key,
    seq,
    receivedAt: 0,
    ack: () => {
      log.push(`${ts.now()} ack ${key}`);
    },
    nak: () => {
      log.push(`${ts.now()} nak ${key}`);
    },
    working: () => {},
  };
}

/**
 * The store's `confirm`, settling `delay` virtual frames after the call (0: at once). It
 * returns a thenable rather than a Promise: a real Promise settles in a microtask, outside
 * the TestScheduler's virtual time; RxJS `from` accepts any PromiseLike, which is all the
 * operator relies on. Real Promises are covered by the async test at the end.
 */
function virtualStore(ts: TestScheduler, log: Log, opts: { delay?: number; fails?: (key: string) => boolean } = {}): AcknowledgeOptions['store'] {
  return {
    confirm(profileId, key) {
      log.push(`${ts.now()} confirm ${profileId} ${key}`);
      const thenable = {
        then(resolve: () => void, reject: (e: unknown) => void) {
          const settle = () => (opts.fails?.(key) ? reject(new Error('store down')) : resolve());
          if (opts.delay) ts.schedule(settle, opts.delay);
          else settle();
          return Promise.resolve();
        },
      };
      return thenable as unknown as Promise<void>;
    },
  };
}

/** A settled envelope of profile `profileId` (outcomes do not matter to acknowledge). */
function settled(msg: SourceMessage, profileId = 'p-1'): SettledEnvelope {
  const update = { profileId };
  return { msg, update, applied: { update, before: null, after: emptySnapshot(profileId), replayed: false }, decisions: [], jobs: [], outcomes: [] };
}

const seqOf = (e: SettledEnvelope): string => String(e.msg.seq);

describe('acknowledge', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    const log: Log = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' |');
      expectObservable(src.pipe(acknowledge({ store: virtualStore(ts, log) }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
    expect(log).toEqual([]);
  });

  it('confirms then acks one message, and emits the same envelope once acked', () => {
    const ts = scheduler();
    const log: Log = [];
    const a = settled(message(ts, log, 1));
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' -a|   ', { a });
      const expected = '                  --(a|)';
      expectObservable(src.pipe(acknowledge({ store: virtualStore(ts, log, { delay: 1 }) }))).toBe(expected, { a });
      expectSubscriptions(src.subscriptions).toBe('^-!   ');
    });
    expect(log).toEqual(['1 confirm p-1 test:1', '2 ack test:1']);
  });

  it('confirms and acks many in order, one at a time', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2), 'p-2'), c: settled(message(ts, log, 3)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' abc|      ', v);
      const expected = '                  --a-b-(c|)';
      expectObservable(src.pipe(acknowledge({ store: virtualStore(ts, log, { delay: 2 }) }), map(seqOf))).toBe(expected, {
        a: '1',
        b: '2',
        c: '3',
      });
      expectSubscriptions(src.subscriptions).toBe('^--!      ');
    });
    expect(log).toEqual([
      '0 confirm p-1 test:1',
      '2 ack test:1',
      '2 confirm p-2 test:2',
      '4 ack test:2',
      '4 confirm p-1 test:3',
      '6 ack test:3',
    ]);
  });

  it('still acks when confirm rejects, and goes on', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' -a-b|', v);
      const expected = '                  --a-(b|)';
      const store = virtualStore(ts, log, { delay: 1, fails: (key) => key === 'test:1' });
      expectObservable(src.pipe(acknowledge({ store }), map(seqOf))).toBe(expected, { a: '1', b: '2' });
      expectSubscriptions(src.subscriptions).toBe('^---!');
    });
    expect(log).toEqual(['1 confirm p-1 test:1', '2 ack test:1', '3 confirm p-1 test:2', '4 ack test:2']);
  });

  it('still acks when confirm throws synchronously (a failing confirm never holds the ack back)', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2)) };
    const store: AcknowledgeOptions['store'] = {
      confirm: (profileId, key) => {
        if (key === 'test:1') throw new Error('not connected');
        return virtualStore(ts, log).confirm(profileId, key);
      },
    };
    ts.run(({ cold, expectObservable }) => {
      const src = cold<SettledEnvelope>(' -a-b|', v);
      const expected = '                  -a-b|';
      expectObservable(src.pipe(acknowledge({ store }), map(seqOf))).toBe(expected, { a: '1', b: '2' });
    });
    expect(log).toEqual(['1 ack test:1', '3 confirm p-1 test:2', '3 ack test:2']);
  });

  it('errors when ack throws, unsubscribing the source', () => {
    const ts = scheduler();
    const log: Log = [];
    const broken: SourceMessage = {
      ...message(ts, log, 2),
      ack: () => {
        throw new Error('connection closed');
      },
    };
    const v = { a: settled(message(ts, log, 1)), x: settled(broken), b: settled(message(ts, log, 3)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' a-x-b|', v);
      const expected = '                  a-#   ';
      expectObservable(src.pipe(acknowledge({ store: virtualStore(ts, log) }), map(seqOf))).toBe(
        expected,
        { a: '1' },
        new Error('connection closed'),
      );
      expectSubscriptions(src.subscriptions).toBe('^-!   ');
    });
    expect(log).toEqual(['0 confirm p-1 test:1', '0 ack test:1', '2 confirm p-1 test:2']);
  });

  it('passes a source error through, without acking a message whose confirm is pending', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' a-b#', v, new Error('source down'));
      const expected = '                  -a-#';
      expectObservable(src.pipe(acknowledge({ store: virtualStore(ts, log, { delay: 1 }) }), map(seqOf))).toBe(
        expected,
        { a: '1' },
        new Error('source down'),
      );
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
    expect(log).toEqual(['0 confirm p-1 test:1', '1 ack test:1', '2 confirm p-1 test:2']);
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' -a-b-', v);
      const expected = '                  -a-b-';
      expectObservable(src.pipe(acknowledge({ store: virtualStore(ts, log) }), map(seqOf))).toBe(expected, { a: '1', b: '2' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
    expect(log.filter((l) => l.includes('ack'))).toEqual(['1 ack test:1', '3 ack test:2']);
  });

  it('unsubscribes the source when unsubscribed early, leaving the message of a pending confirm unacked', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2)), c: settled(message(ts, log, 3)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' abc---|', v);
      const unsub = '                     ----!  ';
      const expected = '                  ---a   ';
      expectObservable(src.pipe(acknowledge({ store: virtualStore(ts, log, { delay: 3 }) }), map(seqOf)), unsub).toBe(expected, { a: '1' });
      expectSubscriptions(src.subscriptions).toBe('^---!  ');
    });
    // b's confirm was asked at 3; its answer (due at 6) came after the unsubscription: no ack.
    expect(log).toEqual(['0 confirm p-1 test:1', '3 ack test:1', '3 confirm p-1 test:2']);
  });
});

describe('acknowledge with a Promise-based store', () => {
  it('confirms then acks every message in order, also when a confirm rejects', async () => {
    const log: string[] = [];
    const store: AcknowledgeOptions['store'] = {
      confirm: async (profileId, key) => {
        await new Promise((r) => setTimeout(r, key === 'k1' ? 10 : 1));
        log.push(`confirm ${key}`);
        if (key === 'k2') throw new Error('store down');
      },
    };
    const msgs = [1, 2, 3].map(
      (seq): SourceMessage => ({ data: '', key: `k${seq}`, seq, receivedAt: 0, ack: () => log.push(`ack k${seq}`), nak: () => {}, working: () => {} }),
    );
    const out = await lastValueFrom(from(msgs.map((m) => settled(m))).pipe(acknowledge({ store }), toArray()));
    expect(out.map(seqOf)).toEqual(['1', '2', '3']);
    expect(log).toEqual(['confirm k1', 'ack k1', 'confirm k2', 'ack k2', 'confirm k3', 'ack k3']);
  });
});
