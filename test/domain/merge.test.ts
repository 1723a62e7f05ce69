import { describe, expect, it } from 'vitest';
import { applyUpdate, emptySnapshot, mergeAttributes, mergeIdentities } from '../../src/domain/merge.js';
import type { IdentityMap, JsonObject, ProfileSnapshot, ProfileUpdate } from '../../src/domain/types.js';

/** Freezes a value and everything under it, so any mutation attempt throws (ESM is strict). */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function snapshot(partial: Partial<ProfileSnapshot> = {}): ProfileSnapshot {
  return { profileId: 'p-1', attributes: {}, identityMap: {}, memberships: {}, ...partial };
}

describe('mergeAttributes (SPEC §2 attributes)', () => {
  it('deep-merges objects key by key, keeping untouched siblings', () => {
    const base: JsonObject = {
      person: { name: { firstName: 'John', lastName: 'Doe' }, gender: 'male' },
      personalEmail: { address: 'j@x.com' },
    };
    const out = mergeAttributes(base, { person: { name: { firstName: 'Jane' } } });
    expect(out).toEqual({
      person: { name: { firstName: 'Jane', lastName: 'Doe' }, gender: 'male' },
      personalEmail: { address: 'j@x.com' },
    });
  });

  it('adds new keys at any depth', () => {
    const out = mergeAttributes({ a: 1 }, { b: { c: { d: 'x' } }, e: true });
    expect(out).toEqual({ a: 1, b: { c: { d: 'x' } }, e: true });
  });

  it('writing an equal value leaves the value as it was', () => {
    const out = mergeAttributes({ person: { name: { firstName: 'John' } } }, { person: { name: { firstName: 'John' } } });
    expect(out).toEqual({ person: { name: { firstName: 'John' } } });
  });

  it('replaces arrays instead of merging or concatenating them', () => {
    const base: JsonObject = { tags: ['a', 'b', 'c'], nested: { list: [{ x: 1 }, { x: 2 }] } };
    const out = mergeAttributes(base, { tags: ['z'], nested: { list: [{ y: 3 }] } });
    expect(out).toEqual({ tags: ['z'], nested: { list: [{ y: 3 }] } });
  });

  it('an empty array replaces a non-empty one', () => {
    expect(mergeAttributes({ tags: ['a'] }, { tags: [] })).toEqual({ tags: [] });
  });

  it('scalars replace objects and objects replace scalars', () => {
    expect(mergeAttributes({ a: { b: 1 } }, { a: 'flat' })).toEqual({ a: 'flat' });
    expect(mergeAttributes({ a: 'flat' }, { a: { b: 1 } })).toEqual({ a: { b: 1 } });
    expect(mergeAttributes({ a: [1, 2] }, { a: { b: 1 } })).toEqual({ a: { b: 1 } });
    expect(mergeAttributes({ a: { b: 1 } }, { a: [1] })).toEqual({ a: [1] });
  });

  it('keeps falsy non-null values (0, false, empty string)', () => {
    expect(mergeAttributes({ a: 1, b: true, c: 'x' }, { a: 0, b: false, c: '' })).toEqual({ a: 0, b: false, c: '' });
  });

  it('null removes the attribute', () => {
    const out = mergeAttributes(
      { person: { name: { firstName: 'John', lastName: 'Doe' } } },
      { person: { name: { lastName: null } } },
    );
    expect(out).toEqual({ person: { name: { firstName: 'John' } } });
    expect(Object.keys(out.person as JsonObject)).toEqual(['name']);
    expect('lastName' in ((out.person as JsonObject).name as JsonObject)).toBe(false);
  });

  it('null removes a whole object subtree', () => {
    const out = mergeAttributes(
      { person: { name: { firstName: 'John' }, gender: 'm' }, other: 1 },
      { person: { name: null } },
    );
    expect(out).toEqual({ person: { gender: 'm' }, other: 1 });
  });

  it('null on an absent attribute is a no-op', () => {
    expect(mergeAttributes({ a: 1 }, { b: null, c: { d: null } })).toEqual({ a: 1 });
  });

  it('drops objects that end up empty after a removal, all the way up', () => {
    const out = mergeAttributes(
      { person: { name: { firstName: 'John' } }, keep: 1 },
      { person: { name: { firstName: null } } },
    );
    expect(out).toEqual({ keep: 1 });
    expect('person' in out).toBe(false);
  });

  it('drops only the emptied branch, keeping non-empty parents', () => {
    const out = mergeAttributes(
      { person: { name: { firstName: 'John' }, gender: 'm' } },
      { person: { name: { firstName: null } } },
    );
    expect(out).toEqual({ person: { gender: 'm' } });
  });

  it('does not mutate base or patch', () => {
    const base = deepFreeze<JsonObject>({
      person: { name: { firstName: 'John', lastName: 'Doe' }, tags: ['a'] },
      gone: { x: 1 },
    });
    const patch = deepFreeze<JsonObject>({
      person: { name: { firstName: 'Jane', lastName: null }, tags: ['b'] },
      gone: null,
      fresh: { y: 2 },
    });
    const baseCopy = structuredClone(base);
    const patchCopy = structuredClone(patch);
    const out = mergeAttributes(base, patch);
    expect(base).toEqual(baseCopy);
    expect(patch).toEqual(patchCopy);
    expect(out).toEqual({ person: { name: { firstName: 'Jane' }, tags: ['b'] }, fresh: { y: 2 } });
    expect(out).not.toBe(base);
  });
});

describe('mergeIdentities (SPEC §2 identityMap / removedIdentities)', () => {
  it('adds identities to a new namespace and an existing one', () => {
    const base: IdentityMap = { ecid: [{ id: 'e1' }] };
    const out = mergeIdentities(base, { ecid: [{ id: 'e2' }], email: [{ id: 'm1' }] }, undefined);
    expect(out).toEqual({ ecid: [{ id: 'e1' }, { id: 'e2' }], email: [{ id: 'm1' }] });
  });

  it('is a union by namespace + id: an existing identity is not duplicated', () => {
    const base: IdentityMap = { ecid: [{ id: 'e1' }, { id: 'e2' }] };
    const out = mergeIdentities(base, { ecid: [{ id: 'e2' }, { id: 'e1' }] }, undefined);
    expect(out).toEqual({ ecid: [{ id: 'e1' }, { id: 'e2' }] });
  });

  it('does not duplicate an identity listed twice in the same update', () => {
    const out = mergeIdentities({}, { ecid: [{ id: 'e1' }, { id: 'e1' }] }, undefined);
    expect(out).toEqual({ ecid: [{ id: 'e1' }] });
  });

  it('the same id in two namespaces is two identities', () => {
    const out = mergeIdentities({ ecid: [{ id: 'same' }] }, { crm: [{ id: 'same' }] }, undefined);
    expect(out).toEqual({ ecid: [{ id: 'same' }], crm: [{ id: 'same' }] });
  });

  it('keeps extra fields of identities', () => {
    const out = mergeIdentities(
      { ecid: [{ id: 'e1', primary: true }] },
      { email: [{ id: 'm1', authenticatedState: 'authenticated', primary: false }] },
      undefined,
    );
    expect(out).toEqual({
      ecid: [{ id: 'e1', primary: true }],
      email: [{ id: 'm1', authenticatedState: 'authenticated', primary: false }],
    });
  });

  it('removes identities listed in removedIdentities', () => {
    const base: IdentityMap = { ecid: [{ id: 'e1' }, { id: 'e2' }], email: [{ id: 'm1' }] };
    const out = mergeIdentities(base, undefined, { ecid: ['e1'] });
    expect(out).toEqual({ ecid: [{ id: 'e2' }], email: [{ id: 'm1' }] });
  });

  it('drops a namespace left empty by removals', () => {
    const out = mergeIdentities({ ecid: [{ id: 'e1' }], email: [{ id: 'm1' }] }, undefined, { ecid: ['e1'] });
    expect(out).toEqual({ email: [{ id: 'm1' }] });
    expect('ecid' in out).toBe(false);
  });

  it('removing an unknown identity or namespace is a no-op', () => {
    const base: IdentityMap = { ecid: [{ id: 'e1' }] };
    expect(mergeIdentities(base, undefined, { ecid: ['nope'], crm: ['x'] })).toEqual({ ecid: [{ id: 'e1' }] });
  });

  it('removal only applies within its namespace', () => {
    const out = mergeIdentities({ ecid: [{ id: 'x' }], crm: [{ id: 'x' }] }, undefined, { crm: ['x'] });
    expect(out).toEqual({ ecid: [{ id: 'x' }] });
  });

  it('adds and removes in the same call', () => {
    const out = mergeIdentities({ ecid: [{ id: 'e1' }] }, { ecid: [{ id: 'e2' }] }, { ecid: ['e1'] });
    expect(out).toEqual({ ecid: [{ id: 'e2' }] });
  });

  it('does not mutate its inputs', () => {
    const base = deepFreeze<IdentityMap>({ ecid: [{ id: 'e1', primary: true }] });
    const add = deepFreeze<IdentityMap>({ ecid: [{ id: 'e2' }], email: [{ id: 'm1' }] });
    const removed = deepFreeze({ ecid: ['e1'] });
    const copies = structuredClone({ base, add, removed });
    const out = mergeIdentities(base, add, removed);
    expect({ base, add, removed }).toEqual(copies);
    expect(out).toEqual({ ecid: [{ id: 'e2' }], email: [{ id: 'm1' }] });
  });
});

describe('applyUpdate (SPEC §2)', () => {
  it('first update on a new profile starts from an empty snapshot', () => {
    expect(emptySnapshot('p-9')).toEqual({ profileId: 'p-9', attributes: {}, identityMap: {}, memberships: {} });
    const after = applyUpdate(null, {
      profileId: 'p-9',
      attributes: { person: { name: { firstName: 'John' } }, dropped: null },
      identityMap: { ecid: [{ id: 'e1' }] },
      removedIdentities: { email: ['m1'] },
      segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
    });
    expect(after).toEqual({
      last: expect.any(Object),
      profileId: 'p-9',
      attributes: { person: { name: { firstName: 'John' } } },
      identityMap: { ecid: [{ id: 'e1' }] },
      memberships: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } },
    });
  });

  it('an update with only a profileId creates an empty profile', () => {
    expect(applyUpdate(null, { profileId: 'p-2' })).toEqual({ ...emptySnapshot('p-2'), last: expect.any(Object) });
  });

  it('an update with only a profileId leaves an existing profile unchanged', () => {
    const before = snapshot({
      attributes: { a: 1 },
      identityMap: { ecid: [{ id: 'e1' }] },
      memberships: { 'aud-1': { status: 'existing' } },
    });
    expect(applyUpdate(before, { profileId: 'p-1' })).toEqual({ ...before, last: expect.any(Object) });
  });

  it('merges attributes and identities into the stored snapshot', () => {
    const before = snapshot({
      attributes: { person: { name: { firstName: 'John', lastName: 'Doe' } }, tags: ['a', 'b'] },
      identityMap: { ecid: [{ id: 'e1' }], email: [{ id: 'm1' }] },
    });
    const after = applyUpdate(before, {
      profileId: 'p-1',
      attributes: { person: { name: { lastName: null }, gender: 'f' }, tags: ['c'] },
      identityMap: { ecid: [{ id: 'e1' }, { id: 'e2' }] },
      removedIdentities: { email: ['m1'] },
    });
    expect(after.attributes).toEqual({ person: { name: { firstName: 'John' }, gender: 'f' }, tags: ['c'] });
    expect(after.identityMap).toEqual({ ecid: [{ id: 'e1' }, { id: 'e2' }] });
  });

  it('records memberships as received, replacing the previous record of that audience only', () => {
    const before = snapshot({
      memberships: {
        'aud-1': { status: 'realized', lastQualificationTime: '2026-01-01T00:00:00Z' },
        'aud-2': { status: 'existing', lastQualificationTime: '2026-01-02T00:00:00Z' },
      },
    });
    const after = applyUpdate(before, {
      profileId: 'p-1',
      segmentMembership: {
        ups: {
          'aud-1': { status: 'existing', lastQualificationTime: '2026-02-01T00:00:00Z' },
          'aud-3': { status: 'realized' },
        },
      },
    });
    expect(after.memberships).toEqual({
      'aud-1': { status: 'existing', lastQualificationTime: '2026-02-01T00:00:00Z' },
      'aud-2': { status: 'existing', lastQualificationTime: '2026-01-02T00:00:00Z' },
      'aud-3': { status: 'realized' },
    });
    expect('lastQualificationTime' in after.memberships['aud-3']).toBe(false);
  });

  it('keeps exited memberships as history', () => {
    const before = snapshot({ memberships: { 'aud-1': { status: 'realized', lastQualificationTime: 't1' } } });
    const after = applyUpdate(before, {
      profileId: 'p-1',
      segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: 't2' } } },
    });
    expect(after.memberships).toEqual({ 'aud-1': { status: 'exited', lastQualificationTime: 't2' } });
    const later = applyUpdate(after, { profileId: 'p-1', attributes: { a: 1 } });
    expect(later.memberships).toEqual({ 'aud-1': { status: 'exited', lastQualificationTime: 't2' } });
  });

  it('records an exit for an audience the profile was never in', () => {
    const after = applyUpdate(null, {
      profileId: 'p-1',
      segmentMembership: { ups: { 'aud-1': { status: 'exited' } } },
    });
    expect(after.memberships).toEqual({ 'aud-1': { status: 'exited' } });
  });

  it('does not mutate the snapshot or the update', () => {
    const before = deepFreeze(
      snapshot({
        attributes: { person: { name: { firstName: 'John' } } },
        identityMap: { ecid: [{ id: 'e1' }] },
        memberships: { 'aud-1': { status: 'realized' } },
      }),
    );
    const update = deepFreeze<ProfileUpdate>({
      profileId: 'p-1',
      attributes: { person: { name: { firstName: null, lastName: 'Doe' } } },
      identityMap: { ecid: [{ id: 'e2' }] },
      removedIdentities: { ecid: ['e1'] },
      segmentMembership: { ups: { 'aud-1': { status: 'exited' }, 'aud-2': { status: 'realized' } } },
    });
    const beforeCopy = structuredClone(before);
    const updateCopy = structuredClone(update);
    const after = applyUpdate(before, update);
    expect(before).toEqual(beforeCopy);
    expect(update).toEqual(updateCopy);
    expect(after).toEqual({
      last: expect.any(Object),
      profileId: 'p-1',
      attributes: { person: { name: { lastName: 'Doe' } } },
      identityMap: { ecid: [{ id: 'e2' }] },
      memberships: { 'aud-1': { status: 'exited' }, 'aud-2': { status: 'realized' } },
    });
  });

  it('does not carry unknown fields of a membership record into the snapshot', () => {
    const update = {
      profileId: 'p-1',
      segmentMembership: { ups: { 'aud-1': { status: 'realized', extra: 'x' } } },
    } as unknown as ProfileUpdate;
    expect(applyUpdate(null, update).memberships).toEqual({ 'aud-1': { status: 'realized' } });
  });
});

describe('mergeAttributes with a key named __proto__', () => {
  it('stores it as an ordinary attribute, not as the prototype', () => {
    const patch = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}');
    const out = mergeAttributes({}, patch);
    expect(Object.keys(out)).toEqual(['__proto__', 'a']);
    expect(JSON.parse(JSON.stringify(out))).toEqual(patch);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('applyUpdate keeps what merges to itself', () => {
  it("keeps a new profile's clean patch objects and new identity lists (no copy), and a later merge changes neither", () => {
    const update: ProfileUpdate = {
      profileId: 'p',
      attributes: { person: { name: { firstName: 'J' } }, tags: ['a'] },
      identityMap: { ecid: [{ id: 'e1' }] },
    };
    const first = applyUpdate(null, update);
    expect(first.attributes).toBe(update.attributes);
    expect(first.identityMap.ecid).toBe(update.identityMap!.ecid);
    const second = applyUpdate(first, { profileId: 'p', attributes: { person: { name: { firstName: 'K' } }, extra: { x: 1 } }, identityMap: { ecid: [{ id: 'e2' }] } });
    expect(second.attributes).toEqual({ person: { name: { firstName: 'K' } }, tags: ['a'], extra: { x: 1 } });
    expect(update.attributes).toEqual({ person: { name: { firstName: 'J' } }, tags: ['a'] });
    expect(first.attributes).toBe(update.attributes);
    expect(second.identityMap.ecid.map((i) => i.id)).toEqual(['e1', 'e2']);
    expect(update.identityMap!.ecid).toEqual([{ id: 'e1' }]);
  });

  it('copies (and cleans) a patch holding a removal or an empty object, or an identity list with an id twice', () => {
    const update: ProfileUpdate = { profileId: 'p', attributes: { a: { b: null, c: 1 }, d: { e: {} }, f: { g: 1 } }, identityMap: { ecid: [{ id: 'e1' }, { id: 'e1' }] } };
    const s = applyUpdate(null, update);
    expect(s.attributes).toEqual({ a: { c: 1 }, f: { g: 1 } });
    expect(s.attributes).not.toBe(update.attributes);
    expect(s.attributes.f).toBe((update.attributes as { f: unknown }).f);
    expect(s.identityMap).toEqual({ ecid: [{ id: 'e1' }] });
  });
});
