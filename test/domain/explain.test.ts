import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { decideExports, writtenPaths } from '../../src/domain/diff.js';
import { explainDataflow, LAST_UPDATE_LIMITS, lastUpdateOf, reconstructApplied, summarizeUpdate, writtenOf } from '../../src/domain/explain.js';
import { applyUpdate } from '../../src/domain/merge.js';
import type { DataflowRules, JsonObject, ProfileSnapshot, ProfileUpdate } from '../../src/domain/types.js';

const flow: DataflowRules = {
  id: 'flow-1',
  destinationId: 'dest-1',
  audiences: [{ id: 'aud-1', mappingCreatedAt: 1, mappingUpdatedAt: 1 }, { id: 'aud-2', mappingCreatedAt: 1, mappingUpdatedAt: 1 }],
  attributes: ['person.name.firstName', 'personalEmail'],
  includeSegmentNames: false,
  includeSegmentTimestamps: false,
};
const noAttrs: DataflowRules = { ...flow, id: 'flow-2', attributes: [] };

const inAud = (id: string) => ({ segmentMembership: { ups: { [id]: { status: 'realized' as const } } } });
const outAud = (id: string) => ({ segmentMembership: { ups: { [id]: { status: 'exited' as const } } } });

/** [name, updates applied first, the last update]. */
const cases: Array<[string, Array<Partial<ProfileUpdate>>, Partial<ProfileUpdate>]> = [
  ['enters a mapped audience', [], inAud('aud-1')],
  ['exits a mapped audience', [inAud('aud-1')], outAud('aud-1')],
  ['realized → existing is no change', [inAud('aud-1')], { segmentMembership: { ups: { 'aud-1': { status: 'existing' } } } }],
  ['enters an unmapped audience only', [], inAud('aud-9')],
  ['in, writes a mapped attribute', [inAud('aud-1')], { attributes: { person: { name: { firstName: 'J' } } } }],
  ['in, writes an equal value of a mapped attribute', [inAud('aud-1'), { attributes: { personalEmail: { address: 'a' } } }], { attributes: { personalEmail: { address: 'a' } } }],
  ['in, writes a sibling only', [inAud('aud-1')], { attributes: { person: { gender: 'f' } } }],
  ['in, removes above a mapped path', [inAud('aud-1'), { attributes: { person: { name: { firstName: 'J' } } } }], { attributes: { person: null } }],
  ['out, writes a mapped attribute', [], { attributes: { person: { name: { firstName: 'J' } } } }],
  ['in, adds an identity', [inAud('aud-2')], { identityMap: { ecid: [{ id: 'e1' }] } }],
  ['in, adds an identity it has', [inAud('aud-2'), { identityMap: { ecid: [{ id: 'e1' }] } }], { identityMap: { ecid: [{ id: 'e1' }] } }],
  ['in, removes an identity', [inAud('aud-2'), { identityMap: { ecid: [{ id: 'e1' }] } }], { removedIdentities: { ecid: ['e1'] } }],
  ['out, identity changes', [], { identityMap: { ecid: [{ id: 'e1' }] } }],
  ['in, empty update', [inAud('aud-1')], {}],
  ['exits one mapped audience, stays in another, writes mapped', [inAud('aud-1'), inAud('aud-2')], { ...outAud('aud-1'), attributes: { personalEmail: 'x' } }],
];

function play(first: Array<Partial<ProfileUpdate>>, lastUpdate: Partial<ProfileUpdate>) {
  let s: ProfileSnapshot | null = null;
  for (const u of first) s = applyUpdate(s, { profileId: 'p-1', ...u });
  const update: ProfileUpdate = { profileId: 'p-1', ...lastUpdate };
  return { update, before: s, after: applyUpdate(s, update) };
}

describe('explain: the verdict for the last update is the worker decision', () => {
  it.each(cases)('%s', (_name, first, lastUpdate) => {
    const real = play(first, lastUpdate);
    for (const f of [flow, noAttrs]) {
      const decided = decideExports(real, [f])[0];
      const v = explainDataflow(real.after, f);
      expect(v.verdict).toBe(decided ? 'export' : 'none');
      expect(v.reasons).toEqual(decided?.reasons ?? []);
      expect([v.entered, v.exited]).toEqual([decided?.entered ?? [], decided?.exited ?? []]);
      expect(v.why.length).toBeGreaterThan(0);
      // the reconstruction feeds decideExports the same facts
      expect(decideExports(reconstructApplied(real.after)!, [f])).toEqual(decideExports(real, [f]));
    }
  });

  it('says why not, in words', () => {
    const notIn = explainDataflow(play([], { attributes: { person: { name: { firstName: 'J' } } } }).after, flow);
    expect(notIn.why).toEqual(['not in any mapped audience (mapped: aud-1, aud-2), and left none in this update']);
    const sibling = explainDataflow(play([inAud('aud-1')], { attributes: { person: { gender: 'f' } } }).after, flow);
    expect(sibling.verdict).toBe('none');
    expect(sibling.why).toContain('no mapped attribute written (wrote: person.gender; mapped: person.name.firstName, personalEmail)');
    const entered = explainDataflow(play([], inAud('aud-2')).after, flow);
    expect(entered).toMatchObject({ verdict: 'export', reasons: ['membership'], entered: ['aud-2'], why: ['entered mapped audience aud-2'] });
    const mapped = explainDataflow(play([inAud('aud-1')], { attributes: { personalEmail: { address: 'a' }, x: 1 } }).after, flow);
    expect(mapped).toMatchObject({ verdict: 'export', reasons: ['attribute'], mappedWritten: ['personalEmail.address'] });
  });

  it('is unknown for a snapshot that does not record its last update', () => {
    const { last: _drop, ...old } = play([inAud('aud-1')], {}).after;
    expect(explainDataflow(old, flow)).toMatchObject({ verdict: 'unknown', reasons: [] });
  });
});

describe('summarizeUpdate', () => {
  it('records event id, time, written leaves, identity change and any audience entered or exited', () => {
    const r = play([inAud('aud-1')], {
      eventId: 'e-7',
      timestamp: '2026-11-26T10:00:00Z',
      attributes: { a: { b: 1, c: null }, d: [1] },
      identityMap: { ecid: [{ id: 'x' }] },
      segmentMembership: { ups: { 'aud-1': { status: 'exited' }, 'aud-9': { status: 'realized' } } },
    });
    expect(lastUpdateOf(r.after)).toEqual({
      eventId: 'e-7',
      at: '2026-11-26T10:00:00Z',
      written: ['a.b', 'a.c', 'd'],
      writtenMore: 0,
      identityChanged: true,
      entered: ['aud-9'],
      exited: ['aud-1'],
    });
    // a later update replaces it
    expect(lastUpdateOf(applyUpdate(r.after, { profileId: 'p-1' }))).toEqual({ written: [], writtenMore: 0, identityChanged: false, entered: [], exited: [] });
  });

  it('keeps at most LAST_UPDATE_LIMITS.written paths and counts the rest', () => {
    const attributes = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, i]));
    const last = summarizeUpdate(null, { profileId: 'p', attributes }, applyUpdate(null, { profileId: 'p', attributes }));
    expect(writtenOf(last)).toHaveLength(LAST_UPDATE_LIMITS.written);
    expect(writtenOf(last)).toEqual(writtenPaths(attributes).slice(0, LAST_UPDATE_LIMITS.written));
    expect(last.writtenMore).toBe(100 - LAST_UPDATE_LIMITS.written);
  });
});

describe('the stored last record', () => {
  it('stores the written paths as one string, and reads records of the older form (a list)', () => {
    const r = play([], { attributes: { a: { b: 1, c: null }, d: [1] } });
    expect(r.after.last).toMatchObject({ writtenText: 'a.b\na.c\nd' });
    expect(r.after.last?.written).toBeUndefined();
    // A snapshot stored before (6 Dec 2026): `written`, no `writtenText`.
    const old: ProfileSnapshot = { ...r.after, last: { written: ['x.y', 'z'], writtenMore: 0, identityChanged: false, entered: [], exited: [] } };
    expect(lastUpdateOf(old)?.written).toEqual(['x.y', 'z']);
    expect(explainDataflow({ ...old, memberships: { 'aud-1': { status: 'realized' } } }, { ...flow, attributes: ['x'] })).toMatchObject({ verdict: 'export', mappedWritten: ['x.y'] });
    // It survives JSON (the Redis and local stores).
    expect(lastUpdateOf(JSON.parse(JSON.stringify(r.after)))?.written).toEqual(['a.b', 'a.c', 'd']);
  });

  it('reads back exactly writtenPaths (the first LAST_UPDATE_LIMITS.written) for 5,000 random patches: dotted, empty and newline keys', () => {
    let seed = 11;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return (seed >>> 16) % n;
    };
    const keys = ['a', 'b', 'a.b', '', '.', 'x\ny', 'long-key-name'];
    const patchOf = (depth: number): JsonObject => {
      const o: JsonObject = {};
      const n = rand(depth === 3 ? 40 : 5);
      for (let i = 0; i < n; i++) o[i % 3 === 0 ? `k${rand(30)}` : keys[rand(keys.length)]] = depth > 0 && rand(3) === 0 ? patchOf(depth - 1) : rand(4) === 0 ? null : 1;
      return o;
    };
    for (let i = 0; i < 5_000; i++) {
      const attributes = patchOf(3);
      const update: ProfileUpdate = { profileId: 'p', attributes };
      const last = summarizeUpdate(null, update, applyUpdate(null, update));
      const all = writtenPaths(attributes);
      expect(writtenOf(last)).toEqual(all.slice(0, LAST_UPDATE_LIMITS.written));
      expect(last.writtenMore).toBe(Math.max(0, all.length - LAST_UPDATE_LIMITS.written));
    }
    // the one-empty-path case, which one string cannot tell from none
    const empty = summarizeUpdate(null, { profileId: 'p', attributes: { '': 1 } }, applyUpdate(null, { profileId: 'p', attributes: { '': 1 } }));
    expect(writtenOf(empty)).toEqual(['']);
  });

  it('never holds an undefined field: a snapshot is deep-strict-equal to its JSON round trip (the crash tests compare them so)', () => {
    const many = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, i]));
    const updates: ProfileUpdate[] = [
      { profileId: 'p', eventId: 'e1', timestamp: '2026-11-26T10:00:00Z', attributes: { a: { b: 1 } }, ...inAud('aud-1') },
      { profileId: 'p', attributes: many },
      { profileId: 'p', eventId: 'e3' },
      { profileId: 'p', timestamp: '2026-11-26T10:00:00Z', attributes: { 'x\ny': 1 } },
      { profileId: 'p', identityMap: { ecid: [{ id: 'e1' }] }, segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: '2026-11-26T10:00:00Z' } } } },
    ];
    let s: ProfileSnapshot | null = null;
    for (const u of updates) {
      s = applyUpdate(s, u);
      expect(isDeepStrictEqual(s, JSON.parse(JSON.stringify(s)))).toBe(true);
    }
  });

  it('counts no paths for an update without attributes, whatever the update before wrote', () => {
    const many = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, i]));
    const first = applyUpdate(null, { profileId: 'p', attributes: many });
    expect(first.last?.writtenMore).toBe(100 - LAST_UPDATE_LIMITS.written);
    const next = applyUpdate(first, { profileId: 'p', eventId: 'e2' });
    expect(lastUpdateOf(next)).toMatchObject({ written: [], writtenMore: 0 });
  });
});

