/**
 * Custom upload on the real backbone (SPEC §9): `audiences import` publishes one membership
 * event per good CSV row to JetStream, reports bad rows with their line numbers, and the next
 * `run --once` exports the imported profiles to the dataflow mapping the upload audience.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Audience } from '../../src/domain/types.js';
import {
  backboneConfig,
  FAST_RETRY,
  publish,
  readMembers,
  readSnapshots,
  runCli,
  runOnce,
  startBackbone,
  startRecordingReceiver,
  type Backbone,
  type RecordingReceiver,
} from '../support/backbone.js';

const audiences: Audience[] = [
  { id: 'aud-up', name: 'Uploaded list', mergePolicyId: 'mp-1', createdAt: 5, updatedAt: 6, origin: 'upload' },
  { id: 'aud-seg', name: 'Segment', mergePolicyId: 'mp-1', createdAt: 7, updatedAt: 8, origin: 'segmentation' },
];

// Line numbers matter: 4, 5 and 10 are bad; the quoted field of p-6 spans lines 7–8.
const CSV = [
  'profileId,ecid,email_lc_sha256', // 1
  'p-1,e1,h1', // 2
  '"p-2",e2,', // 3
  'p-3,,h3,extra', // 4: one field too many
  ',e4,h4', // 5: empty profileId
  '"p-5 ""quoted""",e5,h5', // 6
  'p-6,"e6', // 7
  'continued",h6', // 8
  'p-7,e7,h7', // 9
  '"p-8,e8,h8', // 10: unterminated quote
].join('\n');
const GOOD = ['p-1', 'p-2', 'p-5 "quoted"', 'p-6', 'p-7'];

describe('audiences import (CSV custom upload) against JetStream', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;
  let cfg: string;
  let csv: string;

  beforeAll(async () => {
    bb = await startBackbone();
    rx = await startRecordingReceiver();
    const dest = { id: 'dest-1', endpoint: `${rx.url}/up`, retry: FAST_RETRY, includeSegmentNames: true };
    const flow = { id: 'flow-up', destination: 'dest-1', audiences: ['aud-up'], attributes: [] };
    cfg = bb.writeFile('up.json', backboneConfig({ bb, name: 'up', audiences, destinations: [dest], dataflows: [flow] }));
    csv = bb.writeFile('list.csv', `${CSV}\n`);
    // Stream created and the dataflow's backfill finished on the empty store first.
    await publish(bb, cfg, 'empty.jsonl', []);
    expect(await runOnce(cfg)).toMatchObject({ eventsRead: 0, delivered: 0 });
  });

  afterAll(async () => {
    await rx?.close();
    await bb?.stop();
  });

  it('reports the bad rows with their line numbers and imports the good ones', async () => {
    const r = await runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', csv]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('imported 5 profiles into aud-up (5 new, 0 duplicates) of 8 rows; 3 bad rows:');
    expect(r.stdout).toMatch(/line 4: expected 3 fields, found 4/);
    expect(r.stdout).toMatch(/line 5: profileId is empty/);
    expect(r.stdout).toMatch(/line 10: unterminated quoted field/);
    expect(r.stdout).not.toMatch(/line (2|3|6|7|8|9):/);
  });

  it('the next run --once exports every imported profile as a member of the upload audience', async () => {
    const summary = await runOnce(cfg);
    expect(summary).toMatchObject({ eventsRead: 5, rejected: 0, delivered: 5, failed: 0 });
    const got = rx.delivered('/up');
    expect(got).toHaveLength(5);
    const byEcid = new Map(
      got.map((r) => {
        const body = r.body as { identityMap: Record<string, Array<{ id: string }>>; segmentMembership: { ups: Record<string, { status: string; name?: string }> } };
        return [body.identityMap.ecid?.[0]?.id, body] as const;
      }),
    );
    expect([...byEcid.keys()].sort()).toEqual(['e1', 'e2', 'e5', 'e6\ncontinued', 'e7']);
    expect(byEcid.get('e1')?.identityMap).toEqual({ ecid: [{ id: 'e1' }], email_lc_sha256: [{ id: 'h1' }] });
    expect(byEcid.get('e2')?.identityMap).toEqual({ ecid: [{ id: 'e2' }] });
    for (const body of byEcid.values()) {
      expect(body.segmentMembership.ups['aud-up']).toMatchObject({ status: 'realized', name: 'Uploaded list' });
    }
    expect(await readMembers(bb.redis.url, 'up:', 'aud-up')).toEqual([...GOOD].sort());
    const snaps = await readSnapshots(bb.redis.url, 'up:', ['p-5 "quoted"', 'p-3', 'p-8']);
    expect(snaps.get('p-5 "quoted"')?.memberships['aud-up']?.status).toBe('realized');
    expect(snaps.get('p-3')).toBeNull();
    expect(snaps.get('p-8')).toBeNull();
  });

  it('importing the same file again adds nothing (same event ids: JetStream drops the duplicates)', async () => {
    const r = await runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', csv]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('imported 5 profiles into aud-up (0 new, 5 duplicates)');
    expect(await runOnce(cfg)).toMatchObject({ eventsRead: 0, delivered: 0 });
    expect(rx.delivered('/up')).toHaveLength(5);
  });

  it('refuses an unknown audience and an audience that is not an upload (exit 2)', async () => {
    const unknown = await runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-nope', csv]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/aud-nope/);
    const seg = await runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-seg', csv]);
    expect(seg.code).toBe(2);
    expect(seg.stderr).toMatch(/origin/);
  });
});
