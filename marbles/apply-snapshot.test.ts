import { describe, it, expect } from 'vitest';
import { from, lastValueFrom, map, tap, toArray } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { applyUpdate, emptySnapshot } from '../src/domain/merge.js';
import type { ProfileSnapshot, ProfileUpdate } from '../src/domain/types.js';
import { applySnapshot, type AppliedEnvelope } from '../src/operators/apply-snapshot.js';
import { EventRejectedError, FencedError } from '../src/errors.js';
import type { Envelope } from '../src/streams/envelope.js';
import { MemorySnapshotStore } from '../src/stores/memory-snapshot-store.js';
import type { ApplyContext, ApplyResult, SnapshotStore } from '../src/stores/types.js';
import { fakeMessage } from '../test/support/messages.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

/*
 * Why a thenable and not a Promise. The SnapshotStore contract returns Promises, and a real
 * Promise settles in a microtask: outside the TestScheduler's virtual time, so a marble
 * diagram could never observe when `apply` / `get` answer (the whole `run` would be over
 * before the first `then` callback). `applySnapshot` only hands the store's answer to RxJS
 * `from`, which accepts any PromiseLike and only calls `then`. So the marble cases use a
 * store double whose methods return a thenable that settles `delay` virtual frames after the
 * call (0: synchronously, inside `then`), and the same behaviour with real Promises (the
 * MemorySnapshotStore) is checked by the ordinary async tests at the end of this file.
 */
interface Call {
  at: number;
  op: 'apply' | 'get';
  profileId: string;
  ctx?: ApplyContext;
}

function virtualStore(
  ts: TestScheduler,
  opts: { delay?: number; fails?: (op: 'apply' | 'get', profileId: string) => Error | undefined } = {},
): SnapshotStore & { calls: Call[]; snapshots: Map<string, ProfileSnapshot> } {
  const calls: Call[] = [];
  const snapshots = new Map<string, ProfileSnapshot>();
  const settleLater = <T>(op: 'apply' | 'get', profileId: string, work: () => T): Promise<T> => {
    const thenable = {
      then(resolve: (v: T) => void, reject: (e: unknown) => void) {
        const settle = () => {
          const err = opts.fails?.(op, profileId);
          if (err) reject(err);
          else resolve(work());
        };
        if (opts.delay) ts.schedule(settle, opts.delay);
        else settle();
        return Promise.resolve();
      },
    };
    // Cast: RxJS `from` accepts any PromiseLike, which is all applySnapshot relies on.
    return thenable as unknown as Promise<T>;
  };
  const unused = (): never => {
    throw new Error('not used by applySnapshot');
  };
  return {
    calls,
    snapshots,
    apply(update, ctx) {
      calls.push({ at: ts.now(), op: 'apply', profileId: update.profileId, ctx });
      return settleLater('apply', update.profileId, (): ApplyResult => {
        const before = snapshots.get(update.profileId) ?? null;
        const after = applyUpdate(before, update);
        snapshots.set(update.profileId, after);
        return { update, before, after, replayed: false };
      });
    },
    get(profileId) {
      calls.push({ at: ts.now(), op: 'get', profileId });
      return settleLater('get', profileId, () => snapshots.get(profileId) ?? null);
    },
    confirm: unused,
    members: unused,
    scanMembers: unused,
    beginBackfill: unused,
    getBackfill: unused,
    setBackfill: unused,
    close: () => Promise.resolve(),
  };
}

/** A live update envelope: profile `p`, attribute `n` written. */
const upd = (seq: number, profileId: string, n: number): Envelope => ({
  msg: fakeMessage(`{"profileId":"${profileId}"}`, seq),
  update: { profileId, attributes: { n } },
});

/** A backfill item for `profileId`. */
const backfill = (seq: number, profileId: string): Envelope => ({
  msg: fakeMessage('', seq),
  update: { profileId },
  backfill: { dataflowId: 'flow-1', audienceId: 'aud-1' },
});

/** `<profile>:<before n>><after n>` — compact enough for diagrams. */
const brief = (e: AppliedEnvelope): string => {
  const n = (s: ProfileSnapshot | null) => (s === null ? '-' : String(s.attributes.n ?? '_'));
  return `${e.update.profileId}:${n(e.applied.before)}>${n(e.applied.after)}`;
};

describe('applySnapshot', () => {
  it('completes at once on an empty source, without touching the store', () => {
    const ts = scheduler();
    const store = virtualStore(ts);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('|');
      expectObservable(src.pipe(applySnapshot({ store }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
    expect(store.calls).toEqual([]);
  });

  it('applies one update with its message key and seq, and emits the envelope with before/after', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { delay: 2 });
    const a = upd(7, 'p-1', 1);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('-a|    ', { a });
      const expected = '          ---(x|)';
      expectObservable(src.pipe(applySnapshot({ store }))).toBe(expected, {
        x: {
          msg: a.msg,
          update: a.update,
          applied: {
            update: a.update,
            before: null,
            after: { profileId: 'p-1', attributes: { n: 1 }, identityMap: {}, memberships: {}, last: expect.any(Object) },
            replayed: false,
          },
        },
      });
      expectSubscriptions(src.subscriptions).toBe('^-!    ');
    });
    expect(store.calls).toEqual([{ at: 1, op: 'apply', profileId: 'p-1', ctx: { key: 'test:7', seq: 7 } }]);
  });

  it('applies many updates concurrently, emitting each as its store step answers (order per profile is the gate\'s job)', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { delay: 2 });
    const v = { a: upd(1, 'p-1', 1), b: upd(2, 'p-2', 2), c: upd(3, 'p-3', 3) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('abc|    ', v);
      const expected = '          --ab(c|)';
      expectObservable(src.pipe(applySnapshot({ store }), map(brief))).toBe(expected, {
        a: 'p-1:->1',
        b: 'p-2:->2',
        c: 'p-3:->3',
      });
      expectSubscriptions(src.subscriptions).toBe('^--!    ');
    });
    // No waiting for the previous answer: one subscription, a counter of steps in flight.
    expect(store.calls.map((c) => [c.at, c.ctx?.seq])).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
  });

  it('reads the snapshot for a backfill item instead of applying, in turn with the updates', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { delay: 1 });
    const v = { a: upd(1, 'p-1', 1), b: backfill(2, 'p-1'), c: backfill(3, 'p-new') };
    const out: AppliedEnvelope[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('abc|   ', v);
      const expected = '          -ab(c|)';
      const applied$ = src.pipe(
        applySnapshot({ store }),
        tap((e) => out.push(e)),
        map(brief),
      );
      expectObservable(applied$).toBe(expected, { a: 'p-1:->1', b: 'p-1:1>1', c: 'p-new:->_' });
      expectSubscriptions(src.subscriptions).toBe('^--!   ');
    });
    expect(store.calls.map((c) => [c.at, c.op, c.profileId])).toEqual([
      [0, 'apply', 'p-1'],
      [1, 'get', 'p-1'],
      [2, 'get', 'p-new'],
    ]);
    const [, b, c] = out;
    // The backfill item keeps its target, and before/after are the same current snapshot.
    expect(b.backfill).toEqual({ dataflowId: 'flow-1', audienceId: 'aud-1' });
    expect(b.applied.before).toBe(b.applied.after);
    expect(b.applied.after).toEqual({ profileId: 'p-1', attributes: { n: 1 }, identityMap: {}, memberships: {}, last: expect.any(Object) });
    expect(b.applied.replayed).toBe(false);
    // A profile the store does not know: nothing before, an empty snapshot now.
    expect(c.applied).toEqual({ update: { profileId: 'p-new' }, before: null, after: emptySnapshot('p-new'), replayed: false });
  });

  it('passes a source error through', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { delay: 1 });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('-a-#', { a: upd(1, 'p-1', 1) }, new Error('source down'));
      const expected = '          --a#';
      expectObservable(src.pipe(applySnapshot({ store }), map(brief))).toBe(expected, { a: 'p-1:->1' }, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('drops an apply still pending when the source errors', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { delay: 3 });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('a#', { a: upd(1, 'p-1', 1) }, new Error('source down'));
      const expected = '          -#';
      expectObservable(src.pipe(applySnapshot({ store }))).toBe(expected, undefined, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
  });

  it('retries a failing store step in place with backoff on the scheduler: that message waits, the others go on', () => {
    const ts = scheduler();
    let failures = 2;
    const store = virtualStore(ts, {
      delay: 1,
      fails: (op, id) => (op === 'apply' && id === 'p-2' && failures-- > 0 ? new Error('redis down') : undefined),
    });
    const errors: string[] = [];
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('ab-c|', { a: upd(1, 'p-1', 1), b: upd(2, 'p-2', 2), c: upd(3, 'p-3', 3) });
      // b fails at 2 (waits 2), fails again at 5 (waits 4), succeeds at 10.
      const expected = '          -a--c-----(b|)';
      const op = applySnapshot({ store, retryMinDelayMs: 2, random: () => 1, scheduler: ts, onStoreError: (e) => errors.push(`${ts.now()} ${(e as Error).message}`) });
      expectObservable(src.pipe(op, map(brief)), ).toBe(expected, { a: 'p-1:->1', b: 'p-2:->2', c: 'p-3:->3' });
      expectSubscriptions(src.subscriptions).toBe('^---!');
    });
    expect(store.calls.filter((c) => c.profileId === 'p-2').map((c) => c.at)).toEqual([1, 4, 9]);
    expect(errors).toEqual(['2 redis down', '5 redis down']);
  });

  it('retries a backfill item\'s failing read, and a store that throws synchronously, the same way', () => {
    const ts = scheduler();
    let reads = 1;
    let throws = 1;
    const inner = virtualStore(ts, { delay: 1, fails: (op) => (op === 'get' && reads-- > 0 ? new Error('redis down') : undefined) });
    const store: SnapshotStore = {
      ...inner,
      apply: (u: ProfileUpdate, ctx: ApplyContext) => {
        if (throws-- > 0) throw new Error('not connected');
        return inner.apply(u, ctx);
      },
    };
    ts.run(({ cold, expectObservable }) => {
      const src = cold<Envelope>('ab|', { a: upd(1, 'p-1', 1), b: backfill(2, 'p-2') });
      expectObservable(src.pipe(applySnapshot({ store, retryMinDelayMs: 2, random: () => 1, scheduler: ts }), map(brief))).toBe('---a-(b|)', {
        a: 'p-1:->1',
        b: 'p-2:->_',
      });
    });
  });

  it('does not retry a poison event (EventRejectedError) nor a fenced write: marks the envelope and goes on', () => {
    const ts = scheduler();
    const store = virtualStore(ts, {
      fails: (_op, id) =>
        id === 'p-poison' ? new EventRejectedError('ERR_EVENT_TOO_LARGE', 'snapshot over its size limit') : id === 'p-lost' ? new FencedError('lease lost') : undefined,
    });
    ts.run(({ cold, expectObservable }) => {
      const src = cold<Envelope>('xyz|', { x: upd(1, 'p-poison', 1), y: upd(2, 'p-lost', 2), z: upd(3, 'p-ok', 3) });
      const out = src.pipe(
        applySnapshot({ store, scheduler: ts }),
        map((e) => (e.fault ? `${e.fault.kind} ${(e.fault.error as { code: string }).code}` : brief(e))),
      );
      expectObservable(out).toBe('xyz|', { x: 'rejected ERR_EVENT_TOO_LARGE', y: 'unsettled ERR_FENCED', z: 'p-ok:->3' });
    });
    expect(store.calls).toHaveLength(3);
  });

  it('errors the output when onStoreError throws', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { fails: () => new Error('redis down') });
    ts.run(({ cold, expectObservable }) => {
      const op = applySnapshot({
        store,
        scheduler: ts,
        onStoreError: () => {
          throw new Error('metrics broke');
        },
      });
      expectObservable(cold<Envelope>('a|', { a: upd(1, 'p-1', 1) }).pipe(op)).toBe('#', undefined, new Error('metrics broke'));
    });
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { delay: 1 });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('-a-b-', { a: upd(1, 'p-1', 1), b: upd(2, 'p-1', 2) });
      const expected = '          --a-b-';
      expectObservable(src.pipe(applySnapshot({ store }), map(brief))).toBe(expected, { a: 'p-1:->1', b: 'p-1:1>2' });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source and drops the pending applies when unsubscribed early', () => {
    const ts = scheduler();
    const store = virtualStore(ts, { delay: 3 });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<Envelope>('abc---|', { a: upd(1, 'p-1', 1), b: upd(2, 'p-1', 2), c: upd(3, 'p-1', 3) });
      const unsub = '             -----!  ';
      const expected = '          ---ab   ';
      expectObservable(src.pipe(applySnapshot({ store }), map(brief)), unsub).toBe(expected, { a: 'p-1:->1', b: 'p-1:1>2' });
      expectSubscriptions(src.subscriptions).toBe('^----!  ');
    });
    // b and c were asked at 1 and 2; c's answer (due at 5) came with the unsubscription: dropped.
    expect(store.calls.map((c) => [c.at, c.ctx?.seq])).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
  });
});

describe('applySnapshot with a Promise-based store (MemorySnapshotStore)', () => {
  it('applies in order, each update seeing the one before, and reads for backfill items', async () => {
    const store = new MemorySnapshotStore();
    const input: Envelope[] = [upd(1, 'p-1', 1), upd(2, 'p-2', 2), upd(3, 'p-1', 3), backfill(4, 'p-1'), backfill(5, 'p-9')];
    const out = await lastValueFrom(from(input).pipe(applySnapshot({ store }), toArray()));
    expect(out.map(brief)).toEqual(['p-1:->1', 'p-2:->2', 'p-1:1>3', 'p-1:3>3', 'p-9:->_']);
    expect(out.map((e) => e.msg)).toEqual(input.map((e) => e.msg));
    // A backfill item did not merge anything.
    expect(await store.get('p-9')).toBeNull();
  });

  it('retries a rejected apply in place until it passes (real timers)', async () => {
    const store = new MemorySnapshotStore();
    const apply = store.apply.bind(store);
    let failures = 2;
    store.apply = (u, ctx) => (failures-- > 0 ? Promise.reject(new Error('store down')) : apply(u, ctx));
    const out = await lastValueFrom(from([upd(1, 'p-1', 1)]).pipe(applySnapshot({ store, retryMinDelayMs: 1 }), toArray()));
    expect(out.map(brief)).toEqual(['p-1:->1']);
  });

  it('returns the first result again for a redelivered, unconfirmed message (replayed)', async () => {
    const store = new MemorySnapshotStore();
    const a = upd(1, 'p-1', 1);
    const first = await lastValueFrom(from([a]).pipe(applySnapshot({ store })));
    const again = await lastValueFrom(from([{ ...a }]).pipe(applySnapshot({ store })));
    expect(first.applied.replayed).toBe(false);
    expect(again.applied).toEqual({ ...first.applied, replayed: true });
  });
});
