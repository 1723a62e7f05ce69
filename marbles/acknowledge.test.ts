import { describe, it, expect } from 'vitest';
import { from, lastValueFrom, map, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { emptySnapshot } from '../src/domain/merge.js';
import { acknowledge, type AcknowledgeOptions } from '../src/operators/acknowledge.js';
import { EventRejectedError, StoreError } from '../src/errors.js';
import type { RejectedEvent } from '../src/sinks/types.js';
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

/** A rejected-event store whose `put` settles `delay` frames later (fails when `fails`). */
function virtualRejected(ts: TestScheduler, log: Log, opts: { delay?: number; fails?: boolean } = {}): AcknowledgeOptions['rejected'] & { records: RejectedEvent[] } {
  const records: RejectedEvent[] = [];
  return {
    records,
    put(record) {
      log.push(`${ts.now()} reject ${record.sourceKey} ${record.code}`);
      const thenable = {
        then(resolve: () => void, reject: (e: unknown) => void) {
          const settle = () => {
            if (opts.fails) return reject(new StoreError('rejected store down'));
            records.push(record);
            resolve();
          };
          if (opts.delay) ts.schedule(settle, opts.delay);
          else settle();
          return Promise.resolve();
        },
      };
      return thenable as unknown as Promise<void>;
    },
  };
}

/** acknowledge() with the virtual stores. */
function ack(ts: TestScheduler, log: Log, opts: { delay?: number; fails?: (key: string) => boolean; store?: AcknowledgeOptions['store'] } = {}) {
  return acknowledge({ store: opts.store ?? virtualStore(ts, log, opts), rejected: virtualRejected(ts, log), scheduler: ts });
}

describe('acknowledge', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    const log: Log = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' |');
      expectObservable(src.pipe(ack(ts, log))).toBe('|');
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
      expectObservable(src.pipe(ack(ts, log, { delay: 1 }))).toBe(expected, { a });
      expectSubscriptions(src.subscriptions).toBe('^-!   ');
    });
    expect(log).toEqual(['1 confirm p-1 test:1', '2 ack test:1']);
  });

  it('confirms and acks many concurrently (order per profile is the gate\'s job), each ack after its confirm', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2), 'p-2'), c: settled(message(ts, log, 3), 'p-3') };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' abc|  ', v);
      const expected = '                  --ab(c|)';
      expectObservable(src.pipe(ack(ts, log, { delay: 2 }), map(seqOf))).toBe(expected, { a: '1', b: '2', c: '3' });
      expectSubscriptions(src.subscriptions).toBe('^--!  ');
    });
    expect(log).toEqual([
      '0 confirm p-1 test:1',
      '1 confirm p-2 test:2',
      '2 confirm p-3 test:3',
      '2 ack test:1',
      '3 ack test:2',
      '4 ack test:3',
    ]);
  });

  it('still acks when confirm rejects, and goes on', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' -a-b|', v);
      const expected = '                  --a-(b|)';
      expectObservable(src.pipe(ack(ts, log, { delay: 1, fails: (key) => key === 'test:1' }), map(seqOf))).toBe(expected, { a: '1', b: '2' });
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
      expectObservable(src.pipe(ack(ts, log, { store }), map(seqOf))).toBe(expected, { a: '1', b: '2' });
    });
    expect(log).toEqual(['1 ack test:1', '3 confirm p-1 test:2', '3 ack test:2']);
  });

  it('a poison event (fault: rejected) is stored with its code and reason, confirmed, acked, and told', () => {
    const ts = scheduler();
    const log: Log = [];
    const p = settled(message(ts, log, 1));
    p.fault = { kind: 'rejected', error: new EventRejectedError('ERR_EVENT_SHAPE', 'event: namespace "__proto__" is not allowed') };
    const rejected = virtualRejected(ts, log, { delay: 1 });
    const told: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const src = cold<SettledEnvelope>(' p|   ', { p });
      const op = acknowledge({ store: virtualStore(ts, log, { delay: 1 }), rejected, scheduler: ts, onRejected: (_e, r) => told.push(r.code) });
      expectObservable(src.pipe(op, map(seqOf))).toBe('--(p|)', { p: '1' });
    });
    expect(log).toEqual(['0 reject test:1 ERR_EVENT_SHAPE', '1 confirm p-1 test:1', '2 ack test:1']);
    expect(rejected.records.map((r) => [r.sourceKey, r.code, r.reason])).toEqual([['test:1', 'ERR_EVENT_SHAPE', 'event: namespace "__proto__" is not allowed']]);
    expect(told).toEqual(['ERR_EVENT_SHAPE']);
  });

  it('naks a poison event whose rejection cannot be stored (it comes back), and naks an unsettled one at once', () => {
    const ts = scheduler();
    const log: Log = [];
    const p = settled(message(ts, log, 1));
    p.fault = { kind: 'rejected', error: new EventRejectedError('ERR_EVENT_SHAPE', 'bad') };
    const u = settled(message(ts, log, 2), 'p-2');
    u.fault = { kind: 'unsettled', error: new StoreError('failed-request store down') };
    const naks: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const src = cold<SettledEnvelope>(' pu|', { p, u });
      const op = acknowledge({
        store: virtualStore(ts, log),
        rejected: virtualRejected(ts, log, { fails: true }),
        scheduler: ts,
        onNak: (e, err) => naks.push(`${e.msg.key} ${(err as StoreError).code}`),
      });
      expectObservable(src.pipe(op, map(seqOf))).toBe('pu|', { p: '1', u: '2' });
    });
    expect(log).toEqual(['0 reject test:1 ERR_EVENT_SHAPE', '0 nak test:1', '1 nak test:2']);
    expect(naks).toEqual(['test:1 ERR_STORE', 'test:2 ERR_STORE']);
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
      expectObservable(src.pipe(ack(ts, log), map(seqOf))).toBe(expected, { a: '1' }, new Error('connection closed'));
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
      expectObservable(src.pipe(ack(ts, log, { delay: 1 }), map(seqOf))).toBe(expected, { a: '1' }, new Error('source down'));
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
      expectObservable(src.pipe(ack(ts, log), map(seqOf))).toBe(expected, { a: '1', b: '2' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
    expect(log.filter((l) => l.includes('ack'))).toEqual(['1 ack test:1', '3 ack test:2']);
  });

  it('unsubscribes the source when unsubscribed early, leaving the message of a pending confirm unacked', () => {
    const ts = scheduler();
    const log: Log = [];
    const v = { a: settled(message(ts, log, 1)), b: settled(message(ts, log, 2)), c: settled(message(ts, log, 3)) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>(' a--b--c|', v);
      const unsub = '                     ----!   ';
      const expected = '                  ---a    ';
      expectObservable(src.pipe(ack(ts, log, { delay: 3 }), map(seqOf)), unsub).toBe(expected, { a: '1' });
      expectSubscriptions(src.subscriptions).toBe('^---!   ');
    });
    // b's confirm was asked at 3; its answer (due at 6) came after the unsubscription: no ack.
    expect(log).toEqual(['0 confirm p-1 test:1', '3 confirm p-1 test:2', '3 ack test:1']);
  });

  it('errors the output when a callback throws', () => {
    const ts = scheduler();
    const log: Log = [];
    const a = settled(message(ts, log, 1));
    a.fault = { kind: 'unsettled', error: new StoreError('x') };
    ts.run(({ cold, expectObservable }) => {
      const op = acknowledge({
        store: virtualStore(ts, log),
        rejected: virtualRejected(ts, log),
        onNak: () => {
          throw new Error('metrics broke');
        },
      });
      expectObservable(cold<SettledEnvelope>('a|', { a }).pipe(op)).toBe('#', undefined, new Error('metrics broke'));
    });
  });
});

describe('acknowledge with a Promise-based store', () => {
  it('confirms then acks every message, also when a confirm rejects', async () => {
    const log: string[] = [];
    const store: AcknowledgeOptions['store'] = {
      confirm: async (_profileId, key) => {
        await new Promise((r) => setTimeout(r, key === 'k1' ? 10 : 1));
        log.push(`confirm ${key}`);
        if (key === 'k2') throw new Error('store down');
      },
    };
    const msgs = [1, 2, 3].map(
      (seq): SourceMessage => ({ data: '', key: `k${seq}`, seq, receivedAt: 0, ack: () => log.push(`ack k${seq}`), nak: () => {}, working: () => {} }),
    );
    const rejected = { put: () => Promise.resolve() };
    const out = await lastValueFrom(from(msgs.map((m, i) => settled(m, `p-${i}`))).pipe(acknowledge({ store, rejected }), toArray()));
    expect(out.map(seqOf).sort()).toEqual(['1', '2', '3']);
    for (const k of ['k1', 'k2', 'k3']) expect(log.indexOf(`ack ${k}`)).toBe(log.indexOf(`confirm ${k}`) + 1);
  });
});
