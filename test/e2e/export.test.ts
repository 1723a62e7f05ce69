/**
 * End to end: `http-destination run --once` over a JSON Lines file against a real local
 * receiver. What leaves (SPEC §4 bodies), when (SPEC §3 decisions), how (headers, query,
 * bearer, Content-Type, Idempotency-Key), in which order (per profile and dataflow), and
 * the summary printed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBuilt, removeTempDirs, runCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../support/receiver.js';

const RETRY = { minDelayMs: 20, maxDelayMs: 100 };
const TOKEN = 'export-bearer-token-7c1d';

const AUD1 = { id: 'aud-1', name: 'First name equals John', mergePolicyId: 'mp-1', createdAt: 1648553325000, updatedAt: 1648553330000, origin: 'segmentation' };
const AUD2 = { id: 'aud-2', name: 'Loyal customers', mergePolicyId: 'mp-1', createdAt: 1648553325100, updatedAt: 1648553330100, origin: 'segmentation' };
const AUD3 = { id: 'aud-3', name: 'Other merge policy', mergePolicyId: 'mp-2', createdAt: 1648553325200, updatedAt: 1648553330200, origin: 'segmentation' };
const MAPPING = { id: 'aud-1', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570001 };

let rx: Receiver;

beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver();
});
afterEach(() => stopAll());
afterAll(async () => {
  await rx?.close();
  removeTempDirs();
});

const t = (s: number): string => `2026-11-26T10:00:${String(s).padStart(2, '0')}Z`;

describe('run --once: what is exported, and how', () => {
  // Lines of the events file, each with what SPEC §3 says it exports.
  const events: unknown[] = [
    /* 1: not in any audience yet → nothing */
    {
      profileId: 'p-1', eventId: 'e1', timestamp: t(1),
      attributes: { person: { name: { firstName: 'John', lastName: 'Doe' }, birthDate: '1990-01-01', gender: 'm' }, personalEmail: { address: 'john.doe@acme.com' }, loyalty: { tier: 'gold' } },
      identityMap: { ecid: [{ id: 'ecid-1' }] },
    },
    /* 2: enters an UNMAPPED audience (aud-2, same merge policy) → nothing */
    { profileId: 'p-1', eventId: 'e2', timestamp: t(2), segmentMembership: { ups: { 'aud-2': { status: 'realized', lastQualificationTime: t(2) } } } },
    /* 3: another profile in no mapped audience (only aud-3, unmapped) → nothing */
    { profileId: 'p-2', eventId: 'p2-e1', attributes: { person: { name: { firstName: 'Ann' } } }, identityMap: { ecid: [{ id: 'ecid-2' }] }, segmentMembership: { ups: { 'aud-3': { status: 'realized', lastQualificationTime: t(3) } } } },
    /* 4: broken → rejected, the rest goes on */
    '{"profileId": "p-9", "attributes": ',
    /* 5: enters aud-1 (mapped) and aud-3 (other merge policy) → both flows */
    { profileId: 'p-1', eventId: 'e3', timestamp: t(5), segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(5) }, 'aud-3': { status: 'realized', lastQualificationTime: t(5) } } } },
    /* 6: writes unmapped attributes only (a sibling of a mapped one, and another object) → nothing */
    { profileId: 'p-1', eventId: 'e4', attributes: { person: { gender: 'f' }, loyalty: { tier: 'platinum' } } },
    /* 7: realized → existing is no change → nothing */
    { profileId: 'p-1', eventId: 'e5', segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: t(7) } } } },
    /* 8: p-2 writes a mapped attribute but is in no mapped audience → nothing */
    { profileId: 'p-2', eventId: 'p2-e2', attributes: { person: { name: { firstName: 'Anna' } } } },
    /* 9: writes a mapped attribute with an EQUAL value → both flows */
    { profileId: 'p-1', eventId: 'e6', attributes: { person: { name: { firstName: 'John' } } } },
    /* 10: writes under person.name (mapped as an object by flow-plain only) → flow-plain */
    { profileId: 'p-1', eventId: 'e7', attributes: { person: { name: { middleName: 'Q' } } } },
    /* 11: identity map changes → both flows */
    { profileId: 'p-1', eventId: 'e8', identityMap: { email: [{ id: 'john.doe@acme.com' }] } },
    /* 12: the same identity again: no change → nothing */
    { profileId: 'p-1', eventId: 'e9', identityMap: { ecid: [{ id: 'ecid-1' }] } },
    /* 13: a third profile enters aud-1 with no attributes → both flows */
    { profileId: 'p-3', eventId: 'p3-e1', identityMap: { ecid: [{ id: 'ecid-3' }] }, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(13) } } } },
    /* 14: exits aud-1 → both flows */
    { profileId: 'p-1', eventId: 'e10', segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: t(14) } } } },
    /* 15: out of every mapped audience now: a mapped write → nothing */
    { profileId: 'p-1', eventId: 'e11', attributes: { person: { name: { firstName: 'Jack' } } } },
  ];

  let stdout = '';
  let code: number | null = null;
  let dir = '';

  beforeAll(async () => {
    dir = tempDir();
    writeEvents(dir, events);
    const config = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      store: { kind: 'memory' },
      failedRequests: { kind: 'file', path: 'data/failed.jsonl' },
      audiences: [AUD1, AUD2, AUD3],
      destinations: [
        {
          id: 'dest-full',
          endpoint: `${rx.url}/full?tenant=acme`,
          headers: 'x-tenant:acme, x-custom:hello world,x-trace:a:b',
          queryParameters: 'source=aep&v=2',
          auth: { type: 'bearer', token: TOKEN },
          includeSegmentNames: true,
          includeSegmentTimestamps: true,
          retry: RETRY,
        },
        { id: 'dest-plain', endpoint: `${rx.url}/plain`, retry: RETRY },
      ],
      dataflows: [
        {
          id: 'flow-full',
          destination: 'dest-full',
          audiences: [MAPPING],
          attributes: ['person.name.firstName', 'person.name.lastName', 'person.birthDate', 'personalEmail.address'],
        },
        { id: 'flow-plain', destination: 'dest-plain', audiences: ['aud-1'], attributes: ['person.name', 'personalEmail'] },
      ],
    });
    const r = await runCli(['run', '--config', config, '--once']);
    stdout = r.stdout;
    code = r.code;
    if (r.code !== 0) throw new Error(`run --once failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  });

  const bodies = (path: string, profile?: string): unknown[] =>
    rx
      .at(path)
      .filter((r) => profile === undefined || (r.body as { identityMap?: { ecid?: Array<{ id: string }> } }).identityMap?.ecid?.[0]?.id === `ecid-${profile.slice(2)}`)
      .map((r) => r.body);

  const fullMeta1 = { createdAt: AUD1.createdAt, updatedAt: AUD1.updatedAt, mappingCreatedAt: MAPPING.mappingCreatedAt, mappingUpdatedAt: MAPPING.mappingUpdatedAt, name: AUD1.name };
  const fullMeta2 = { createdAt: AUD2.createdAt, updatedAt: AUD2.updatedAt, name: AUD2.name };
  const aud2 = { status: 'realized', lastQualificationTime: t(2) };
  const fullAttrs = { person: { name: { firstName: 'John', lastName: 'Doe' }, birthDate: '1990-01-01' }, personalEmail: { address: 'john.doe@acme.com' } };
  const ecid1 = { ecid: [{ id: 'ecid-1' }] };
  const ecidAndEmail = { ecid: [{ id: 'ecid-1' }], email: [{ id: 'john.doe@acme.com' }] };

  it('exits 0 and prints the summary: events read, rejected, exports delivered and failed', () => {
    expect(code).toBe(0);
    expect(stdout).toMatch(/events read\s+15\b/);
    expect(stdout).toMatch(/events rejected\s+1\b/);
    expect(stdout).toMatch(/exports delivered\s+11\b/);
    expect(stdout).toMatch(/exports failed\s+0\b/);
    expect(stdout).toMatch(/flow-full: delivered 5, failed 0/);
    expect(stdout).toMatch(/flow-plain: delivered 6, failed 0/);
  });

  it('sends exactly the exports SPEC §3 calls for, and nothing for the other updates', () => {
    expect(rx.at('/full')).toHaveLength(5);
    expect(rx.at('/plain')).toHaveLength(6);
    expect(rx.requests.filter((r) => r.path !== '/full' && r.path !== '/plain')).toHaveLength(0);
    // p-2 never was in a mapped audience: not one export of it
    expect(rx.requests.filter((r) => JSON.stringify(r.body).includes('ecid-2'))).toHaveLength(0);
  });

  it('bodies with names and timestamps: mapped attributes only, identities, memberships of the merge policy (SPEC §4)', () => {
    expect(bodies('/full', 'p-1')).toEqual([
      // entered aud-1; aud-2 (unmapped, same merge policy) appears; aud-3 (other policy) never; gender/loyalty never
      { ...fullAttrs, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(5), ...fullMeta1 }, 'aud-2': { ...aud2, ...fullMeta2 } } }, identityMap: ecid1 },
      // an equal-value write of firstName; aud-1 now `existing` as received
      { ...fullAttrs, segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: t(7), ...fullMeta1 }, 'aud-2': { ...aud2, ...fullMeta2 } } }, identityMap: ecid1 },
      // identity added (the middleName write before it did not export here: a sibling of firstName)
      { ...fullAttrs, segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: t(7), ...fullMeta1 }, 'aud-2': { ...aud2, ...fullMeta2 } } }, identityMap: ecidAndEmail },
      // exited aud-1 in this very update: the record is there, with status and time
      { ...fullAttrs, segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: t(14) }, 'aud-2': { ...aud2, ...fullMeta2 } } }, identityMap: ecidAndEmail },
    ]);
    expect(bodies('/full', 'p-3')).toEqual([
      { segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(13), ...fullMeta1 } } }, identityMap: { ecid: [{ id: 'ecid-3' }] } },
    ]);
  });

  it('bodies without names and timestamps, with object-mapped paths', () => {
    const name = { firstName: 'John', lastName: 'Doe' };
    const email = { address: 'john.doe@acme.com' };
    expect(bodies('/plain', 'p-1')).toEqual([
      { person: { name }, personalEmail: email, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(5) }, 'aud-2': aud2 } }, identityMap: ecid1 },
      { person: { name }, personalEmail: email, segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: t(7) }, 'aud-2': aud2 } }, identityMap: ecid1 },
      { person: { name: { ...name, middleName: 'Q' } }, personalEmail: email, segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: t(7) }, 'aud-2': aud2 } }, identityMap: ecid1 },
      { person: { name: { ...name, middleName: 'Q' } }, personalEmail: email, segmentMembership: { ups: { 'aud-1': { status: 'existing', lastQualificationTime: t(7) }, 'aud-2': aud2 } }, identityMap: ecidAndEmail },
      { person: { name: { ...name, middleName: 'Q' } }, personalEmail: email, segmentMembership: { ups: { 'aud-1': { status: 'exited', lastQualificationTime: t(14) }, 'aud-2': aud2 } }, identityMap: ecidAndEmail },
    ]);
    expect(bodies('/plain', 'p-3')).toEqual([
      { segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(13) } } }, identityMap: { ecid: [{ id: 'ecid-3' }] } },
    ]);
  });

  it('sends POST with JSON, custom headers from the string form, the query appended to the endpoint query, and the bearer token', () => {
    for (const r of rx.at('/full')) {
      expect(r.method).toBe('POST');
      expect(r.url).toBe('/full?tenant=acme&source=aep&v=2');
      expect(r.headers['content-type']).toMatch(/^application\/json\b/);
      expect(r.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(r.headers['x-tenant']).toBe('acme');
      expect(r.headers['x-custom']).toBe('hello world');
      expect(r.headers['x-trace']).toBe('a:b');
      expect(JSON.parse(r.rawBody)).toEqual(r.body);
    }
    for (const r of rx.at('/plain')) {
      expect(r.method).toBe('POST');
      expect(r.url).toBe('/plain');
      expect(r.headers['content-type']).toMatch(/^application\/json\b/);
      expect(r.headers.authorization).toBeUndefined();
      expect(r.headers['x-tenant']).toBeUndefined();
    }
  });

  it('gives every export its own Idempotency-Key', () => {
    const keys = rx.requests.map((r) => r.key);
    for (const k of keys) expect(k).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(new Set(keys).size).toBe(11);
  });

  it('stores no failed request and keeps the rejected line', () => {
    const failed = join(dir, 'data', 'failed.jsonl');
    expect(existsSync(failed) ? readFileSync(failed, 'utf8').trim() : '').toBe('');
    const rejected = readFileSync(join(dir, 'data', 'rejected.jsonl'), 'utf8').trim().split('\n');
    expect(rejected).toHaveLength(1);
    expect(JSON.parse(rejected[0])).toMatchObject({ code: 'ERR_EVENT_JSON' });
  });
});

describe('run --once: per-profile order under slow answers and retries', () => {
  const PROFILES = 12;
  const UPDATES = 16;
  /** A small deterministic hash, to script answers per export. */
  const h = (s: string): number => {
    let x = 2166136261;
    for (let i = 0; i < s.length; i++) x = Math.imul(x ^ s.charCodeAt(i), 16777619) >>> 0;
    return x;
  };
  const who = (r: ReceivedRequest): { profile: string; k: number } => {
    const name = (r.body as { person: { name: { firstName: string; lastName: string } } }).person.name;
    return { profile: name.firstName, k: Number(name.lastName.slice(1)) };
  };

  it('delivers every profile’s exports to every dataflow in update order, retries keep their Idempotency-Key, and --json prints the summary', async () => {
    const orx = await startReceiver({
      respond: (r) => {
        const { profile, k } = who(r);
        const x = h(`${r.path}/${profile}/${k}`);
        const delayMs = (x % 4) * 10;
        if (x % 5 === 0 && r.attempt === 1) return { status: 500, delayMs };
        if (x % 11 === 1 && r.attempt <= 2) return { status: 503, delayMs };
        return { status: 200, delayMs };
      },
    });
    try {
      const dir = tempDir();
      const events: unknown[] = [];
      for (let k = 0; k < UPDATES; k++) {
        for (let p = 0; p < PROFILES; p++) {
          const profileId = `p-${p}`;
          events.push(
            k === 0
              ? { profileId, eventId: `${profileId}-${k}`, attributes: { person: { name: { firstName: profileId, lastName: `u${k}` } } }, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: t(0) } } } }
              : { profileId, eventId: `${profileId}-${k}`, attributes: { person: { name: { lastName: `u${k}` } } } },
          );
        }
      }
      writeEvents(dir, events);
      const config = writeConfig(dir, {
        source: { kind: 'file', path: 'events.jsonl' },
        failedRequests: { kind: 'file', path: 'failed.jsonl' },
        audiences: [AUD1],
        destinations: [
          { id: 'dest-a', endpoint: `${orx.url}/a`, retry: RETRY },
          { id: 'dest-b', endpoint: `${orx.url}/b`, retry: RETRY },
        ],
        dataflows: [
          { id: 'flow-a', destination: 'dest-a', audiences: ['aud-1'], attributes: ['person.name'] },
          { id: 'flow-b', destination: 'dest-b', audiences: ['aud-1'], attributes: ['person.name.lastName', 'person.name.firstName'] },
        ],
      });
      const r = await runCli(['run', '--config', config, '--once', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const summary = JSON.parse(r.stdout.trim()) as Record<string, unknown>;
      // A queued export is superseded by a newer one of its profile (SPEC §6: the endpoint gets
      // the latest state, in order): every export is delivered or superseded, none failed.
      expect(summary).toMatchObject({ eventsRead: PROFILES * UPDATES, rejected: 0, failed: 0 });
      const flows = summary.dataflows as Record<string, { delivered: number; failed: number; superseded: number }>;
      for (const id of ['flow-a', 'flow-b']) expect(flows[id]!.delivered + flows[id]!.superseded, id).toBe(PROFILES * UPDATES);
      expect(summary.delivered).toBe(flows['flow-a']!.delivered + flows['flow-b']!.delivered);

      // retries did happen (else this test would prove little)
      expect(orx.requests.filter((req) => req.attempt >= 2).length).toBeGreaterThan(0);
      const keysByExport = new Map<string, Set<string>>();
      for (const path of ['/a', '/b']) {
        for (let p = 0; p < PROFILES; p++) {
          const mine = orx.at(path).filter((req) => who(req).profile === `p-${p}`);
          const ks = mine.map((req) => who(req).k);
          // every arrival (first attempts and retries) in update order: a later export never overtakes
          for (let i = 1; i < ks.length; i++) expect(ks[i], `${path} p-${p}: ${ks.join(',')}`).toBeGreaterThanOrEqual(ks[i - 1]);
          // and what was accepted goes up, and ends with the last update (superseded states are skipped)
          const accepted = mine.filter((req) => req.status === 200).map((req) => who(req).k);
          for (let i = 1; i < accepted.length; i++) expect(accepted[i]).toBeGreaterThan(accepted[i - 1]!);
          expect(accepted.at(-1), `${path} p-${p}`).toBe(UPDATES - 1);
          for (const req of mine) {
            const id = `${path}/p-${p}/${who(req).k}`;
            if (!keysByExport.has(id)) keysByExport.set(id, new Set());
            keysByExport.get(id)!.add(req.key);
          }
        }
      }
      // one Idempotency-Key per export, the same on every retry; different exports, different keys
      expect(keysByExport.size).toBeGreaterThanOrEqual(summary.delivered as number);
      for (const [id, set] of keysByExport) expect(set.size, id).toBe(1);
      const all = [...keysByExport.values()].map((s) => [...s][0]);
      expect(new Set(all).size).toBe(all.length);
      // an export answered 503 twice was sent three times with one key
      const thrice = orx.requests.filter((req) => req.attempt === 3);
      expect(thrice.length).toBeGreaterThan(0);
    } finally {
      await orx.close();
    }
  });
});
