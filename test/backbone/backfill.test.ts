/**
 * Backfill on the real backbone (SPEC §8): `run --once` with audience A mapped, over profiles
 * in A and in B; then the config maps B too and `run --once` again: exactly B's members are
 * exported to the dataflow, once each, under its rate limit; a third run exports nothing.
 * Profiles entering B while its backfill runs are exported once, by their own update.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotencyKey } from '../../src/domain/keys.js';
import { buildPayload, preparePayloadRules } from '../../src/domain/payload.js';
import type { Audience, ProfileUpdate } from '../../src/domain/types.js';
import {
  backboneConfig,
  FAST_RETRY,
  oracle,
  publish,
  readMembers,
  rulesOf,
  runOnce,
  spawnCli,
  startBackbone,
  startRecordingReceiver,
  type Backbone,
  type RecordingReceiver,
  type RunSummaryJson,
} from '../support/backbone.js';

const audiences: Audience[] = [
  { id: 'aud-a', name: 'Audience A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'segmentation' },
  { id: 'aud-b', name: 'Audience B', mergePolicyId: 'mp-1', createdAt: 3, updatedAt: 4, origin: 'segmentation' },
];
const t = '2026-01-01T00:00:00Z';
const enter = (...ids: string[]) => ({ ups: Object.fromEntries(ids.map((id) => [id, { status: 'realized' as const, lastQualificationTime: t }])) });

const base: ProfileUpdate[] = [
  ...Array.from({ length: 10 }, (_, i): ProfileUpdate => ({ profileId: `a-${i}`, attributes: { person: { name: { firstName: `A${i}` } } }, segmentMembership: enter('aud-a') })),
  ...Array.from({ length: 8 }, (_, i): ProfileUpdate => ({ profileId: `b-${i}`, attributes: { person: { name: { firstName: `B${i}` } } }, identityMap: { crm: [{ id: `crm-b-${i}` }] }, segmentMembership: enter('aud-b') })),
  ...Array.from({ length: 4 }, (_, i): ProfileUpdate => ({ profileId: `ab-${i}`, identityMap: { crm: [{ id: `crm-ab-${i}` }] }, segmentMembership: enter('aud-a', 'aud-b') })),
  // In B first, in A later.
  ...Array.from({ length: 3 }, (_, i): ProfileUpdate => ({ profileId: `ba-${i}`, identityMap: { crm: [{ id: `crm-ba-${i}` }] }, segmentMembership: enter('aud-b') })),
  ...Array.from({ length: 3 }, (_, i): ProfileUpdate => ({ profileId: `ba-${i}`, attributes: { person: { name: { firstName: `BA${i}` } } }, segmentMembership: enter('aud-a') })),
  // In B, then out again: not a member when B gets mapped.
  { profileId: 'bx-0', segmentMembership: enter('aud-b') },
  { profileId: 'bx-0', segmentMembership: { ups: { 'aud-b': { status: 'exited', lastQualificationTime: t } } } },
  // In no audience.
  { profileId: 'n-0', attributes: { person: { name: { firstName: 'N' } } } },
];
const events: ProfileUpdate[] = base.map((e, i) => ({ ...e, eventId: `bf-${i}` }));
const B_MEMBERS = [...Array.from({ length: 8 }, (_, i) => `b-${i}`), ...Array.from({ length: 4 }, (_, i) => `ab-${i}`), ...Array.from({ length: 3 }, (_, i) => `ba-${i}`)].sort();
const RATE = 10;

describe('backfill when an audience becomes mapped', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;
  let cfg: string;
  let config: Record<string, unknown>;
  const dest = { id: 'dest-1', endpoint: '', retry: FAST_RETRY, includeSegmentNames: true, includeSegmentTimestamps: true };
  const flowA = { id: 'flow-1', destination: 'dest-1', audiences: [{ id: 'aud-a', mappingCreatedAt: 100, mappingUpdatedAt: 101 }], attributes: ['person.name.firstName'], rateLimit: RATE };
  const flowAB = { ...flowA, audiences: [...flowA.audiences, { id: 'aud-b', mappingCreatedAt: 200, mappingUpdatedAt: 201 }] };
  const runs: Array<{ summary: RunSummaryJson; from: number; to: number }> = [];

  async function run(): Promise<{ summary: RunSummaryJson; from: number; to: number }> {
    const from = rx.requests.length;
    const summary = await runOnce(cfg);
    const r = { summary, from, to: rx.requests.length };
    runs.push(r);
    return r;
  }

  beforeAll(async () => {
    bb = await startBackbone();
    rx = await startRecordingReceiver();
    dest.endpoint = `${rx.url}/bf`;
    config = backboneConfig({ bb, name: 'bf', audiences, destinations: [dest], dataflows: [flowA] });
    cfg = bb.writeFile('bf.json', config);
    await publish(bb, cfg, 'bf.jsonl', events);
  });

  afterAll(async () => {
    await rx?.close();
    await bb?.stop();
  });

  it('run 1, A mapped: the live exports of A, each once', async () => {
    const { summary, from, to } = await run();
    const expected = oracle(events, { audiences, dataflows: [rulesOf(flowA, dest)] });
    const got = rx.requests.slice(from, to);
    expect(summary).toMatchObject({ eventsRead: events.length, rejected: 0, failed: 0 });
    expect(got.map((r) => r.key).sort(), 'run 1 exports: the entries into A, nothing else (no backfill of A on top)').toEqual(expected.exports.map((e) => e.key).sort());
    for (const r of got) expect(r.body).toEqual(expected.byKey.get(r.key)?.payload);
    expect(await readMembers(bb.redis.url, 'bf:', 'aud-b')).toEqual(B_MEMBERS);
  });

  it('run 2, B mapped too: exactly B’s members are exported, once each, with their current state, under the rate limit', async () => {
    expect(runs).toHaveLength(1);
    bb.writeFile('bf.json', { ...config, dataflows: [flowAB] });
    const { summary, from, to } = await run();
    const got = rx.requests.slice(from, to);
    expect(got.every((r) => r.status === 200)).toBe(true);
    const profiles = got.map((r) => (r.body as { person?: unknown; identityMap: object; segmentMembership: { ups: object } }));
    expect(summary).toMatchObject({ eventsRead: 0, delivered: B_MEMBERS.length, failed: 0, backfilled: B_MEMBERS.length });

    // Which profile each export is, from the oracle's final snapshots: every body is the
    // payload of one B member's current snapshot for the dataflow with A and B mapped.
    const snapshots = oracle(events, { audiences, dataflows: [] }).snapshots;
    const rules = preparePayloadRules(rulesOf(flowAB, dest), audiences);
    const expectedBodies = new Map(
      B_MEMBERS.map((id) => {
        const snap = snapshots.get(id)!;
        return [id, JSON.parse(JSON.stringify(buildPayload({ update: { profileId: id }, before: snap, after: snap }, rules, []))) as unknown];
      }),
    );
    const matched = got.map((r) => [...expectedBodies].find(([, body]) => JSON.stringify(body) === JSON.stringify(r.body))?.[0] ?? `unmatched ${r.raw}`);
    expect(matched.sort(), 'one export per member of B').toEqual(B_MEMBERS);
    expect(new Set(got.map((r) => r.key)).size).toBe(B_MEMBERS.length);
    expect(profiles.every((p) => 'aud-b' in p.segmentMembership.ups)).toBe(true);
    // 15 exports at 10/s (burst a few %) take well over a second.
    const span = got[got.length - 1].at - got[0].at;
    expect(span, `first to last backfill export: ${span} ms at rateLimit ${RATE}/s`).toBeGreaterThanOrEqual(1_000);
  });

  it('run 3, same config: nothing is exported again', async () => {
    expect(runs).toHaveLength(2);
    const { summary, from, to } = await run();
    expect(summary).toMatchObject({ eventsRead: 0, delivered: 0, failed: 0, backfilled: 0 });
    expect(rx.requests.slice(from, to)).toEqual([]);
  });

  it('a backfill cut short by SIGKILL resumes: every member is exported; once finished it never repeats', async () => {
    // 1,200 members of B on a stream of their own; B gets mapped at 400/s, the worker is
    // killed after 650 exports (past the first checkpointed page of 500) and started again.
    const members = Array.from({ length: 1_200 }, (_, i) => `m-${String(i).padStart(4, '0')}`);
    const destK = { ...dest, endpoint: `${rx.url}/bfk` };
    const flowK = { ...flowA, rateLimit: 400 };
    const cfgK = bb.writeFile('bfk.json', backboneConfig({ bb, name: 'bfk', audiences, destinations: [destK], dataflows: [flowK] }));
    await publish(bb, cfgK, 'bfk.jsonl', members.map((id) => ({ profileId: id, eventId: id, identityMap: { crm: [{ id }] }, segmentMembership: enter('aud-b') })));
    expect(await runOnce(cfgK)).toMatchObject({ eventsRead: members.length, delivered: 0 });

    const mapped = { ...flowK, audiences: [...flowK.audiences, { id: 'aud-b', mappingCreatedAt: 300, mappingUpdatedAt: 301 }] };
    bb.writeFile('bfk.json', backboneConfig({ bb, name: 'bfk', audiences, destinations: [destK], dataflows: [mapped] }));
    const got = () => rx.delivered('/bfk');
    const first = spawnCli(['run', '--config', cfgK]);
    await rx.waitFor(() => got().length >= 650 || !first.running, 30_000, '650 backfill exports');
    first.kill('SIGKILL');
    await first.exited;
    const atKill = got().length;
    expect(atKill).toBeLessThan(members.length);

    // The backfiller publishes the items to the stream and checkpoints after each page; the
    // exports follow at the rate limit. At the kill the backfill is either published (its
    // frozen copy dropped with its done state) or its frozen copy outlives the crash. A
    // profile entering B meanwhile is not among the frozen members: its own update exports
    // it, the backfill does not.
    const redis = new Redis(bb.redis.url, { maxRetriesPerRequest: 1 });
    const frozenKey = 'bfk:backfill:flow-1|aud-b|300:members';
    try {
      const state = JSON.parse((await redis.hget('bfk:backfills', 'flow-1|aud-b|300')) ?? 'null') as { done: boolean; sent: number } | null;
      expect(state, 'the backfill began before the kill').not.toBeNull();
      if (!state!.done) expect(await redis.llen(frozenKey)).toBe(members.length + 1);
      console.log(`[backfill] at the kill: ${state!.sent} of ${members.length} published${state!.done ? ' (done)' : ''}`);
      await publish(bb, cfgK, 'bfk-late.jsonl', [{ profileId: 'm-late', eventId: 'm-late', identityMap: { crm: [{ id: 'm-late' }] }, segmentMembership: enter('aud-b') }]);
      const resumed = await runOnce(cfgK);
      expect(resumed).toMatchObject({ eventsRead: 1 });
      expect(await redis.exists(frozenKey), 'the frozen copy is dropped once the backfill is done').toBe(0);
      const ids = (): string[] => got().map((r) => ((r.body as { identityMap: { crm: Array<{ id: string }> } }).identityMap.crm[0].id));
      expect(ids().filter((id) => id === 'm-late'), 'the late entrant: one export (its own update)').toEqual(['m-late']);
      expect([...new Set(ids())].sort(), 'every member of B exported at least once').toEqual([...members, 'm-late'].sort());
      const again = got().length - new Set(ids()).size;
      console.log(`[backfill] killed after ${atKill} of ${members.length}; the resumed run sent ${resumed.delivered} (${again} sent twice)`);
      expect(resumed.delivered, 'the resumed backfill starts from its last checkpoint, not from scratch').toBeLessThan(members.length);
    } finally {
      redis.disconnect();
    }

    const before = got().length;
    expect(await runOnce(cfgK)).toMatchObject({ delivered: 0, backfilled: 0 });
    expect(got().length).toBe(before);
  }, 90_000);

  it('profiles entering the audience while its backfill runs are exported once each, by their own update', async () => {
    // 1,500 members of B (three pages of the member scan) at 300/s; 40 profiles enter B
    // while the first page goes out. The backfill reads B as it was when it began.
    const members = Array.from({ length: 1_500 }, (_, i) => `l-${String(i).padStart(4, '0')}`);
    const late = Array.from({ length: 40 }, (_, i) => `late-${i}`);
    const destL = { ...dest, endpoint: `${rx.url}/bfl` };
    const flowL = { ...flowA, rateLimit: 300 };
    const cfgL = bb.writeFile('bfl.json', backboneConfig({ bb, name: 'bfl', audiences, destinations: [destL], dataflows: [flowL] }));
    const entering = (id: string) => ({ profileId: id, eventId: `ev-${id}`, identityMap: { crm: [{ id }] }, segmentMembership: enter('aud-b') });
    await publish(bb, cfgL, 'bfl.jsonl', members.map(entering));
    expect(await runOnce(cfgL)).toMatchObject({ eventsRead: members.length, delivered: 0 });

    const mapped = { ...flowL, audiences: [...flowL.audiences, { id: 'aud-b', mappingCreatedAt: 500, mappingUpdatedAt: 501 }] };
    bb.writeFile('bfl.json', backboneConfig({ bb, name: 'bfl', audiences, destinations: [destL], dataflows: [mapped] }));
    const got = () => rx.delivered('/bfl');
    const idOf = (r: { body: unknown }): string => (r.body as { identityMap: { crm: Array<{ id: string }> } }).identityMap.crm[0].id;
    const worker = spawnCli(['run', '--config', cfgL]);
    try {
      await rx.waitFor(() => got().length >= 100 || !worker.running, 30_000, 'the backfill under way');
      await publish(bb, cfgL, 'bfl-late.jsonl', late.map(entering));
      const everyone = new Set([...members, ...late]);
      await rx.waitFor(() => new Set(got().map(idOf)).size >= everyone.size || !worker.running, 60_000, 'every member and late entrant exported');
      await new Promise((r) => setTimeout(r, 500)); // room for a (wrong) second export
    } finally {
      worker.kill('SIGTERM');
      await worker.exited;
    }
    const byId = new Map<string, string[]>();
    for (const r of got()) byId.set(idOf(r), [...(byId.get(idOf(r)) ?? []), r.key]);
    expect([...byId.keys()].sort()).toEqual([...members, ...late].sort());
    for (const id of late) {
      expect(byId.get(id), `${id}: one export, its own update's`).toEqual([idempotencyKey({ dataflowId: 'flow-1', profileId: id, event: `event:ev-${id}` })]);
    }
    const twice = members.filter((id) => byId.get(id)!.length !== 1);
    expect(twice, 'members exported more than once').toEqual([]);
  }, 90_000);
});
