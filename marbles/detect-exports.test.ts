import { describe, it, expect } from 'vitest';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { applyUpdate, emptySnapshot } from '../src/domain/merge.js';
import type { DataflowRules, ExportDecision, ProfileSnapshot, ProfileUpdate } from '../src/domain/types.js';
import type { AppliedEnvelope } from '../src/operators/apply-snapshot.js';
import { detectExports, type DecidedEnvelope } from '../src/operators/detect-exports.js';
import { fakeMessage } from '../test/support/messages.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

const flow = (id: string, audiences: string[], attributes: string[]): DataflowRules => ({
  id,
  destinationId: `dest-${id}`,
  audiences: audiences.map((a) => ({ id: a, mappingCreatedAt: 1, mappingUpdatedAt: 2 })),
  attributes,
  includeSegmentNames: false,
  includeSegmentTimestamps: false,
});

/** flow-1 maps aud-1 and the first name; flow-2 maps aud-2 and the email address. */
const dataflows = [flow('flow-1', ['aud-1'], ['person.name.firstName']), flow('flow-2', ['aud-2'], ['personalEmail.address'])];

const ups = (records: Record<string, 'realized' | 'existing' | 'exited'>): ProfileUpdate['segmentMembership'] => ({
  ups: Object.fromEntries(Object.entries(records).map(([id, status]) => [id, { status }])),
});

/** A snapshot of `p-1` built from a list of updates (as the store would have it). */
function snapshot(...updates: Array<Omit<ProfileUpdate, 'profileId'>>): ProfileSnapshot {
  let s: ProfileSnapshot | null = null;
  for (const u of updates) s = applyUpdate(s, { profileId: 'p-1', ...u });
  return s ?? emptySnapshot('p-1');
}

let seq = 0;
/** The applied envelope of `update` (for `p-1`) on top of `before`. */
function applied(before: ProfileSnapshot | null, update: Omit<ProfileUpdate, 'profileId'>): AppliedEnvelope {
  const u: ProfileUpdate = { profileId: 'p-1', ...update };
  seq++;
  return { msg: fakeMessage(JSON.stringify(u), seq), update: u, applied: { update: u, before, after: applyUpdate(before, u), replayed: false } };
}

/** A backfill item of p-1 for `dataflowId`/`audienceId`, reading `current`. */
function backfillItem(current: ProfileSnapshot | null, dataflowId: string, audienceId: string): AppliedEnvelope {
  seq++;
  const update: ProfileUpdate = { profileId: 'p-1' };
  const after = current ?? emptySnapshot('p-1');
  return {
    msg: fakeMessage('', seq),
    update,
    backfill: { dataflowId, audienceId },
    applied: { update, before: current, after, replayed: false },
  };
}

const decisions = (e: DecidedEnvelope): ExportDecision[] => e.decisions;
const d = (dataflowId: string, reasons: ExportDecision['reasons'], entered: string[] = [], exited: string[] = []): ExportDecision => ({
  dataflowId,
  reasons,
  entered,
  exited,
});

const inAud1 = snapshot({ segmentMembership: ups({ 'aud-1': 'realized' }) });
const inBoth = snapshot({ segmentMembership: ups({ 'aud-1': 'realized', 'aud-2': 'existing' }) });
const exitedAud1 = snapshot({ segmentMembership: ups({ 'aud-1': 'realized' }) }, { segmentMembership: ups({ 'aud-1': 'exited' }) });
const firstName = { person: { name: { firstName: 'John' } } };

describe('detectExports', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('|');
      expectObservable(src.pipe(detectExports({ dataflows }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('adds the decision of one update to its envelope, keeping everything else', () => {
    const ts = scheduler();
    const a = applied(null, { segmentMembership: ups({ 'aud-1': 'realized' }) });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('-a|', { a });
      const expected = '                 -a|';
      expectObservable(src.pipe(detectExports({ dataflows }))).toBe(expected, {
        a: { ...a, decisions: [d('flow-1', ['membership'], ['aud-1'])] },
      });
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('decides per dataflow: membership entered/exited, identity, attribute, nothing outside the audience', () => {
    const ts = scheduler();
    const v = {
      // enters aud-1 and aud-2 at once: both dataflows, membership
      a: applied(null, { segmentMembership: ups({ 'aud-1': 'realized', 'aud-2': 'realized' }) }),
      // in aud-1: writes the mapped first name, equal or not → flow-1 only
      b: applied(inAud1, { attributes: firstName }),
      // in aud-1 and aud-2: an identity is added → both dataflows
      c: applied(inBoth, { identityMap: { ecid: [{ id: '1' }] } }),
      // exits aud-1 → flow-1, membership exited
      d: applied(inAud1, { segmentMembership: ups({ 'aud-1': 'exited' }) }),
      // in no mapped audience: a mapped attribute and an identity → nothing
      e: applied(null, { attributes: firstName, identityMap: { ecid: [{ id: '1' }] } }),
      // in aud-1: a sibling of the mapped path → nothing
      f: applied(inAud1, { attributes: { person: { gender: 'x' } } }),
      // out of aud-1 after an exit earlier: a mapped attribute → nothing
      g: applied(exitedAud1, { attributes: firstName }),
      // realized → existing is no change; mapped attribute of flow-2 written while in aud-2
      h: applied(inBoth, { segmentMembership: ups({ 'aud-1': 'existing' }), attributes: { personalEmail: { address: 'j@x' } } }),
    };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('abcd-efgh|', v);
      const expected = '                 abcd-efgh|';
      expectObservable(src.pipe(detectExports({ dataflows }), map(decisions))).toBe(expected, {
        a: [d('flow-1', ['membership'], ['aud-1']), d('flow-2', ['membership'], ['aud-2'])],
        b: [d('flow-1', ['attribute'])],
        c: [d('flow-1', ['identity']), d('flow-2', ['identity'])],
        d: [d('flow-1', ['membership'], [], ['aud-1'])],
        e: [],
        f: [],
        g: [],
        h: [d('flow-2', ['attribute'])],
      });
      expectSubscriptions(src.subscriptions).toBe('^--------!');
    });
  });

  it('decides a backfill item for its one dataflow, only while the profile is in the audience', () => {
    const ts = scheduler();
    const v = {
      // in aud-1 and aud-2, backfilling flow-2/aud-2: flow-2 only, although flow-1 maps aud-1
      a: backfillItem(inBoth, 'flow-2', 'aud-2'),
      // not in aud-2
      b: backfillItem(inAud1, 'flow-2', 'aud-2'),
      // exited aud-1
      c: backfillItem(exitedAud1, 'flow-1', 'aud-1'),
      // a profile the store does not know
      e: backfillItem(null, 'flow-1', 'aud-1'),
      // in aud-1
      f: backfillItem(inAud1, 'flow-1', 'aud-1'),
    };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('a-bc-ef|', v);
      const expected = '                 a-bc-ef|';
      expectObservable(src.pipe(detectExports({ dataflows }), map(decisions))).toBe(expected, {
        a: [d('flow-2', ['backfill'])],
        b: [],
        c: [],
        e: [],
        f: [d('flow-1', ['backfill'])],
      });
      expectSubscriptions(src.subscriptions).toBe('^------!');
    });
  });

  it('passes a source error through', () => {
    const ts = scheduler();
    const a = applied(inAud1, { attributes: firstName });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('-a-#', { a }, new Error('source down'));
      const expected = '                 -a-#';
      expectObservable(src.pipe(detectExports({ dataflows }), map(decisions))).toBe(
        expected,
        { a: [d('flow-1', ['attribute'])] },
        new Error('source down'),
      );
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('rejects the event when deciding throws (a poison event: a malformed applied result), and goes on', () => {
    const ts = scheduler();
    const a = applied(inAud1, { attributes: firstName });
    const broken = { ...applied(inAud1, {}), applied: { update: { profileId: 'p-1' }, before: null, replayed: false } } as unknown as AppliedEnvelope;
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('a-x-a|', { a, x: broken });
      const expected = '                 a-x-a|';
      const out = src.pipe(
        detectExports({ dataflows }),
        map((e) => (e.fault ? `${e.fault.kind} ${(e.fault.error as { code?: string }).code} ${/detect: TypeError/.test(String((e.fault.error as Error).message))}` : decisions(e))),
      );
      expectObservable(out).toBe(expected, { a: [d('flow-1', ['attribute'])], x: 'rejected ERR_EVENT_SHAPE true' });
      expectSubscriptions(src.subscriptions).toBe('^----!');
    });
  });

  it('passes a faulted envelope through without deciding', () => {
    const ts = scheduler();
    const a = applied(inAud1, { attributes: firstName });
    a.fault = { kind: 'unsettled', error: new Error('fenced') };
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<AppliedEnvelope>('a|', { a }).pipe(detectExports({ dataflows }), map(decisions))).toBe('a|', { a: [] });
    });
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    const a = applied(inAud1, { attributes: firstName });
    const b = applied(inAud1, { attributes: { other: 1 } });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('-a-b-', { a, b });
      const expected = '                 -a-b-';
      expectObservable(src.pipe(detectExports({ dataflows }), map(decisions))).toBe(expected, { a: [d('flow-1', ['attribute'])], b: [] });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source when unsubscribed early', () => {
    const ts = scheduler();
    const a = applied(inAud1, { attributes: firstName });
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<AppliedEnvelope>('-a--a--a|', { a });
      const unsub = '                    ---!     ';
      const expected = '                 -a-      ';
      expectObservable(src.pipe(detectExports({ dataflows }), map(decisions)), unsub).toBe(expected, { a: [d('flow-1', ['attribute'])] });
      expectSubscriptions(src.subscriptions).toBe('^--!     ');
    });
  });
});
