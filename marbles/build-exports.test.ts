import { describe, it, expect } from 'vitest';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { idempotencyKey } from '../src/domain/keys.js';
import { applyUpdate } from '../src/domain/merge.js';
import type { Audience, DataflowRules, ExportDecision, ProfileSnapshot, ProfileUpdate } from '../src/domain/types.js';
import { buildExports, type PlannedEnvelope } from '../src/operators/build-exports.js';
import type { DecidedEnvelope } from '../src/operators/detect-exports.js';
import type { ExportJob } from '../src/sinks/types.js';
import { fakeMessage } from '../test/support/messages.js';

function scheduler(): TestScheduler {
  return new TestScheduler((actual, expected) => expect(actual).toEqual(expected));
}

const audiences: Audience[] = [
  { id: 'aud-1', name: 'First name equals John', mergePolicyId: 'mp-1', createdAt: 1648553325000, updatedAt: 1648553330000, origin: 'segmentation' },
  { id: 'aud-2', name: 'Unmapped, same policy', mergePolicyId: 'mp-1', createdAt: 10, updatedAt: 20, origin: 'upload' },
  { id: 'aud-3', name: 'Other policy', mergePolicyId: 'mp-2', createdAt: 30, updatedAt: 40, origin: 'segmentation' },
];

const dataflows: DataflowRules[] = [
  {
    id: 'flow-1',
    destinationId: 'dest-1',
    audiences: [{ id: 'aud-1', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570001 }],
    attributes: ['person.name.firstName', 'person.name.lastName', 'personalEmail.address'],
    includeSegmentNames: true,
    includeSegmentTimestamps: true,
  },
  {
    id: 'flow-2',
    destinationId: 'dest-2',
    audiences: [{ id: 'aud-3', mappingCreatedAt: 5, mappingUpdatedAt: 6 }],
    attributes: ['person.name.lastName'],
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
  },
];

/** The stored profile p-1: in aud-1, aud-2 (same policy) and aud-3 (other policy). */
const stored: ProfileSnapshot = applyUpdate(null, {
  profileId: 'p-1',
  attributes: { person: { name: { firstName: 'John', lastName: 'Doe' }, gender: 'x' }, secret: 'never leaves' },
  identityMap: { ecid: [{ id: '1457' }] },
  segmentMembership: {
    ups: {
      'aud-1': { status: 'realized', lastQualificationTime: '2022-01-02T23:37:33Z' },
      'aud-2': { status: 'existing', lastQualificationTime: '2022-01-03T00:00:00Z' },
      'aud-3': { status: 'realized', lastQualificationTime: '2022-01-04T00:00:00Z' },
    },
  },
});

/** A decided envelope: `update` applied on `stored`, the given decisions, message seq `seq`. */
function decided(seq: number, update: ProfileUpdate, ds: ExportDecision[], before: ProfileSnapshot | null = stored): DecidedEnvelope {
  return {
    msg: fakeMessage(JSON.stringify(update), seq),
    update,
    applied: { update, before, after: applyUpdate(before, update), replayed: false },
    decisions: ds,
  };
}

const decision = (dataflowId: string): ExportDecision => ({ dataflowId, reasons: ['attribute'], entered: [], exited: [] });
const keyOf = (dataflowId: string, event: string): string => idempotencyKey({ dataflowId, profileId: 'p-1', event });
const jobs = (e: PlannedEnvelope): ExportJob[] => e.jobs;
const keys = (e: PlannedEnvelope): string[] => e.jobs.map((j) => `${j.dataflowId}=${j.idempotencyKey}`);

describe('buildExports', () => {
  it('completes at once on an empty source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('|');
      expectObservable(src.pipe(buildExports({ dataflows, audiences }))).toBe('|');
      expectSubscriptions(src.subscriptions).toBe('(^!)');
    });
  });

  it('builds one job with the payload of SPEC §4 and keeps the rest of the envelope', () => {
    const ts = scheduler();
    const update: ProfileUpdate = {
      profileId: 'p-1',
      eventId: 'e-1',
      timestamp: '2026-11-26T10:00:00Z',
      attributes: { personalEmail: { address: 'john.doe@acme.com' } },
      identityMap: { ecid: [{ id: '6647' }] },
      // exits aud-2 (unmapped, same merge policy as the mapped aud-1) in this very update
      segmentMembership: { ups: { 'aud-2': { status: 'exited', lastQualificationTime: '2022-01-11T21:24:39Z' } } },
    };
    const a = decided(1, update, [decision('flow-1')]);
    const job: ExportJob = {
      dataflowId: 'flow-1',
      destinationId: 'dest-1',
      profileId: 'p-1',
      idempotencyKey: keyOf('flow-1', 'event:e-1'),
      eventTime: Date.parse('2026-11-26T10:00:00Z'),
      payload: {
        // only the mapped attributes that exist, all of them (not only the one written)
        person: { name: { firstName: 'John', lastName: 'Doe' } },
        personalEmail: { address: 'john.doe@acme.com' },
        segmentMembership: {
          ups: {
            // in, mapped: names, the audience's timestamps and the mapping's
            'aud-1': {
              status: 'realized',
              lastQualificationTime: '2022-01-02T23:37:33Z',
              createdAt: 1648553325000,
              updatedAt: 1648553330000,
              mappingCreatedAt: 1649856570000,
              mappingUpdatedAt: 1649856570001,
              name: 'First name equals John',
            },
            // exited in this update, same merge policy: status and time only
            'aud-2': { status: 'exited', lastQualificationTime: '2022-01-11T21:24:39Z' },
            // aud-3 (another merge policy) never appears
          },
        },
        // every identity of the profile
        identityMap: { ecid: [{ id: '1457' }, { id: '6647' }] },
      },
    };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('-a|', { a });
      const expected = '                 -a|';
      expectObservable(src.pipe(buildExports({ dataflows, audiences }))).toBe(expected, { a: { ...a, jobs: [job] } });
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('builds one job per decision, each with its own dataflow rules, and none without decisions', () => {
    const ts = scheduler();
    const update: ProfileUpdate = { profileId: 'p-1', attributes: { person: { name: { lastName: 'Roe' } } } };
    const v = {
      a: decided(1, update, [decision('flow-1'), decision('flow-2')]),
      b: decided(2, update, []),
      c: decided(3, update, [decision('flow-2')]),
    };
    const flow2Payload = {
      person: { name: { lastName: 'Roe' } },
      // aud-3 only: the mapped audience's policy is mp-2; no names or timestamps asked
      segmentMembership: { ups: { 'aud-3': { status: 'realized', lastQualificationTime: '2022-01-04T00:00:00Z' } } },
      identityMap: { ecid: [{ id: '1457' }] },
    };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('ab-c|', v);
      const expected = '                 ab-c|';
      const out = src.pipe(
        buildExports({ dataflows, audiences }),
        map((e) => jobs(e).map((j) => ({ dataflowId: j.dataflowId, destinationId: j.destinationId, payload: j.payload }))),
      );
      expectObservable(out).toBe(expected, {
        a: [
          {
            dataflowId: 'flow-1',
            destinationId: 'dest-1',
            payload: expect.objectContaining({ person: { name: { firstName: 'John', lastName: 'Roe' } } }),
          },
          { dataflowId: 'flow-2', destinationId: 'dest-2', payload: flow2Payload },
        ],
        b: [],
        c: [{ dataflowId: 'flow-2', destinationId: 'dest-2', payload: flow2Payload }],
      });
      expectSubscriptions(src.subscriptions).toBe('^---!');
    });
  });

  it('derives the Idempotency-Key from eventId when present, else from the message key; stable for the same export', () => {
    const ts = scheduler();
    const withId: ProfileUpdate = { profileId: 'p-1', eventId: 'e-9', attributes: { x: 1 } };
    const without: ProfileUpdate = { profileId: 'p-1', attributes: { x: 1 } };
    const both = [decision('flow-1'), decision('flow-2')];
    const v = {
      a: decided(1, withId, both), // eventId e-9, message test:1
      b: decided(2, withId, both), // same event published again as another message: same keys
      c: decided(3, without, both), // no eventId: from the message key test:3
      d: decided(3, without, both, null), // the same message redelivered (another snapshot): same keys
      e: decided(4, without, both), // another message: other keys
    };
    ts.run(({ cold, expectObservable }) => {
      const src = cold<DecidedEnvelope>('abcde|', v);
      const expected = '                 abcde|';
      const byEvent = [`flow-1=${keyOf('flow-1', 'event:e-9')}`, `flow-2=${keyOf('flow-2', 'event:e-9')}`];
      const byMsg3 = [`flow-1=${keyOf('flow-1', 'test:3')}`, `flow-2=${keyOf('flow-2', 'test:3')}`];
      const byMsg4 = [`flow-1=${keyOf('flow-1', 'test:4')}`, `flow-2=${keyOf('flow-2', 'test:4')}`];
      expectObservable(src.pipe(buildExports({ dataflows, audiences }), map(keys))).toBe(expected, {
        a: byEvent,
        b: byEvent,
        c: byMsg3,
        d: byMsg3,
        e: byMsg4,
      });
    });
    const built: PlannedEnvelope[] = [];
    ts.run(({ cold, flush }) => {
      cold<DecidedEnvelope>('ace|', v).pipe(buildExports({ dataflows, audiences })).subscribe((e) => built.push(e));
      flush();
    });
    const all = built.flatMap((e) => e.jobs.map((j) => j.idempotencyKey));
    // UUID-shaped, and different per dataflow and per event
    for (const k of all) expect(k).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(new Set(all).size).toBe(6);
  });

  it('passes a source error through', () => {
    const ts = scheduler();
    const a = decided(1, { profileId: 'p-1' }, []);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('-a-#', { a }, new Error('source down'));
      const expected = '                 -a-#';
      expectObservable(src.pipe(buildExports({ dataflows, audiences }), map(jobs))).toBe(expected, { a: [] }, new Error('source down'));
      expectSubscriptions(src.subscriptions).toBe('^--!');
    });
  });

  it('rejects the event when building throws (a decision for an unknown dataflow), with no jobs, and goes on', () => {
    const ts = scheduler();
    const update: ProfileUpdate = { profileId: 'p-1' };
    const v = { a: decided(1, update, []), x: decided(2, update, [decision('flow-1'), decision('flow-404')]), b: decided(3, update, []) };
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('a-x-b|', v);
      const expected = '                 a-x-b|';
      const out = src.pipe(
        buildExports({ dataflows, audiences }),
        map((e) => (e.fault ? `${e.fault.kind}: ${(e.fault.error as Error).message} (${e.jobs.length} jobs)` : jobs(e))),
      );
      expectObservable(out).toBe(expected, {
        a: [],
        x: 'rejected: event: could not be processed (build: Error: no payload rules for dataflow flow-404) (0 jobs)',
        b: [],
      });
      expectSubscriptions(src.subscriptions).toBe('^----!');
    });
  });

  it('stays open on a never-ending source', () => {
    const ts = scheduler();
    const a = decided(1, { profileId: 'p-1', attributes: { x: 1 } }, [decision('flow-2')]);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('-a-a-', { a });
      const expected = '                 -a-a-';
      const key = [`flow-2=${keyOf('flow-2', 'test:1')}`];
      expectObservable(src.pipe(buildExports({ dataflows, audiences }), map(keys))).toBe(expected, { a: key });
      expectSubscriptions(src.subscriptions).toBe('^');
    });
  });

  it('unsubscribes the source when unsubscribed early', () => {
    const ts = scheduler();
    const a = decided(1, { profileId: 'p-1' }, []);
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<DecidedEnvelope>('-a--a--a|', { a });
      const unsub = '                    ---!     ';
      const expected = '                 -a-      ';
      expectObservable(src.pipe(buildExports({ dataflows, audiences }), map(jobs)), unsub).toBe(expected, { a: [] });
      expectSubscriptions(src.subscriptions).toBe('^--!     ');
    });
  });
});
