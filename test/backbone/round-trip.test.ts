/**
 * Round trip on the real backbone: events `publish`ed to JetStream come out at an HTTP
 * receiver with the payloads of SPEC §4, in per-profile order; snapshots land in Redis;
 * failed requests go to the JetStream store (`failed list` / `failed replay`), rejected
 * events to the JetStream rejected store (`rejected list`).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Audience, ProfileUpdate } from '../../src/domain/types.js';
import {
  backboneConfig,
  consumerState,
  exportingWorkload,
  FAST_RETRY,
  oracle,
  publish,
  readMembers,
  readSnapshots,
  rulesOf,
  runCli,
  runOnce,
  startBackbone,
  startRecordingReceiver,
  type Backbone,
  type RecordingReceiver,
  type RunSummaryJson,
} from '../support/backbone.js';

const audiences: Audience[] = [
  { id: 'aud-1', name: 'First name equals John', mergePolicyId: 'mp-1', createdAt: 1648553325000, updatedAt: 1648553330000, origin: 'segmentation' },
  { id: 'aud-2', name: 'Same policy, unmapped', mergePolicyId: 'mp-1', createdAt: 1600000000000, updatedAt: 1600000001000, origin: 'segmentation' },
  { id: 'aud-3', name: 'Other policy', mergePolicyId: 'mp-2', createdAt: 1700000000000, updatedAt: 1700000001000, origin: 'segmentation' },
];
const ATTRS = ['person.name.firstName', 'person.name.lastName', 'person.birthDate', 'personalEmail.address'];

const hand: ProfileUpdate[] = [
  // p-1: enters aud-1 (mapped) and aud-2 (same merge policy, unmapped); unmapped attributes too.
  {
    profileId: 'p-1',
    timestamp: '2026-11-26T10:00:00Z',
    attributes: {
      person: { name: { firstName: 'John', lastName: 'Doe' }, gender: 'male', birthDate: '1990-01-01' },
      personalEmail: { address: 'john.doe@acme.com' },
      loyalty: { points: 5 },
    },
    identityMap: { ecid: [{ id: '1457' }] },
    segmentMembership: {
      ups: {
        'aud-1': { status: 'realized', lastQualificationTime: '2022-01-02T23:37:33Z' },
        'aud-2': { status: 'existing', lastQualificationTime: '2022-01-01T00:00:00Z' },
      },
    },
  },
  { profileId: 'p-1', eventId: 'p1-sibling', attributes: { person: { gender: 'female' } } }, // sibling: nothing
  { profileId: 'p-1', eventId: 'p1-same', attributes: { person: { name: { firstName: 'John' } } } }, // equal value: exports
  { profileId: 'p-1', identityMap: { email_lc_sha256: [{ id: '6553' }] } }, // identity: exports
  { profileId: 'p-1', eventId: 'p1-exit', segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: '2022-01-11T21:24:39Z' } } } },
  { profileId: 'p-1', eventId: 'p1-out', attributes: { person: { name: { firstName: 'Jo' } } } }, // out: nothing
  { profileId: 'p-1', eventId: 'p1-back', segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: '2022-02-01T00:00:00Z' } } } },
  // flow-2 (aud-3 → /flaky, which fails): p-2 and p-3 get 503s, p-4 a 400.
  { profileId: 'p-2', eventId: 'p2', attributes: { person: { name: { firstName: 'Two' } } }, segmentMembership: { ups: { 'aud-3': { status: 'realized' } } } },
  { profileId: 'p-3', eventId: 'p3', segmentMembership: { ups: { 'aud-3': { status: 'realized' } } } },
  { profileId: 'p-4', eventId: 'p4', identityMap: { crm: [{ id: 'p4-permanent' }] }, segmentMembership: { ups: { 'aud-3': { status: 'realized' } } } },
  // Only in an unmapped audience: nothing.
  { profileId: 'p-5', eventId: 'p5', attributes: { person: { name: { firstName: 'Five' } } }, segmentMembership: { ups: { 'aud-2': { status: 'realized' } } } },
];

/** What p-1's first export must be: SPEC §4's example shape, written out by hand. */
const P1_FIRST = {
  person: { birthDate: '1990-01-01', name: { firstName: 'John', lastName: 'Doe' } },
  personalEmail: { address: 'john.doe@acme.com' },
  segmentMembership: {
    ups: {
      'aud-1': {
        status: 'realized',
        lastQualificationTime: '2022-01-02T23:37:33Z',
        createdAt: 1648553325000,
        updatedAt: 1648553330000,
        mappingCreatedAt: 1649856570000,
        mappingUpdatedAt: 1649856570001,
        name: 'First name equals John',
      },
      'aud-2': {
        status: 'existing',
        lastQualificationTime: '2022-01-01T00:00:00Z',
        createdAt: 1600000000000,
        updatedAt: 1600000001000,
        name: 'Same policy, unmapped',
      },
    },
  },
  identityMap: { ecid: [{ id: '1457' }] },
};

describe('round trip: JetStream → worker → HTTP, snapshots in Redis, failed and rejected stores on JetStream', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;
  let cfg: string;
  let config: Record<string, unknown>;
  let summary: RunSummaryJson;
  let publishOut: string;
  let stream: string;
  const { events: bulk } = exportingWorkload({ profiles: 200, perProfile: 10, audience: 'aud-1', prefix: 'bulk', seed: 7, eventIds: false });
  // One file: hand events, two rule-breaking JSON lines, a non-JSON line, the bulk.
  const rejectedLines = ['{"eventId":"no-profile","attributes":{"a":1}}', '{"profileId":"p-x","segmentMembership":{"ups":{"aud-1":{"status":"maybe"}}}}'];
  const lines: string[] = [...hand.map((e) => JSON.stringify(e)), ...rejectedLines, 'this is not json', ...bulk.map((e) => JSON.stringify(e))];
  const NOT_JSON_LINE = hand.length + rejectedLines.length + 1;
  /** Every valid event with its stream sequence (lines in order; the non-JSON one is not published). */
  const seqOf = new Map<ProfileUpdate, number>();
  [...hand, ...bulk].forEach((e, i) => seqOf.set(e, i < hand.length ? i + 1 : i + 1 + rejectedLines.length));
  let expected: ReturnType<typeof oracle>;
  /** While true, /flaky refuses (see `rx.respond`); the replay test turns it off. */
  let flakyDown = true;

  beforeAll(async () => {
    bb = await startBackbone();
    rx = await startRecordingReceiver();
    // /flaky: 503 (retried, then stored) while flakyDown, 400 (permanent) for p-4.
    rx.respond = ({ path, body }) => {
      if (path !== '/flaky' || !flakyDown) return 200;
      return JSON.stringify(body).includes('p4-permanent') ? 400 : 503;
    };
    const dest1 = {
      id: 'dest-1',
      name: 'My analytics endpoint',
      endpoint: `${rx.url}/profiles`,
      headers: 'x-tenant:acme',
      queryParameters: 'source=aep',
      auth: { type: 'bearer', token: 'tok-round-trip-123' },
      includeSegmentNames: true,
      includeSegmentTimestamps: true,
      retry: FAST_RETRY,
    };
    const dest2 = { id: 'dest-2', endpoint: `${rx.url}/flaky`, retry: FAST_RETRY };
    const flow1 = { id: 'flow-1', destination: 'dest-1', audiences: [{ id: 'aud-1', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570001 }], attributes: ATTRS };
    const flow2 = { id: 'flow-2', destination: 'dest-2', audiences: ['aud-3'], attributes: ['person.name.firstName'] };
    config = backboneConfig({ bb, name: 'rt', audiences, destinations: [dest1, dest2], dataflows: [flow1, flow2] });
    cfg = bb.writeFile('rt.json', config);
    stream = (config.source as { stream: string }).stream;
    expected = oracle([...hand, ...bulk], {
      audiences,
      dataflows: [rulesOf(flow1, dest1), rulesOf({ ...flow2, audiences: [{ id: 'aud-3' }] }, dest2)],
    }, (i) => `js:${stream}:${seqOf.get([...hand, ...bulk][i])}`);

    publishOut = (await publish(bb, cfg, 'rt.jsonl', lines)).stdout;
    summary = await runOnce(cfg);
  }, 120_000);

  afterAll(async () => {
    await rx?.close();
    await bb?.stop();
  });

  it('run creates the stream and the durable consumer(s) when they are missing', async () => {
    const fresh = backboneConfig({ bb, name: 'fresh', audiences, destinations: [{ id: 'd', endpoint: `${rx.url}/fresh` }], dataflows: [{ id: 'f', destination: 'd', audiences: ['aud-1'] }] });
    const freshCfg = bb.writeFile('fresh.json', fresh);
    const r = await runCli(['run', '--config', freshCfg, '--once', '--json'], { timeoutMs: 20_000 });
    expect(r.code, `run --once on a missing stream:\n${r.stderr.slice(0, 1_500)}`).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ eventsRead: 0, delivered: 0 });
    const st = await consumerState(bb.nats.url, 'FRESH_UPDATES', 'fresh-worker');
    expect(st).toMatchObject({ pending: 0, ackPending: 0 });
    // The stream now takes what `publish` sends.
    const p = await publish(bb, freshCfg, 'fresh.jsonl', [{ profileId: 'p-f' }]);
    expect(p.stdout).toContain('published 1, duplicates 0, skipped 0');
  }, 30_000);

  it('… also for a single worker without a pool (store.kind: memory)', async () => {
    const fresh = backboneConfig({
      bb,
      name: 'freshmem',
      audiences,
      destinations: [{ id: 'd', endpoint: `${rx.url}/freshmem` }],
      dataflows: [{ id: 'f', destination: 'd', audiences: ['aud-1'] }],
      store: { kind: 'memory' },
    });
    const freshCfg = bb.writeFile('freshmem.json', fresh);
    const r = await runCli(['run', '--config', freshCfg, '--once', '--json'], { timeoutMs: 15_000 });
    expect(r.code, `run --once on a missing stream:\n${r.stderr.slice(0, 1_500)}`).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ eventsRead: 0, delivered: 0 });
    const p = await publish(bb, freshCfg, 'freshmem.jsonl', [{ profileId: 'p-f' }]);
    expect(p.stdout).toContain('published 1, duplicates 0, skipped 0');
  }, 30_000);

  it('publish reports the non-JSON line by number and publishes the rest', () => {
    expect(publishOut).toContain(`published ${(lines.length - 1).toLocaleString('en-US')}, duplicates 0, skipped 1`);
    expect(publishOut).toMatch(new RegExp(`line ${NOT_JSON_LINE}: not valid JSON`));
  });

  it('run --once summary counts every event, export and failure', () => {
    const flow1Count = expected.exports.filter((e) => e.dataflowId === 'flow-1').length;
    expect(summary.eventsRead).toBe(lines.length - 1);
    expect(summary.rejected).toBe(2);
    expect(summary.dataflows['flow-1']).toEqual({ delivered: flow1Count, failed: 0, superseded: 0 });
    expect(summary.dataflows['flow-2']).toEqual({ delivered: 0, failed: 3, superseded: 0 });
    expect(summary.abandoned).toBe(0);
    const got = rx.delivered('/profiles');
    const span = Math.max(1, got[got.length - 1].at - got[0].at);
    console.log(
      `[round-trip] ${flow1Count} exports of ${summary.eventsRead} events: run --once took ${summary.durationMs} ms ` +
        `(${Math.round((flow1Count * 1000) / summary.durationMs)} exports/s, start-up and end detection included); ` +
        `first to last export at the receiver ${span} ms (${Math.round((got.length * 1000) / span)} exports/s)`,
    );
  });

  it("p-1's exports carry SPEC §4 payloads, headers, query and keys, in the order of its updates", () => {
    const p1 = rx.delivered('/profiles').filter((r) => JSON.stringify(r.body).includes('"1457"'));
    expect(p1).toHaveLength(5); // entered, equal-value write, identity added, exited, entered again
    expect(p1[0].body).toEqual(P1_FIRST);
    expect(p1[1].body).toEqual(P1_FIRST);
    expect(p1[2].body).toEqual({ ...P1_FIRST, identityMap: { ecid: [{ id: '1457' }], email_lc_sha256: [{ id: '6553' }] } });
    // Exited in this update: status and time only; the unmapped same-policy audience stays.
    expect(p1[3].body).toEqual({
      ...P1_FIRST,
      segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: '2022-01-11T21:24:39Z' }, 'aud-2': P1_FIRST.segmentMembership.ups['aud-2'] } },
      identityMap: { ecid: [{ id: '1457' }], email_lc_sha256: [{ id: '6553' }] },
    });
    // Back in: the firstName written while out ("Jo") is on the profile and goes out now.
    expect(p1[4].body).toEqual({
      ...P1_FIRST,
      person: { birthDate: '1990-01-01', name: { firstName: 'Jo', lastName: 'Doe' } },
      segmentMembership: {
        ups: {
          'aud-1': { ...P1_FIRST.segmentMembership.ups['aud-1'], status: 'existing', lastQualificationTime: '2022-02-01T00:00:00Z' },
          'aud-2': P1_FIRST.segmentMembership.ups['aud-2'],
        },
      },
      identityMap: { ecid: [{ id: '1457' }], email_lc_sha256: [{ id: '6553' }] },
    });
    for (const r of p1) {
      expect(r.method).toBe('POST');
      expect(r.headers['content-type']).toMatch(/^application\/json/);
      expect(r.headers.authorization).toBe('Bearer tok-round-trip-123');
      expect(r.headers['x-tenant']).toBe('acme');
      expect(r.key).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    }
    expect(new Set(p1.map((r) => r.key)).size).toBe(5);
    expect(p1.map((r) => r.key)).toEqual(expected.exports.filter((e) => e.profileId === 'p-1').map((e) => e.key));
  });

  it('every flow-1 export arrives once, with the expected body and key, in per-profile order', () => {
    const got = rx.delivered('/profiles');
    expect(got.every((r) => r.headers['x-tenant'] === 'acme')).toBe(true);
    const flow1 = expected.exports.filter((e) => e.dataflowId === 'flow-1');
    expect(got).toHaveLength(flow1.length);
    expect(new Set(got.map((r) => r.key)).size).toBe(flow1.length);
    for (const r of got) expect(r.body, `body of ${r.key}`).toEqual(expected.byKey.get(r.key)?.payload);
    // Per profile: arrival order = update order.
    const arrived = new Map<string, string[]>();
    for (const r of got) {
      const pid = expected.byKey.get(r.key)?.profileId ?? '?';
      (arrived.get(pid) ?? arrived.set(pid, []).get(pid)!).push(r.key);
    }
    for (const [pid, keys] of arrived) {
      expect(keys, `order of ${pid}`).toEqual(flow1.filter((e) => e.profileId === pid).map((e) => e.key));
    }
    // No export for profiles that never were in a mapped audience.
    expect(JSON.stringify(got.map((r) => r.body))).not.toContain('Five');
  });

  it('snapshots and audience indexes are in Redis afterwards', async () => {
    const ids = [...expected.snapshots.keys()];
    const snaps = await readSnapshots(bb.redis.url, 'rt:', ids);
    // (Besides its state, a snapshot records its last update, `last`, for `explain`.)
    expect(snaps.get('p-1')).toMatchObject({
      profileId: 'p-1',
      attributes: {
        person: { name: { firstName: 'Jo', lastName: 'Doe' }, gender: 'female', birthDate: '1990-01-01' },
        personalEmail: { address: 'john.doe@acme.com' },
        loyalty: { points: 5 },
      },
      identityMap: { ecid: [{ id: '1457' }], email_lc_sha256: [{ id: '6553' }] },
      memberships: {
        'aud-1': { status: 'existing', lastQualificationTime: '2022-02-01T00:00:00Z' },
        'aud-2': { status: 'existing', lastQualificationTime: '2022-01-01T00:00:00Z' },
      },
    });
    for (const id of ids) expect(snaps.get(id), `snapshot of ${id}`).toEqual(expected.snapshots.get(id));
    const inAud1 = ids.filter((id) => ['realized', 'existing'].includes(expected.snapshots.get(id)?.memberships['aud-1']?.status ?? '')).sort();
    expect(inAud1.length).toBeGreaterThan(100);
    expect(await readMembers(bb.redis.url, 'rt:', 'aud-1')).toEqual(inAud1);
    expect(await readMembers(bb.redis.url, 'rt:', 'aud-3')).toEqual(['p-2', 'p-3', 'p-4']);
  });

  it('rejected list shows the rule-breaking events from the JetStream rejected store', async () => {
    const r = await runCli(['rejected', 'list', '--config', cfg, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const list = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { sourceKey: string; code: string; reason: string; raw: string });
    expect(list).toHaveLength(2);
    const [noProfile, badStatus] = [...list].sort((a, b) => a.sourceKey.localeCompare(b.sourceKey));
    expect(noProfile).toMatchObject({ sourceKey: `js:${stream}:${hand.length + 1}`, code: 'ERR_EVENT_SHAPE' });
    expect(noProfile.reason).toMatch(/profileId/);
    expect(noProfile.raw).toContain('no-profile');
    expect(badStatus).toMatchObject({ sourceKey: `js:${stream}:${hand.length + 2}`, code: 'ERR_EVENT_SHAPE' });
    expect(badStatus.reason).toMatch(/status/);
    const text = await runCli(['rejected', 'list', '--config', cfg]);
    expect(text.stdout).toMatch(/^2 rejected events/);
  });

  it('failed list shows the stored failures (no secret); failed replay delivers them and empties the store', async () => {
    const list = await runCli(['failed', 'list', '--config', cfg, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const records = list.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.map((r) => r.profileId).sort()).toEqual(['p-2', 'p-3', 'p-4']);
    const flow2 = expected.exports.filter((e) => e.dataflowId === 'flow-2');
    for (const rec of records) {
      const exp = flow2.find((e) => e.profileId === rec.profileId)!;
      const permanent = rec.profileId === 'p-4';
      expect(rec).toMatchObject({
        dataflowId: 'flow-2',
        destinationId: 'dest-2',
        idempotencyKey: exp.key,
        attempts: permanent ? 1 : 3,
        lastStatus: permanent ? 400 : 503,
      });
      expect(rec.payload).toEqual(exp.payload);
    }
    expect(list.stdout).not.toContain('tok-round-trip-123');
    const attemptsBefore = rx.requests.filter((r) => r.path === '/flaky').length;
    expect(attemptsBefore).toBe(3 + 3 + 1);

    flakyDown = false;
    const replay = await runCli(['failed', 'replay', '--config', cfg]);
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toMatch(/replayed 3: delivered 3, failed 0/);
    const replayed = rx.delivered('/flaky');
    expect(replayed.map((r) => r.key).sort()).toEqual(flow2.map((e) => e.key).sort());
    for (const r of replayed) expect(r.body).toEqual(expected.byKey.get(r.key)?.payload);

    const after = await runCli(['failed', 'list', '--config', cfg]);
    expect(after.code, after.stderr).toBe(0);
    expect(after.stdout).toMatch(/^0 failed requests/);
  });
});
