/**
 * End to end: a dataflow `filter` (README, "Extending": the worked example of an operator)
 * through the built CLI. Skipped exports are acked and counted as excluded; other dataflows
 * are not affected; a bad filter is a config error naming its field.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, removeTempDirs, runCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { startReceiver, type Receiver } from '../support/receiver.js';

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

const AUD = { id: 'aud-1', name: 'All', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };
const joins = { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } };

function config(filter: unknown) {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    failedRequests: { kind: 'file', path: 'failed.jsonl' },
    audiences: [AUD],
    destinations: [{ id: 'dest', endpoint: `${rx.url}/filtered` }, { id: 'all', endpoint: `${rx.url}/all` }],
    dataflows: [
      { id: 'flow-fr', destination: 'dest', audiences: ['aud-1'], attributes: ['person.country'], filter },
      { id: 'flow-all', destination: 'all', audiences: ['aud-1'], attributes: ['person.country'] },
    ],
  };
}

describe('dataflows[].filter', () => {
  it('exports only the profiles the filter selects; the others are acked and counted as excluded', async () => {
    const dir = tempDir();
    writeEvents(dir, [
      { profileId: 'p-fr', segmentMembership: joins, attributes: { person: { country: 'FR' } } },
      { profileId: 'p-de', segmentMembership: joins, attributes: { person: { country: 'DE' } } },
      { profileId: 'p-be', segmentMembership: joins, attributes: { person: { country: 'BE' } } },
      { profileId: 'p-none', segmentMembership: joins },
    ]);
    const path = writeConfig(dir, config({ attribute: 'person.country', in: ['FR', 'BE'] }));
    const r = await runCli(['run', '--config', path, '--once', '--json'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout.trim()) as { delivered: number; failed: number; dataflows: Record<string, { delivered: number }> };
    expect(summary.dataflows['flow-fr']).toMatchObject({ delivered: 2 });
    expect(summary.dataflows['flow-all']).toMatchObject({ delivered: 4 });
    const sent = rx.at('/filtered').map((h) => (h.body as { person?: { country?: string } }).person?.country).sort();
    expect(sent).toEqual(['BE', 'FR']);
    expect(rx.at('/all')).toHaveLength(4);
  });

  it('rejects a filter with no test, or two, naming the field', async () => {
    const dir = tempDir();
    writeEvents(dir, []);
    const none = await runCli(['validate', '--config', writeConfig(dir, config({ attribute: 'person.country' }))]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/dataflows\[0\]\.filter: needs one of equals, notEquals, in, notIn, exists/);
    const two = await runCli(['validate', '--config', writeConfig(dir, config({ attribute: 'person.country', equals: 'FR', exists: true }))]);
    expect(two.code).toBe(2);
    expect(two.stderr).toMatch(/dataflows\[0\]\.filter: takes one test, got equals and exists/);
    const unknown = await runCli(['validate', '--config', writeConfig(dir, config({ attribute: 'person.country', like: 'F%' }))]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/dataflows\[0\]\.filter/);
  });
});
