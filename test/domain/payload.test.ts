import { describe, expect, it } from 'vitest';
import { applyUpdate } from '../../src/domain/merge.js';
import { buildPayload, preparePayloadRules } from '../../src/domain/payload.js';
import type {
  AppliedUpdate,
  Audience,
  DataflowRules,
  JsonObject,
  ProfileSnapshot,
  ProfileUpdate,
} from '../../src/domain/types.js';

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function audience(id: string, mergePolicyId: string, extra: Partial<Audience> = {}): Audience {
  return {
    id,
    name: `Audience ${id}`,
    mergePolicyId,
    createdAt: 1_600_000_000_000 + Number(id.replace(/\D/g, '') || 0),
    updatedAt: 1_700_000_000_000 + Number(id.replace(/\D/g, '') || 0),
    origin: 'segmentation',
    ...extra,
  };
}

type FlowInput = Partial<Omit<DataflowRules, 'audiences'>> & { audiences: string[] };

function flow(partial: FlowInput): DataflowRules {
  const { audiences, ...rest } = partial;
  return {
    id: 'flow-1',
    destinationId: 'dest-1',
    attributes: [],
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
    ...rest,
    audiences: audiences.map((id) => ({ id, mappingCreatedAt: 1_800_000_000_001, mappingUpdatedAt: 1_800_000_000_002 })),
  };
}

function snap(partial: Partial<ProfileSnapshot> = {}): ProfileSnapshot {
  return { profileId: 'p-1', attributes: {}, identityMap: {}, memberships: {}, ...partial };
}

function apply(before: ProfileSnapshot | null, update: Omit<ProfileUpdate, 'profileId'>): AppliedUpdate {
  const u: ProfileUpdate = { profileId: 'p-1', ...update };
  return { update: u, before, after: applyUpdate(before, u) };
}

const catalog: Audience[] = [
  audience('aud-1', 'mp-1'),
  audience('aud-2', 'mp-1'),
  audience('aud-3', 'mp-1'),
  audience('aud-7', 'mp-2'),
  audience('aud-8', 'mp-2'),
];

const richProfile = snap({
  attributes: {
    person: { name: { firstName: 'John', lastName: 'Doe' }, birthDate: '1990-01-01', gender: 'm' },
    personalEmail: { address: 'john.doe@acme.com', type: 'home' },
    loyalty: { tier: 'gold', points: 12 },
    tags: ['a', 'b'],
  },
  identityMap: { ecid: [{ id: 'e1' }, { id: 'e2', primary: true }], email_lc_sha256: [{ id: 'h1' }] },
  memberships: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-01-01T00:00:00Z' } },
});

function ups(body: JsonObject): JsonObject {
  return (body.segmentMembership as JsonObject).ups as JsonObject;
}

describe('buildPayload — attributes (SPEC §4)', () => {
  const bodyFor = (attributes: string[], update: Omit<ProfileUpdate, 'profileId'> = {}, before = richProfile) =>
    buildPayload(apply(before, update), preparePayloadRules(flow({ audiences: ['aud-1'], attributes }), catalog));

  it('contains only the mapped attributes, and nothing unmapped', () => {
    const body = bodyFor(['person.name.firstName', 'personalEmail.address']);
    expect(body.person).toEqual({ name: { firstName: 'John' } });
    expect(body.personalEmail).toEqual({ address: 'john.doe@acme.com' });
    expect(Object.keys(body).sort()).toEqual(['identityMap', 'person', 'personalEmail', 'segmentMembership']);
  });

  it('contains all mapped attributes, whichever one changed', () => {
    const body = bodyFor(['person.name.firstName', 'person.birthDate', 'loyalty.tier'], {
      attributes: { loyalty: { tier: 'platinum' } },
    });
    expect(body.person).toEqual({ name: { firstName: 'John' }, birthDate: '1990-01-01' });
    expect(body.loyalty).toEqual({ tier: 'platinum' });
    expect(body.personalEmail).toBeUndefined();
  });

  it('carries the merged (after) values', () => {
    const body = bodyFor(['person.name.firstName', 'person.name.lastName'], {
      attributes: { person: { name: { firstName: 'Jim' } } },
    });
    expect(body.person).toEqual({ name: { firstName: 'Jim', lastName: 'Doe' } });
  });

  it('leaves out mapped attributes that do not exist, without empty parents', () => {
    const body = bodyFor(['person.name.middleName', 'work.address.city', 'person.birthDate']);
    expect(body.person).toEqual({ birthDate: '1990-01-01' });
    expect('work' in body).toBe(false);
  });

  it('leaves out a mapped attribute removed by this update', () => {
    const body = bodyFor(['person.name.firstName', 'person.birthDate'], {
      attributes: { person: { name: { firstName: null } } },
    });
    expect(body.person).toEqual({ birthDate: '1990-01-01' });
  });

  it('a mapped path under a scalar does not exist', () => {
    const before = snap({ ...richProfile, attributes: { person: 'flat' } });
    const body = bodyFor(['person.name'], {}, before);
    expect('person' in body).toBe(false);
  });

  it('an object-mapped path copies the whole subtree', () => {
    const body = bodyFor(['person.name', 'personalEmail']);
    expect(body.person).toEqual({ name: { firstName: 'John', lastName: 'Doe' } });
    expect(body.personalEmail).toEqual({ address: 'john.doe@acme.com', type: 'home' });
  });

  it('copies arrays and falsy values as they are', () => {
    const before = snap({ ...richProfile, attributes: { tags: ['x'], flags: { on: false, n: 0, s: '' } } });
    const body = bodyFor(['tags', 'flags.on', 'flags.n', 'flags.s'], {}, before);
    expect(body.tags).toEqual(['x']);
    expect(body.flags).toEqual({ on: false, n: 0, s: '' });
  });

  it('overlapping mapped paths give the subtree once, in either order', () => {
    const want = { name: { firstName: 'John', lastName: 'Doe' } };
    expect(bodyFor(['person.name', 'person.name.firstName']).person).toEqual(want);
    expect(bodyFor(['person.name.firstName', 'person.name']).person).toEqual(want);
  });

  it('does not mutate the applied update or its snapshots', () => {
    const applied = deepFreeze(apply(richProfile, { attributes: { loyalty: { tier: 'x' } } }));
    const copy = structuredClone(applied);
    for (const attributes of [
      ['person', 'person.name.firstName'],
      ['person.name.firstName', 'person'],
      ['person.name', 'person.name.firstName', 'loyalty'],
    ]) {
      buildPayload(applied, preparePayloadRules(flow({ audiences: ['aud-1'], attributes }), catalog));
    }
    expect(applied).toEqual(copy);
  });
});

describe('buildPayload — identityMap (SPEC §4)', () => {
  it('carries every identity of the profile, with extra fields', () => {
    const body = buildPayload(
      apply(richProfile, { identityMap: { crm: [{ id: 'c1' }] }, removedIdentities: { ecid: ['e1'] } }),
      preparePayloadRules(flow({ audiences: ['aud-1'] }), catalog),
    );
    expect(body.identityMap).toEqual({ ecid: [{ id: 'e2', primary: true }], email_lc_sha256: [{ id: 'h1' }], crm: [{ id: 'c1' }] });
  });

  it('is present (empty) when the profile has no identities', () => {
    const body = buildPayload(
      apply(null, { segmentMembership: { ups: { 'aud-1': { status: 'realized' } } } }),
      preparePayloadRules(flow({ audiences: ['aud-1'] }), catalog),
    );
    expect(body.identityMap).toEqual({});
  });
});

describe('buildPayload — segmentMembership (SPEC §4)', () => {
  const rules = (f: FlowInput, cat: Audience[] = catalog) =>
    preparePayloadRules(flow(f), cat);

  it('lists every audience the profile is in (realized or existing) within the mapped merge policies', () => {
    const before = snap({
      memberships: {
        'aud-1': { status: 'existing', lastQualificationTime: 't1' },
        'aud-3': { status: 'realized', lastQualificationTime: 't3' },
      },
    });
    const body = buildPayload(
      apply(before, { segmentMembership: { ups: { 'aud-2': { status: 'realized', lastQualificationTime: 't2' } } } }),
      rules({ audiences: ['aud-2'] }),
    );
    expect(ups(body)).toEqual({
      'aud-1': { status: 'existing', lastQualificationTime: 't1' },
      'aud-2': { status: 'realized', lastQualificationTime: 't2' },
      'aud-3': { status: 'realized', lastQualificationTime: 't3' },
    });
  });

  it('includes audiences exited in this very update, mapped or not', () => {
    const before = snap({
      memberships: { 'aud-1': { status: 'realized', lastQualificationTime: 't1' }, 'aud-3': { status: 'realized' } },
    });
    const body = buildPayload(
      apply(before, {
        segmentMembership: {
          ups: { 'aud-1': { status: 'exited', lastQualificationTime: 't9' }, 'aud-3': { status: 'exited', lastQualificationTime: 't8' } },
        },
      }),
      rules({ audiences: ['aud-1', 'aud-2'] }),
    );
    expect(ups(body)).toEqual({
      'aud-1': { status: 'exited', lastQualificationTime: 't9' },
      'aud-3': { status: 'exited', lastQualificationTime: 't8' },
    });
  });

  it('leaves out audiences exited in an earlier update', () => {
    const before = snap({
      memberships: { 'aud-1': { status: 'exited', lastQualificationTime: 't0' }, 'aud-3': { status: 'exited' } },
    });
    const body = buildPayload(
      apply(before, { segmentMembership: { ups: { 'aud-2': { status: 'realized', lastQualificationTime: 't2' } } } }),
      rules({ audiences: ['aud-1', 'aud-2'] }),
    );
    expect(ups(body)).toEqual({ 'aud-2': { status: 'realized', lastQualificationTime: 't2' } });
  });

  it('an earlier exit stays out even when the update repeats the exited record', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'exited' }, 'aud-2': { status: 'realized' } } });
    const body = buildPayload(
      apply(before, { segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: 't5' } } } }),
      rules({ audiences: ['aud-2'] }),
    );
    expect(ups(body)).toEqual({ 'aud-2': { status: 'realized' } });
  });

  it('never lists audiences of another merge policy, in or exited', () => {
    const before = snap({ memberships: { 'aud-7': { status: 'realized' }, 'aud-1': { status: 'realized' } } });
    const body = buildPayload(
      apply(before, {
        segmentMembership: { ups: { 'aud-7': { status: 'exited' }, 'aud-8': { status: 'realized' } } },
      }),
      rules({ audiences: ['aud-1'] }),
    );
    expect(ups(body)).toEqual({ 'aud-1': { status: 'realized' } });
  });

  it('lists the merge policies of every mapped audience', () => {
    const before = snap({
      memberships: { 'aud-2': { status: 'realized' }, 'aud-8': { status: 'existing' } },
    });
    const body = buildPayload(apply(before, {}), rules({ audiences: ['aud-1', 'aud-7'] }));
    expect(ups(body)).toEqual({ 'aud-2': { status: 'realized' }, 'aud-8': { status: 'existing' } });
  });

  it('never lists audiences missing from the catalog', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'realized' }, 'ghost': { status: 'realized' } } });
    const body = buildPayload(
      apply(before, { segmentMembership: { ups: { 'ghost-2': { status: 'realized' } } } }),
      rules({ audiences: ['aud-1'] }),
    );
    expect(ups(body)).toEqual({ 'aud-1': { status: 'realized' } });
  });

  it('a mapped audience missing from the catalog has no merge policy: nothing is visible through it', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'realized' }, 'ghost': { status: 'realized' } } });
    const body = buildPayload(apply(before, {}), rules({ audiences: ['ghost'] }));
    expect(ups(body)).toEqual({});
  });

  it('carries status and lastQualificationTime as received, and no lastQualificationTime when none was received', () => {
    const body = buildPayload(
      apply(null, {
        segmentMembership: {
          ups: { 'aud-1': { status: 'existing', lastQualificationTime: '2026-11-26T10:00:00.123+02:00' }, 'aud-2': { status: 'realized' } },
        },
      }),
      rules({ audiences: ['aud-1'] }),
    );
    expect(ups(body)).toEqual({
      'aud-1': { status: 'existing', lastQualificationTime: '2026-11-26T10:00:00.123+02:00' },
      'aud-2': { status: 'realized' },
    });
    expect('lastQualificationTime' in (ups(body)['aud-2'] as JsonObject)).toBe(false);
  });

  it('includeSegmentNames adds the audience name to every listed (in) audience', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'realized' }, 'aud-3': { status: 'existing' } } });
    const body = buildPayload(apply(before, {}), rules({ audiences: ['aud-1'], includeSegmentNames: true }));
    expect(ups(body)).toEqual({
      'aud-1': { status: 'realized', name: 'Audience aud-1' },
      'aud-3': { status: 'existing', name: 'Audience aud-3' },
    });
  });

  it('includeSegmentTimestamps adds createdAt/updatedAt to every listed (in) audience, mapping timestamps only to mapped ones', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'realized' }, 'aud-3': { status: 'existing' } } });
    const body = buildPayload(apply(before, {}), rules({ audiences: ['aud-1'], includeSegmentTimestamps: true }));
    expect(ups(body)).toEqual({
      'aud-1': {
        status: 'realized',
        createdAt: 1_600_000_000_001,
        updatedAt: 1_700_000_000_001,
        mappingCreatedAt: 1_800_000_000_001,
        mappingUpdatedAt: 1_800_000_000_002,
      },
      'aud-3': { status: 'existing', createdAt: 1_600_000_000_003, updatedAt: 1_700_000_000_003 },
    });
  });

  it('without the options, records carry no name and no timestamps', () => {
    const before = snap({ memberships: { 'aud-1': { status: 'realized', lastQualificationTime: 't' } } });
    const body = buildPayload(apply(before, {}), rules({ audiences: ['aud-1'] }));
    expect(ups(body)).toEqual({ 'aud-1': { status: 'realized', lastQualificationTime: 't' } });
  });

  it('qualifying for one audience while already in two others of the same merge policy lists all three', () => {
    const before = snap({
      attributes: { person: { name: { firstName: 'John' } } },
      identityMap: { ecid: [{ id: 'e1' }] },
      memberships: {
        'aud-1': { status: 'existing', lastQualificationTime: '2026-01-01T00:00:00Z' },
        'aud-3': { status: 'realized', lastQualificationTime: '2026-01-03T00:00:00Z' },
        'aud-7': { status: 'realized', lastQualificationTime: '2026-01-07T00:00:00Z' },
      },
    });
    const body = buildPayload(
      apply(before, { segmentMembership: { ups: { 'aud-2': { status: 'realized', lastQualificationTime: '2026-01-02T00:00:00Z' } } } }),
      rules({ audiences: ['aud-2'], attributes: ['person.name.firstName'], includeSegmentNames: true, includeSegmentTimestamps: true }),
    );
    expect(body).toEqual({
      person: { name: { firstName: 'John' } },
      identityMap: { ecid: [{ id: 'e1' }] },
      segmentMembership: {
        ups: {
          'aud-1': {
            status: 'existing',
            lastQualificationTime: '2026-01-01T00:00:00Z',
            name: 'Audience aud-1',
            createdAt: 1_600_000_000_001,
            updatedAt: 1_700_000_000_001,
          },
          'aud-2': {
            status: 'realized',
            lastQualificationTime: '2026-01-02T00:00:00Z',
            name: 'Audience aud-2',
            createdAt: 1_600_000_000_002,
            updatedAt: 1_700_000_000_002,
            mappingCreatedAt: 1_800_000_000_001,
            mappingUpdatedAt: 1_800_000_000_002,
          },
          'aud-3': {
            status: 'realized',
            lastQualificationTime: '2026-01-03T00:00:00Z',
            name: 'Audience aud-3',
            createdAt: 1_600_000_000_003,
            updatedAt: 1_700_000_000_003,
          },
        },
      },
    });
  });
});

describe('buildPayload — the SPEC §4 example', () => {
  // A profile in aud-1 (mapped to nothing here, same merge policy as aud-2) qualifies for aud-2
  // (mapped) and exits aud-1 in the same update. Names and timestamps are on.
  const exampleCatalog: Audience[] = [
    { id: 'aud-1', name: 'Lapsed buyers', mergePolicyId: 'mp-default', createdAt: 1640000000000, updatedAt: 1640000005000, origin: 'segmentation' },
    { id: 'aud-2', name: 'First name equals John', mergePolicyId: 'mp-default', createdAt: 1648553325000, updatedAt: 1648553330000, origin: 'segmentation' },
    { id: 'aud-9', name: 'Other policy', mergePolicyId: 'mp-other', createdAt: 1, updatedAt: 2, origin: 'upload' },
  ];
  const exampleFlow = (includeSegmentNames: boolean, includeSegmentTimestamps: boolean): DataflowRules => ({
    id: 'flow-1',
    destinationId: 'dest-1',
    audiences: [{ id: 'aud-2', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570000 }],
    attributes: ['person.birthDate', 'person.name', 'personalEmail.address'],
    includeSegmentNames,
    includeSegmentTimestamps,
  });
  const before = snap({
    attributes: {
      person: { birthDate: '1990-01-01', name: { firstName: 'John', lastName: 'Doe' }, gender: 'male' },
      personalEmail: { address: 'john.doe@acme.com', primary: true },
      loyalty: { tier: 'gold' },
    },
    identityMap: { ecid: [{ id: '1457...' }] },
    memberships: {
      'aud-1': { status: 'realized', lastQualificationTime: '2021-12-01T00:00:00Z' },
      'aud-9': { status: 'realized', lastQualificationTime: '2021-12-02T00:00:00Z' },
    },
  });
  const update: Omit<ProfileUpdate, 'profileId'> = {
    identityMap: { ecid: [{ id: '6647...' }] },
    segmentMembership: {
      ups: {
        'aud-1': { status: 'exited', lastQualificationTime: '2022-01-11T21:24:39Z' },
        'aud-2': { status: 'realized', lastQualificationTime: '2022-01-02T23:37:33Z' },
      },
    },
  };
  const attributes = {
    person: { birthDate: '1990-01-01', name: { firstName: 'John', lastName: 'Doe' } },
    personalEmail: { address: 'john.doe@acme.com' },
  };
  const identityMap = { ecid: [{ id: '1457...' }, { id: '6647...' }] };
  const aud1 = { lastQualificationTime: '2022-01-11T21:24:39Z', status: 'exited' };

  it('reproduces the §4 body exactly (names and timestamps on)', () => {
    const body = buildPayload(apply(before, update), preparePayloadRules(exampleFlow(true, true), exampleCatalog));
    // The body of SPEC §4, verbatim.
    expect(body).toStrictEqual({
      person: { birthDate: '1990-01-01', name: { firstName: 'John', lastName: 'Doe' } },
      personalEmail: { address: 'john.doe@acme.com' },
      segmentMembership: {
        ups: {
          'aud-1': { lastQualificationTime: '2022-01-11T21:24:39Z', status: 'exited' },
          'aud-2': {
            lastQualificationTime: '2022-01-02T23:37:33Z',
            status: 'realized',
            createdAt: 1648553325000,
            updatedAt: 1648553330000,
            mappingCreatedAt: 1649856570000,
            mappingUpdatedAt: 1649856570000,
            name: 'First name equals John',
          },
        },
      },
      identityMap: { ecid: [{ id: '1457...' }, { id: '6647...' }] },
    });
  });

  it('names off: the same body without name', () => {
    const body = buildPayload(apply(before, update), preparePayloadRules(exampleFlow(false, true), exampleCatalog));
    expect(body).toStrictEqual({
      ...attributes,
      segmentMembership: {
        ups: {
          'aud-1': aud1,
          'aud-2': {
            lastQualificationTime: '2022-01-02T23:37:33Z',
            status: 'realized',
            createdAt: 1648553325000,
            updatedAt: 1648553330000,
            mappingCreatedAt: 1649856570000,
            mappingUpdatedAt: 1649856570000,
          },
        },
      },
      identityMap,
    });
  });

  it('timestamps off: the same body without createdAt/updatedAt/mapping timestamps', () => {
    const body = buildPayload(apply(before, update), preparePayloadRules(exampleFlow(true, false), exampleCatalog));
    expect(body).toStrictEqual({
      ...attributes,
      segmentMembership: {
        ups: {
          'aud-1': aud1,
          'aud-2': { lastQualificationTime: '2022-01-02T23:37:33Z', status: 'realized', name: 'First name equals John' },
        },
      },
      identityMap,
    });
  });

  it('names and timestamps off: status and lastQualificationTime only', () => {
    const body = buildPayload(apply(before, update), preparePayloadRules(exampleFlow(false, false), exampleCatalog));
    expect(body).toStrictEqual({
      ...attributes,
      segmentMembership: {
        ups: { 'aud-1': aud1, 'aud-2': { lastQualificationTime: '2022-01-02T23:37:33Z', status: 'realized' } },
      },
      identityMap,
    });
  });
});
