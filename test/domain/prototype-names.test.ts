/**
 * Keys of profile data are data (issue 14): identity namespaces, audience ids and attribute
 * names that are also names of `Object.prototype` members are stored, compared and exported
 * like any other key — never a TypeError (which the pipeline would retry for ever), never a
 * prototype lookup, never prototype pollution.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { decideExports, exitedAudiences, enteredAudiences, identityChanged } from '../../src/domain/diff.js';
import { applyUpdate } from '../../src/domain/merge.js';
import { mergeChecked } from '../../src/domain/merge-checked.js';
import { buildPayload, preparePayloadRules } from '../../src/domain/payload.js';
import type { Audience, DataflowRules, ProfileSnapshot, ProfileUpdate } from '../../src/domain/types.js';
import { decodeEvent } from '../../src/domain/validate.js';
import { EventRejectedError } from '../../src/errors.js';

/** Every own property name of Object.prototype (constructor, toString, valueOf, __proto__, …). */
const NAMES = Object.getOwnPropertyNames(Object.prototype);
/** What the spec accepts as a namespace / audience id: every name but `__proto__`. */
const DATA_NAMES = NAMES.filter((n) => n !== '__proto__');
const PROTO_BEFORE = Object.getOwnPropertyNames(Object.prototype).sort();

const decode = (json: string): ProfileUpdate => decodeEvent(json, { maxBytes: 1 << 20 });
/** An update as JSON.parse makes it (own keys, `__proto__` included), without validation. */
const raw = (json: string): ProfileUpdate => JSON.parse(json) as ProfileUpdate;

function flow(audiences: string[], attributes: string[] = []): DataflowRules {
  return {
    id: 'flow-1',
    destinationId: 'dest-1',
    audiences: audiences.map((id) => ({ id, mappingCreatedAt: 1, mappingUpdatedAt: 2 })),
    attributes,
    includeSegmentNames: true,
    includeSegmentTimestamps: true,
  };
}

function audience(id: string): Audience {
  return { id, name: `name of ${id}`, mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'segmentation' };
}

afterEach(() => {
  // Nothing of all this may ever reach Object.prototype.
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(PROTO_BEFORE);
  expect(({} as Record<string, unknown>).id).toBeUndefined();
  expect(({} as Record<string, unknown>).status).toBeUndefined();
  expect(Object.getPrototypeOf({})).toBe(Object.prototype);
});

describe('identity namespaces named after Object.prototype members', () => {
  for (const ns of NAMES) {
    const parse = ns === '__proto__' ? raw : decode;
    it(`identityMap.${ns}: added, unioned, removed and exported as data`, () => {
      const first = applyUpdate(null, parse(`{"profileId":"p","identityMap":{"${ns}":[{"id":"a"}]}}`));
      expect(Object.keys(first.identityMap)).toEqual([ns]);
      expect(Object.getOwnPropertyDescriptor(first.identityMap, ns)?.value).toEqual([{ id: 'a' }]);
      expect(Object.getPrototypeOf(first.identityMap)).toBe(Object.prototype);
      expect(identityChanged(null, first)).toBe(true);

      const again = applyUpdate(first, parse(`{"profileId":"p","identityMap":{"${ns}":[{"id":"a"},{"id":"b"}]}}`));
      expect(Object.getOwnPropertyDescriptor(again.identityMap, ns)?.value).toEqual([{ id: 'a' }, { id: 'b' }]);
      expect(identityChanged(first, again)).toBe(true);

      const removed = applyUpdate(again, parse(`{"profileId":"p","removedIdentities":{"${ns}":["a","b"]}}`));
      expect(Object.keys(removed.identityMap)).toEqual([]);

      // Through a store's JSON round trip, and into the payload.
      const stored = JSON.parse(JSON.stringify(again)) as ProfileSnapshot;
      expect(Object.keys(stored.identityMap)).toEqual([ns]);
      const body = buildPayload({ update: { profileId: 'p' }, before: stored, after: stored }, preparePayloadRules(flow(['aud-1']), [audience('aud-1')]));
      expect(JSON.parse(JSON.stringify(body)).identityMap).toEqual(JSON.parse(`{"${ns}":[{"id":"a"},{"id":"b"}]}`));
    });

    it(`removedIdentities.${ns} on a profile without that namespace changes nothing`, () => {
      const before = applyUpdate(null, decode('{"profileId":"p","identityMap":{"ecid":[{"id":"1"}]}}'));
      const after = applyUpdate(before, parse(`{"profileId":"p","removedIdentities":{"${ns}":["x"]}}`));
      expect(after.identityMap).toEqual({ ecid: [{ id: '1' }] });
      expect(identityChanged(before, after)).toBe(false);
    });
  }

  it('identityMap.__proto__ and removedIdentities.__proto__ are rejected by decode with a reason', () => {
    for (const json of ['{"profileId":"p","identityMap":{"__proto__":[{"id":"a"}]}}', '{"profileId":"p","removedIdentities":{"__proto__":["a"]}}']) {
      const err = (() => {
        try {
          decode(json);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(EventRejectedError);
      expect((err as EventRejectedError).code).toBe('ERR_EVENT_SHAPE');
      expect((err as EventRejectedError).message).toMatch(/__proto__: key not allowed \(__proto__ is no identity namespace or audience id\)$/);
    }
  });

  it('mergeChecked takes every such namespace without a throw (the merge the stores call)', () => {
    let snapshot: ProfileSnapshot | null = null;
    for (const ns of DATA_NAMES) {
      snapshot = mergeChecked(snapshot, decode(`{"profileId":"p","identityMap":{"${ns}":[{"id":"x"}]},"removedIdentities":{"${ns}":["y"]}}`), { maxSnapshotBytes: 1 << 20 }).after;
    }
    expect(Object.keys(snapshot?.identityMap ?? {}).sort()).toEqual([...DATA_NAMES].sort());
  });
});

describe('audience ids named after Object.prototype members', () => {
  for (const id of NAMES) {
    const parse = id === '__proto__' ? raw : decode;
    it(`segmentMembership.ups.${id}: entered, decided, exported, exited as data`, () => {
      const entered = applyUpdate(null, parse(`{"profileId":"p","segmentMembership":{"ups":{"${id}":{"status":"realized","lastQualificationTime":"2026-01-01T00:00:00Z"}}}}`));
      expect(Object.keys(entered.memberships)).toEqual([id]);
      expect(Object.getPrototypeOf(entered.memberships)).toBe(Object.prototype);
      const applied = { update: { profileId: 'p' }, before: null, after: entered };
      expect(enteredAudiences(applied)).toEqual([id]);
      expect(decideExports(applied, [flow([id])])).toEqual([{ dataflowId: 'flow-1', reasons: ['membership'], entered: [id], exited: [] }]);

      const body = JSON.parse(JSON.stringify(buildPayload(applied, preparePayloadRules(flow([id]), [audience(id)])))) as {
        segmentMembership: { ups: Record<string, unknown> };
      };
      expect(Object.keys(body.segmentMembership.ups)).toEqual([id]);
      expect(Object.getOwnPropertyDescriptor(body.segmentMembership.ups, id)?.value).toEqual({
        status: 'realized',
        lastQualificationTime: '2026-01-01T00:00:00Z',
        createdAt: 1,
        updatedAt: 2,
        mappingCreatedAt: 1,
        mappingUpdatedAt: 2,
        name: `name of ${id}`,
      });

      const exited = applyUpdate(entered, parse(`{"profileId":"p","segmentMembership":{"ups":{"${id}":{"status":"exited"}}}}`));
      const exit = { update: { profileId: 'p' }, before: entered, after: exited };
      expect(exitedAudiences(exit)).toEqual([id]);
      expect(decideExports(exit, [flow([id])])).toEqual([{ dataflowId: 'flow-1', reasons: ['membership'], entered: [], exited: [id] }]);
    });

    it(`a profile with no record of audience ${id} is not in it`, () => {
      const before = applyUpdate(null, decode('{"profileId":"p","segmentMembership":{"ups":{"aud-1":{"status":"realized"}}}}'));
      const after = applyUpdate(before, decode('{"profileId":"p","attributes":{"x":1}}'));
      // Mapped to the audience named like a prototype member only: no membership, no export.
      expect(decideExports({ update: { profileId: 'p', attributes: { x: 1 } }, before, after }, [flow([id], ['x'])])).toEqual([]);
      const body = buildPayload({ update: { profileId: 'p' }, before, after }, preparePayloadRules(flow([id]), [audience(id), audience('aud-1')]));
      expect(Object.hasOwn((body.segmentMembership as { ups: object }).ups, id)).toBe(false);
    });
  }
});

describe('attributes named after Object.prototype members', () => {
  for (const name of NAMES) {
    it(`attributes ${name} and x.${name}: merged, removed and exported as data`, () => {
      const s1 = applyUpdate(null, decode(`{"profileId":"p","attributes":{"${name}":{"v":1},"x":{"${name}":"y"}}}`));
      expect(Object.keys(s1.attributes)).toEqual([name, 'x']);
      const s2 = applyUpdate(s1, decode(`{"profileId":"p","attributes":{"${name}":{"w":2}}}`));
      expect(Object.getOwnPropertyDescriptor(s2.attributes, name)?.value).toEqual({ v: 1, w: 2 });

      const rules = preparePayloadRules(flow(['aud-1'], [name, `x.${name}`, `${name}.v`]), [audience('aud-1')]);
      const body = JSON.parse(JSON.stringify(buildPayload({ update: { profileId: 'p' }, before: s1, after: s2 }, rules))) as Record<string, unknown>;
      expect(Object.getOwnPropertyDescriptor(body, name)?.value).toEqual({ v: 1, w: 2 });
      expect(Object.getOwnPropertyDescriptor(body.x, name)?.value).toBe('y');

      const s3 = applyUpdate(s2, decode(`{"profileId":"p","attributes":{"${name}":null,"x":{"${name}":null}}}`));
      expect(s3.attributes).toEqual({});
    });

    it(`a mapped path ${name} the profile does not have is left out of the payload`, () => {
      const s = applyUpdate(null, decode('{"profileId":"p","attributes":{"a":{"b":1}}}'));
      const rules = preparePayloadRules(flow(['aud-1'], [name, `a.${name}`, `${name}.name`, 'a.b']), [audience('aud-1')]);
      const body = buildPayload({ update: { profileId: 'p' }, before: null, after: s }, rules);
      expect(Object.hasOwn(body, name)).toBe(false);
      expect(Object.keys(body.a as object)).toEqual(['b']);
      expect(Object.getPrototypeOf(body)).toBe(Object.prototype);
    });
  }
});
