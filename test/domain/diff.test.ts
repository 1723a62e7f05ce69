import { describe, expect, it } from 'vitest';
import { decideExports, identityChanged, patchTouches, touches, writtenPaths } from '../../src/domain/diff.js';
import { applyUpdate } from '../../src/domain/merge.js';
import type {
  JsonObject,
  AppliedUpdate,
  DataflowRules,
  ExportDecision,
  MembershipRecord,
  ProfileSnapshot,
  ProfileUpdate,
} from '../../src/domain/types.js';
import { MemorySnapshotStore } from '../../src/stores/memory-snapshot-store.js';

function flow(id: string, audiences: string[], attributes: string[] = []): DataflowRules {
  return {
    id,
    destinationId: 'dest-1',
    audiences: audiences.map((a) => ({ id: a, mappingCreatedAt: 1, mappingUpdatedAt: 2 })),
    attributes,
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
  };
}

function snap(partial: Partial<ProfileSnapshot> = {}): ProfileSnapshot {
  return { profileId: 'p-1', attributes: {}, identityMap: {}, memberships: {}, ...partial };
}

function apply(before: ProfileSnapshot | null, update: Omit<ProfileUpdate, 'profileId'>): AppliedUpdate {
  const u: ProfileUpdate = { profileId: 'p-1', ...update };
  return { update: u, before, after: applyUpdate(before, u) };
}

function ups(records: Record<string, MembershipRecord['status']>): ProfileUpdate['segmentMembership'] {
  const out: Record<string, MembershipRecord> = {};
  for (const [id, status] of Object.entries(records)) out[id] = { status, lastQualificationTime: '2026-11-26T10:00:00Z' };
  return { ups: out };
}

const inAud1 = snap({
  attributes: { person: { name: { firstName: 'John', lastName: 'Doe' }, gender: 'm' }, loyalty: { tier: 'gold' } },
  identityMap: { ecid: [{ id: 'e1' }] },
  memberships: { 'aud-1': { status: 'realized', lastQualificationTime: 't0' } },
});

const F1 = flow('flow-1', ['aud-1'], ['person.name.firstName']);

describe('decideExports — membership changes (SPEC §3.1)', () => {
  it('entering a mapped audience from absent exports', () => {
    const d = decideExports(apply(null, { segmentMembership: ups({ 'aud-1': 'realized' }) }), [F1]);
    expect(d).toEqual<ExportDecision[]>([{ dataflowId: 'flow-1', reasons: ['membership'], entered: ['aud-1'], exited: [] }]);
  });

  it('entering with status existing also counts as entering', () => {
    const d = decideExports(apply(null, { segmentMembership: ups({ 'aud-1': 'existing' }) }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['membership'], entered: ['aud-1'], exited: [] }]);
  });

  it('re-entering from exited exports', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'exited' } } });
    const d = decideExports(apply(before, { segmentMembership: ups({ 'aud-1': 'realized' }) }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['membership'], entered: ['aud-1'], exited: [] }]);
  });

  it('exiting a mapped audience exports', () => {
    const d = decideExports(apply(inAud1, { segmentMembership: ups({ 'aud-1': 'exited' }) }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['membership'], entered: [], exited: ['aud-1'] }]);
  });

  it('exiting from existing exports', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'existing' } } });
    const d = decideExports(apply(before, { segmentMembership: ups({ 'aud-1': 'exited' }) }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['membership'], entered: [], exited: ['aud-1'] }]);
  });

  it('realized → existing is no change', () => {
    expect(decideExports(apply(inAud1, { segmentMembership: ups({ 'aud-1': 'existing' }) }), [F1])).toEqual([]);
  });

  it('existing → realized is no change', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'existing' } } });
    expect(decideExports(apply(before, { segmentMembership: ups({ 'aud-1': 'realized' }) }), [F1])).toEqual([]);
  });

  it('realized → realized (a new lastQualificationTime) is no change', () => {
    expect(decideExports(apply(inAud1, { segmentMembership: ups({ 'aud-1': 'realized' }) }), [F1])).toEqual([]);
  });

  it('absent → exited is no change', () => {
    expect(decideExports(apply(null, { segmentMembership: ups({ 'aud-1': 'exited' }) }), [F1])).toEqual([]);
    expect(decideExports(apply(snap(), { segmentMembership: ups({ 'aud-1': 'exited' }) }), [F1])).toEqual([]);
  });

  it('exited → exited is no change', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'exited' } } });
    expect(decideExports(apply(before, { segmentMembership: ups({ 'aud-1': 'exited' }) }), [F1])).toEqual([]);
  });

  it('a membership change of an unmapped audience sends nothing', () => {
    expect(decideExports(apply(null, { segmentMembership: ups({ 'aud-9': 'realized' }) }), [F1])).toEqual([]);
    const before = snap({ memberships: { 'aud-9': { status: 'realized' } } });
    expect(decideExports(apply(before, { segmentMembership: ups({ 'aud-9': 'exited' }) }), [F1])).toEqual([]);
  });

  it('an unmapped audience change while in a mapped audience sends nothing', () => {
    expect(decideExports(apply(inAud1, { segmentMembership: ups({ 'aud-9': 'realized' }) }), [F1])).toEqual([]);
  });

  it('lists every mapped audience entered and exited in one update', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'realized' }, 'aud-2': { status: 'existing' } } });
    const f = flow('flow-1', ['aud-1', 'aud-2', 'aud-3', 'aud-4'], []);
    const d = decideExports(
      apply(before, { segmentMembership: ups({ 'aud-1': 'exited', 'aud-2': 'existing', 'aud-3': 'realized', 'aud-4': 'existing', 'aud-9': 'realized' }) }),
      [f],
    );
    expect(d).toHaveLength(1);
    expect(d[0].reasons).toEqual(['membership']);
    expect([...d[0].entered].sort()).toEqual(['aud-3', 'aud-4']);
    expect(d[0].exited).toEqual(['aud-1']);
  });

  it('exiting the only mapped audience exports even though the profile is no longer in any', () => {
    const d = decideExports(
      apply(inAud1, {
        segmentMembership: ups({ 'aud-1': 'exited' }),
        attributes: { person: { name: { firstName: 'Jim' } } },
        identityMap: { ecid: [{ id: 'e2' }] },
      }),
      [F1],
    );
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['membership'], entered: [], exited: ['aud-1'] }]);
  });
});

describe('decideExports — identity changes while in a mapped audience (SPEC §3.2)', () => {
  it('an added identity exports', () => {
    const d = decideExports(apply(inAud1, { identityMap: { email: [{ id: 'm1' }] } }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['identity'], entered: [], exited: [] }]);
  });

  it('an identity added to an existing namespace exports', () => {
    const d = decideExports(apply(inAud1, { identityMap: { ecid: [{ id: 'e2' }] } }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['identity'], entered: [], exited: [] }]);
  });

  it('a removed identity exports', () => {
    const d = decideExports(apply(inAud1, { removedIdentities: { ecid: ['e1'] } }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['identity'], entered: [], exited: [] }]);
  });

  it('adding an identity the profile already has is no change', () => {
    expect(decideExports(apply(inAud1, { identityMap: { ecid: [{ id: 'e1' }] } }), [F1])).toEqual([]);
  });

  it('adding an existing identity with different extra fields is no change', () => {
    expect(decideExports(apply(inAud1, { identityMap: { ecid: [{ id: 'e1', primary: true }] } }), [F1])).toEqual([]);
  });

  it('removing an identity the profile does not have is no change', () => {
    expect(decideExports(apply(inAud1, { removedIdentities: { ecid: ['zz'], crm: ['e1'] } }), [F1])).toEqual([]);
  });

  it('an identity change on a profile in no mapped audience sends nothing', () => {
    const before = snap({ memberships: { 'aud-9': { status: 'realized' } } });
    expect(decideExports(apply(before, { identityMap: { ecid: [{ id: 'e2' }] } }), [F1])).toEqual([]);
    expect(decideExports(apply(null, { identityMap: { ecid: [{ id: 'e2' }] } }), [F1])).toEqual([]);
  });

  it('an identity change on a profile whose mapped membership is exited sends nothing', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'exited' } }, identityMap: { ecid: [{ id: 'e1' }] } });
    expect(decideExports(apply(before, { identityMap: { ecid: [{ id: 'e2' }] } }), [F1])).toEqual([]);
  });

  it('entering and changing identities in the same update gives both reasons', () => {
    const d = decideExports(apply(null, { segmentMembership: ups({ 'aud-1': 'realized' }), identityMap: { ecid: [{ id: 'e1' }] } }), [F1]);
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['membership', 'identity'], entered: ['aud-1'], exited: [] }]);
  });

  it('identityChanged compares the sets of (namespace, id) pairs', () => {
    const a = snap({ identityMap: { ecid: [{ id: 'x' }] } });
    expect(identityChanged(a, snap({ identityMap: { ecid: [{ id: 'x', primary: true }] } }))).toBe(false);
    expect(identityChanged(a, snap({ identityMap: { crm: [{ id: 'x' }] } }))).toBe(true);
    expect(identityChanged(null, snap())).toBe(false);
    expect(identityChanged(null, a)).toBe(true);
    expect(identityChanged(a, snap())).toBe(true);
  });
});

describe('decideExports — mapped attribute writes while in a mapped audience (SPEC §3.2)', () => {
  const attr = (attributes: ProfileUpdate['attributes'], f: DataflowRules = F1, before: ProfileSnapshot | null = inAud1) =>
    decideExports(apply(before, { attributes }), [f]);
  const ATTR = [{ dataflowId: 'flow-1', reasons: ['attribute'], entered: [], exited: [] }];

  it('writing a mapped leaf with a new value exports', () => {
    expect(attr({ person: { name: { firstName: 'Jim' } } })).toEqual(ATTR);
  });

  it('writing a mapped leaf with an equal value still exports', () => {
    expect(attr({ person: { name: { firstName: 'John' } } })).toEqual(ATTR);
  });

  it('writing a mapped leaf the profile did not have exports', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'existing' } } });
    expect(attr({ person: { name: { firstName: 'John' } } }, F1, before)).toEqual(ATTR);
  });

  it('removing a mapped leaf with null exports', () => {
    expect(attr({ person: { name: { firstName: null } } })).toEqual(ATTR);
  });

  it('removing a mapped leaf the profile never had (null) still counts as a write', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'existing' } } });
    expect(attr({ person: { name: { firstName: null } } }, F1, before)).toEqual(ATTR);
  });

  it('writing the parent object to null exports', () => {
    expect(attr({ person: { name: null } })).toEqual(ATTR);
    expect(attr({ person: null })).toEqual(ATTR);
  });

  it('writing a scalar over the object holding the mapped leaf exports', () => {
    expect(attr({ person: { name: 'John Doe' } })).toEqual(ATTR);
  });

  it('writing a sibling of a mapped leaf does not export', () => {
    expect(attr({ person: { gender: 'f' } })).toEqual([]);
    expect(attr({ person: { name: { lastName: 'Smith' } } })).toEqual([]);
    expect(attr({ person: { gender: null } })).toEqual([]);
  });

  it('a path that merely shares a prefix string is not the mapped path', () => {
    expect(attr({ person: { name: { firstNameAlias: 'J' } } })).toEqual([]);
    expect(attr({ personal: { name: { firstName: 'J' } } })).toEqual([]);
  });

  it('writing an unmapped attribute does not export', () => {
    expect(attr({ loyalty: { tier: 'silver' } })).toEqual([]);
  });

  it('writing an empty object writes no leaf and does not export', () => {
    expect(attr({ person: { name: {} } })).toEqual([]);
  });

  it('when the mapped path names an object, any leaf written under it exports', () => {
    const f = flow('flow-1', ['aud-1'], ['person.name']);
    expect(attr({ person: { name: { lastName: 'Smith' } } }, f)).toEqual(ATTR);
    expect(attr({ person: { name: { middle: { initial: 'Q' } } } }, f)).toEqual(ATTR);
    expect(attr({ person: { name: { lastName: null } } }, f)).toEqual(ATTR);
    expect(attr({ person: { name: null } }, f)).toEqual(ATTR);
    expect(attr({ person: { gender: 'f' } }, f)).toEqual([]);
  });

  it('an array at a mapped path is a leaf: writing it (even equal) exports', () => {
    const before = snap({ attributes: { tags: ['a'] }, memberships: { 'aud-1': { status: 'realized' } } });
    const f = flow('flow-1', ['aud-1'], ['tags']);
    expect(attr({ tags: ['a'] }, f, before)).toEqual(ATTR);
    expect(attr({ tags: [] }, f, before)).toEqual(ATTR);
  });

  it('any one of several mapped paths is enough', () => {
    const f = flow('flow-1', ['aud-1'], ['person.name.firstName', 'loyalty.tier']);
    expect(attr({ loyalty: { tier: 'gold' } }, f)).toEqual(ATTR);
  });

  it('a dataflow with no mapped attributes never exports for attribute writes', () => {
    const f = flow('flow-1', ['aud-1'], []);
    expect(attr({ person: { name: { firstName: 'Jim' } } }, f)).toEqual([]);
  });

  it('a profile in no mapped audience sends nothing even when mapped attributes are written', () => {
    expect(attr({ person: { name: { firstName: 'Jim' } } }, F1, null)).toEqual([]);
    expect(attr({ person: { name: { firstName: 'Jim' } } }, F1, snap({ memberships: { 'aud-9': { status: 'realized' } } }))).toEqual([]);
    expect(attr({ person: { name: { firstName: 'Jim' } } }, F1, snap({ memberships: { 'aud-1': { status: 'exited' } } }))).toEqual([]);
  });

  it('being in any one of the mapped audiences is enough', () => {
    const f = flow('flow-1', ['aud-0', 'aud-1'], ['person.name.firstName']);
    expect(attr({ person: { name: { firstName: 'Jim' } } }, f)).toEqual(ATTR);
  });

  it('entering and writing a mapped attribute in one update gives both reasons', () => {
    const d = decideExports(
      apply(null, { segmentMembership: ups({ 'aud-1': 'realized' }), attributes: { person: { name: { firstName: 'J' } } } }),
      [F1],
    );
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['membership', 'attribute'], entered: ['aud-1'], exited: [] }]);
  });

  it('identity change and mapped attribute write in one update give both reasons', () => {
    const d = decideExports(
      apply(inAud1, { identityMap: { ecid: [{ id: 'e9' }] }, attributes: { person: { name: { firstName: 'J' } } } }),
      [F1],
    );
    expect(d).toEqual([{ dataflowId: 'flow-1', reasons: ['identity', 'attribute'], entered: [], exited: [] }]);
  });

  it('an update that changes nothing relevant sends nothing', () => {
    expect(decideExports(apply(inAud1, {}), [F1])).toEqual([]);
  });
});

describe('decideExports — several dataflows', () => {
  it('decides each dataflow independently', () => {
    const before = snap({
      attributes: { person: { name: { firstName: 'John' } }, loyalty: { tier: 'gold' } },
      memberships: { 'aud-1': { status: 'realized' }, 'aud-2': { status: 'exited' } },
    });
    const flows = [
      flow('f-names', ['aud-1'], ['person.name.firstName']), // in, mapped attr written → export
      flow('f-loyalty', ['aud-1'], ['loyalty.tier']), // in, attr not written → nothing
      flow('f-aud2', ['aud-2'], ['person.name.firstName']), // entered → export
      flow('f-aud3', ['aud-3'], ['person.name.firstName']), // not in aud-3 → nothing
    ];
    const d = decideExports(
      apply(before, { attributes: { person: { name: { firstName: 'Jim' } } }, segmentMembership: ups({ 'aud-2': 'realized' }) }),
      flows,
    );
    expect(d).toEqual([
      { dataflowId: 'f-names', reasons: ['attribute'], entered: [], exited: [] },
      { dataflowId: 'f-aud2', reasons: ['membership', 'attribute'], entered: ['aud-2'], exited: [] },
    ]);
  });

  it('an identity change exports to every dataflow the profile is in a mapped audience of', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'realized' }, 'aud-2': { status: 'existing' } } });
    const flows = [flow('a', ['aud-1']), flow('b', ['aud-2']), flow('c', ['aud-3'])];
    const d = decideExports(apply(before, { identityMap: { ecid: [{ id: 'x' }] } }), flows);
    expect(d.map((x) => x.dataflowId)).toEqual(['a', 'b']);
    expect(d.every((x) => x.reasons.join() === 'identity')).toBe(true);
  });

  it('no dataflows → no decisions', () => {
    expect(decideExports(apply(null, { segmentMembership: ups({ 'aud-1': 'realized' }) }), [])).toEqual([]);
  });
});

describe('exports are incremental (SPEC §3)', () => {
  it('100 members, then 5 new qualify → exactly 5 export decisions', async () => {
    const store = new MemorySnapshotStore();
    const flows = [flow('flow-1', ['aud-1'], ['person.name.firstName'])];
    let seq = 0;
    const run = async (updates: ProfileUpdate[]) => {
      const decisions: { profileId: string; decision: ExportDecision }[] = [];
      for (const u of updates) {
        seq++;
        const applied = await store.apply(u, { key: `test:${seq}`, seq });
        await store.confirm(u.profileId, `test:${seq}`);
        for (const decision of decideExports(applied, flows)) decisions.push({ profileId: u.profileId, decision });
      }
      return decisions;
    };
    const ids = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `p-${from + i}`);

    // Day 1: 100 profiles qualify (plus 20 that never do).
    const first = await run([
      ...ids(100).map((profileId) => ({ profileId, segmentMembership: ups({ 'aud-1': 'realized' }) })),
      ...ids(20, 1000).map((profileId) => ({ profileId, segmentMembership: ups({ 'aud-9': 'realized' }) })),
    ]);
    expect(first).toHaveLength(100);

    // Day 2: the 100 are re-evaluated (existing), some write unmapped attributes, 5 new qualify,
    // and the 20 outsiders write mapped attributes.
    const second = await run([
      ...ids(100).map((profileId, i) => ({
        profileId,
        segmentMembership: ups({ 'aud-1': 'existing' }),
        ...(i % 2 === 0 ? { attributes: { loyalty: { points: i } } } : {}),
      })),
      ...ids(5, 500).map((profileId) => ({ profileId, segmentMembership: ups({ 'aud-1': 'realized' }) })),
      ...ids(20, 1000).map((profileId) => ({ profileId, attributes: { person: { name: { firstName: 'X' } } } })),
    ]);
    expect(second).toHaveLength(5);
    expect(second.map((d) => d.profileId)).toEqual(ids(5, 500));
    for (const { decision } of second) {
      expect(decision).toEqual({ dataflowId: 'flow-1', reasons: ['membership'], entered: ['aud-1'], exited: [] });
    }

    const members: string[] = [];
    for await (const batch of store.members('aud-1')) members.push(...batch);
    expect(members).toHaveLength(105);
  });
});

describe('writtenPaths / touches', () => {
  it('lists every written leaf, treating null, scalars and arrays as leaves', () => {
    expect(
      writtenPaths({ person: { name: { firstName: 'J', lastName: null } }, tags: ['a'], n: 0, e: {} }).sort(),
    ).toEqual(['n', 'person.name.firstName', 'person.name.lastName', 'tags']);
    expect(writtenPaths(undefined)).toEqual([]);
  });

  it('touches: same path, under a mapped object, above a mapped leaf; not a sibling or prefix string', () => {
    expect(touches('person.name.firstName', 'person.name.firstName')).toBe(true);
    expect(touches('person.name.firstName', 'person.name')).toBe(true);
    expect(touches('person.name', 'person.name.firstName')).toBe(true);
    expect(touches('person.gender', 'person.name.firstName')).toBe(false);
    expect(touches('person.nameX', 'person.name')).toBe(false);
    expect(touches('person.name', 'person.nameX')).toBe(false);
  });
});

describe('patchTouches', () => {
  it('answers as writtenPaths + touches: same path, under, above, not a sibling; empty objects write nothing', () => {
    const patch = { person: { name: { firstName: 'J', lastName: null } }, tags: ['a'], e: {}, deep: { x: {} } };
    expect(patchTouches(patch, 'person.name.firstName')).toBe(true);
    expect(patchTouches(patch, 'person.name')).toBe(true);
    expect(patchTouches(patch, 'person')).toBe(true);
    expect(patchTouches(patch, 'tags.0')).toBe(true);
    expect(patchTouches(patch, 'person.name.middleName')).toBe(false);
    expect(patchTouches(patch, 'person.nam')).toBe(false);
    expect(patchTouches(patch, 'e')).toBe(false);
    expect(patchTouches(patch, 'deep')).toBe(false);
    expect(patchTouches(undefined, 'person')).toBe(false);
  });

  it('is writtenPaths(patch).some((w) => touches(w, mapped)) on 20,000 random patches, keys with dots and empty keys included', () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return (seed >>> 16) % n;
    };
    const keys = ['a', 'b', 'a.b', 'b.a', '', '.', 'a.', '.a', 'ab', 'a.b.c'];
    const patchOf = (depth: number): JsonObject => {
      const o: JsonObject = {};
      const n = rand(4);
      for (let i = 0; i < n; i++) {
        const r = rand(6);
        o[keys[rand(keys.length)]] = depth > 0 && r < 3 ? patchOf(depth - 1) : r === 3 ? null : r === 4 ? [1] : 'v';
      }
      return o;
    };
    const mappedOf = (): string => Array.from({ length: 1 + rand(3) }, () => keys[rand(keys.length)]).join('.');
    let hits = 0;
    for (let i = 0; i < 20_000; i++) {
      const patch = patchOf(3);
      const mapped = i % 50 === 0 ? '' : mappedOf();
      const expected = writtenPaths(patch).some((w) => touches(w, mapped));
      if (patchTouches(patch, mapped) !== expected) {
        throw new Error(`differs (${hits} hits so far) for ${JSON.stringify(patch)} and ${JSON.stringify(mapped)}: expected ${expected}`);
      }
      if (expected) hits++;
    }
    // Both answers occur often (the test is not all-false).
    expect(hits).toBeGreaterThan(1_000);
    expect(hits).toBeLessThan(18_000);
  });
});
