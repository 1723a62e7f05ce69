import { describe, it, expect } from 'vitest';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { applyUpdate } from '../src/domain/merge.js';
import type { ProfileUpdate } from '../src/domain/types.js';
import type { DecidedEnvelope } from '../src/operators/detect-exports.js';
import { filterExports, matchesFilter, type ExportFilter } from '../src/operators/filter-exports.js';
import { fakeMessage } from '../test/support/messages.js';

const ts = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));

/** A decided envelope of a profile with `country`, exported to flow-fr and flow-all. */
function decided(seq: number, country?: string): DecidedEnvelope {
  const update: ProfileUpdate = { profileId: `p-${seq}`, attributes: country === undefined ? {} : { person: { country } } };
  const after = applyUpdate(null, update);
  return {
    msg: fakeMessage('', seq),
    update,
    applied: { update, before: null, after, replayed: false },
    decisions: ['flow-fr', 'flow-all'].map((dataflowId) => ({ dataflowId, reasons: ['attribute' as const], entered: [], exited: [] })),
  };
}

const dataflows = [{ id: 'flow-fr', filter: { attribute: 'person.country', equals: 'FR' } as ExportFilter }, { id: 'flow-all' }];
const flowsOf = (e: DecidedEnvelope): string[] => e.decisions.map((d) => d.dataflowId);

describe('filterExports', () => {
  it('completes at once on an empty source', () => {
    ts().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('|');
      expectObservable(src.pipe(filterExports({ dataflows }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('keeps the decision of a profile the filter selects', () => {
    ts().run(({ cold, expectObservable }) => {
      expectObservable(cold('-a|', { a: decided(1, 'FR') }).pipe(filterExports({ dataflows }), map(flowsOf))).toBe('-a|', { a: ['flow-fr', 'flow-all'] });
    });
  });

  it("drops only the filtered dataflow's decisions, never the envelope, and tells onSkipped", () => {
    const skipped: string[] = [];
    ts().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a-b-c|', { a: decided(1, 'FR'), b: decided(2, 'DE'), c: decided(3) });
      const out = src.pipe(filterExports({ dataflows, onSkipped: (id, e) => skipped.push(`${id} ${e.update.profileId}`) }), map(flowsOf));
      expectObservable(out).toBe('-a-b-c|', { a: ['flow-fr', 'flow-all'], b: ['flow-all'], c: ['flow-all'] });
      expectSubscriptions(src.subscriptions).toBe('^-----!');
    });
    expect(skipped).toEqual(['flow-fr p-2', 'flow-fr p-3']);
  });

  it('passes a source error through', () => {
    ts().run(({ cold, expectObservable }) => {
      expectObservable(cold('-a#', { a: decided(1, 'DE') }).pipe(filterExports({ dataflows }), map(flowsOf))).toBe('-a#', { a: ['flow-all'] });
    });
  });

  it('stays open on a never-ending source', () => {
    ts().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a-', { a: decided(1, 'FR') });
      expectObservable(src.pipe(filterExports({ dataflows }), map(flowsOf))).toBe('-a-', { a: ['flow-fr', 'flow-all'] });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source when unsubscribed early', () => {
    ts().run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold('-a-b|', { a: decided(1, 'FR'), b: decided(2, 'FR') });
      expectObservable(src.pipe(filterExports({ dataflows }), map(flowsOf)), '--!').toBe('-a', { a: ['flow-fr', 'flow-all'] });
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('errors when onSkipped throws (a bug of the caller, not of the event)', () => {
    ts().run(({ cold, expectObservable }) => {
      const op = filterExports({
        dataflows,
        onSkipped: () => {
          throw new Error('metrics broke');
        },
      });
      // The throw happens inside the per-event try: the event is rejected rather than the chain stopped.
      expectObservable(cold('a|', { a: decided(1, 'DE') }).pipe(op, map((e) => e.fault?.kind))).toBe('a|', { a: 'rejected' });
    });
  });

  it('evaluates equals, notEquals, in, notIn and exists on own properties only', () => {
    const p = applyUpdate(null, { profileId: 'p', attributes: { person: { country: 'FR', age: 30, vip: false } } });
    const m = (f: ExportFilter): boolean => matchesFilter(p, f);
    expect([m({ attribute: 'person.country', equals: 'FR' }), m({ attribute: 'person.age', equals: '30' })]).toEqual([true, false]);
    expect(m({ attribute: 'person.country', notEquals: 'DE' })).toBe(true);
    expect([m({ attribute: 'person.country', in: ['BE', 'FR'] }), m({ attribute: 'person.country', notIn: ['FR'] })]).toEqual([true, false]);
    expect([m({ attribute: 'person.vip', exists: true }), m({ attribute: 'person.city', exists: false })]).toEqual([true, true]);
    expect(m({ attribute: 'person.constructor', exists: true })).toBe(false);
    expect(m({ attribute: 'toString', exists: true })).toBe(false);
  });
});
