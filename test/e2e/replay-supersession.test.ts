/**
 * End to end (SPEC §6 "Nothing goes back in time", issue 13): a replay after an outage leaves
 * every profile at its newest state. The endpoint refuses connections while each of 100
 * profiles gets v1 (stored as failed requests); then it is back and v2, v3 are delivered;
 * `failed replay` must not send v1 (superseded: counted, shown by `failed list`, removed).
 * Sequential `run --once` commands on one local store: nothing depends on machine speed.
 */
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { adminPortFrom } from '../support/browser.js';
import { ensureBuilt, jsonLines, removeTempDirs, runCli, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { closedPort, startReceiver, type Receiver } from '../support/receiver.js';

const PROFILES = 100;
let rx: Receiver;

beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver();
}, 120_000);
afterEach(() => stopAll());
afterAll(async () => {
  await rx.close();
  removeTempDirs();
});

const version = (p: number, v: number): unknown => ({
  profileId: `p-${p}`,
  eventId: `p-${p}-v${v}`,
  attributes: { name: `v${v}` },
  ...(v === 1
    ? { identityMap: { ecid: [{ id: `p-${p}` }] }, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } } }
    : {}),
});

function config(endpoint: string, extra: object = {}): unknown {
  return {
    ...extra,
    source: { kind: 'file', path: 'events.jsonl' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [{ id: 'dest', endpoint, timeoutMs: 2_000, retry: { minDelayMs: 10, maxDelayMs: 50 } }],
    dataflows: [{ id: 'flow', destination: 'dest', audiences: ['aud-1'], attributes: ['name'] }],
  };
}

/** The endpoint refuses while every v1 is stored as failed; then v2 and v3 are appended (not yet run). */
async function outage(dir: string): Promise<string> {
  writeEvents(dir, Array.from({ length: PROFILES }, (_, p) => version(p, 1)));
  const refusing = writeConfig(dir, config(`http://127.0.0.1:${await closedPort()}/x`), 'refusing.yaml');
  const first = await runCli(['run', '--config', refusing, '--once'], { cwd: dir, timeoutMs: 120_000 });
  expect(first.code, first.stderr).toBe(0);
  expect(first.stdout).toMatch(new RegExp(`exports failed\\s+${PROFILES}\\b`));
  const events = join(dir, 'events.jsonl');
  for (const v of [2, 3]) for (let p = 0; p < PROFILES; p++) appendFileSync(events, `${JSON.stringify(version(p, v))}\n`);
  return events;
}

/** In arrival order: the last body accepted per profile at `path` is its state at the endpoint. */
function newestAt(path: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const r of rx.at(path)) {
    if (r.status !== 200) continue;
    const body = r.body as { name: string; identityMap: { ecid: Array<{ id: string }> } };
    m.set(body.identityMap.ecid[0]!.id, body.name);
  }
  return m;
}

describe('replay after an outage', () => {
  it('from the running worker\'s admin API and console: superseded records are not sent either', async () => {
    const dir = tempDir();
    await outage(dir);
    // The endpoint is back and `run` follows the file, with its admin server.
    const cfg = writeConfig(dir, config(`${rx.url}/admin-in`, { admin: { token: '${HD_ADMIN}' } }), 'admin.yaml');
    const env = { HD_ADMIN: 'admin-token-for-replay' };
    const worker = startCli(['run', '--config', cfg, '--metrics-port', '0'], { cwd: dir, env });
    await worker.waitForOutput(/admin server listening/, 30_000);
    const base = `http://127.0.0.1:${adminPortFrom(worker.stderr)}`;
    const deadline = Date.now() + 120_000;
    while (!(newestAt('/admin-in').size === PROFILES && [...newestAt('/admin-in').values()].every((n) => n === 'v3'))) {
      if (Date.now() > deadline) throw new Error(`v3 of every profile did not arrive:\n${worker.stderr.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const failed = (await (await fetch(`${base}/api/failed?limit=1000`)).json()) as { total: number; items: Array<{ id: string }> };
    expect(failed.total).toBe(PROFILES);
    const sentBefore = rx.at('/admin-in').length;
    const action = { method: 'POST', headers: { authorization: `Bearer ${env.HD_ADMIN}` } };
    // The console's action: the selected records.
    const one = await fetch(`${base}/api/failed/replay-selected?id=${encodeURIComponent(failed.items[0]!.id)}`, action);
    expect(one.status).toBe(200);
    expect(await one.json()).toMatchObject({ selected: 1, replayed: 0, delivered: 0, superseded: 1 });
    // The admin API's action: all of them.
    const all = await fetch(`${base}/api/failed/replay`, action);
    expect(all.status).toBe(200);
    expect(await all.json()).toMatchObject({ replayed: 0, delivered: 0, superseded: PROFILES - 1 });
    expect(rx.at('/admin-in').length).toBe(sentBefore);
    for (const [p, name] of newestAt('/admin-in')) expect(name, p).toBe('v3');
    expect(((await (await fetch(`${base}/api/failed`)).json()) as { total: number }).total).toBe(0);
    worker.signal('SIGTERM');
    expect((await worker.exited).code).toBe(0);
  }, 300_000);

  it('leaves every profile at its newest state: failed v1 records are superseded by the delivered v3, not sent', async () => {
    const dir = tempDir();
    // 1. The endpoint refuses: every v1 is stored as a failed request.
    await outage(dir);
    // 2. The endpoint is back: v2 and v3 of every profile are delivered.
    const fixed = writeConfig(dir, config(`${rx.url}/in`), 'fixed.yaml');
    const second = await runCli(['run', '--config', fixed, '--once'], { cwd: dir, timeoutMs: 120_000 });
    expect(second.code, second.stderr).toBe(0);
    const newest = (): Map<string, string> => newestAt('/in');
    const before = newest();
    expect(before.size).toBe(PROFILES);
    for (const [p, name] of before) expect(name, p).toBe('v3');

    // 3. `failed list` shows the v1 records as superseded; `failed replay` sends none of them.
    const listed = await runCli(['failed', 'list', '--config', fixed, '--json'], { cwd: dir });
    expect(listed.code, listed.stderr).toBe(0);
    const records = jsonLines<{ superseded?: boolean }>(listed.stdout);
    expect(records).toHaveLength(PROFILES);
    expect(records.every((r) => r.superseded === true)).toBe(true);
    const sentBefore = rx.at('/in').length;
    const replay = await runCli(['failed', 'replay', '--config', fixed], { cwd: dir, timeoutMs: 120_000 });
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toMatch(new RegExp(`superseded ${PROFILES}\\b`));
    expect(rx.at('/in').length).toBe(sentBefore);
    for (const [p, name] of newest()) expect(name, p).toBe('v3');
    const after = await runCli(['failed', 'list', '--config', fixed], { cwd: dir });
    expect(after.stdout).toMatch(/^0 failed requests/);
  }, 300_000);
});

