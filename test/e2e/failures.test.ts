/**
 * End to end: failures (SPEC §6) through the built command. Retryable and permanent HTTP
 * failures, Retry-After, refused connections; the stored failed requests (`failed list`,
 * `--json`, `--dataflow`), `failed replay` after the config is fixed (same Idempotency-Key;
 * delivered ones leave the store, failing ones stay), and rejected events (`rejected list`).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, jsonLines, removeTempDirs, runCli, stopAll, tempDir, writeConfig, writeEvents, type CliResult } from '../support/cli.js';
import { closedPort, startReceiver, type Receiver } from '../support/receiver.js';

const RETRY = { minDelayMs: 20, maxDelayMs: 100 };

interface StoredFailure {
  id: string;
  dataflowId: string;
  destinationId: string;
  profileId: string;
  idempotencyKey: string;
  payload: Record<string, unknown>;
  attempts: number;
  lastStatus?: number;
  lastErrorCode: string;
  lastError: string;
  failedAt: string;
  replays?: number;
}

let rx: Receiver;
let dir: string;
let refusedPort: number;
let configPath: string;
let run: CliResult;

function config(endpoints: { e500: string; e400: string; refused: string }): unknown {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    failedRequests: { kind: 'file', path: 'store/failed.jsonl' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [
      { id: 'dest-500', endpoint: endpoints.e500, retry: RETRY },
      { id: 'dest-400', endpoint: endpoints.e400, retry: RETRY },
      { id: 'dest-429', endpoint: `${rx.url}/busy`, retry: RETRY },
      { id: 'dest-refused', endpoint: endpoints.refused, retry: RETRY, timeoutMs: 2000 },
    ],
    dataflows: [
      { id: 'flow-500', destination: 'dest-500', audiences: ['aud-1'], attributes: ['name'] },
      { id: 'flow-400', destination: 'dest-400', audiences: ['aud-1'], attributes: ['name'] },
      { id: 'flow-429', destination: 'dest-429', audiences: ['aud-1'], attributes: ['name'] },
      { id: 'flow-refused', destination: 'dest-refused', audiences: ['aud-1'], attributes: ['name'] },
    ],
  };
}

const enter = (profileId: string): unknown => ({
  profileId,
  eventId: `${profileId}-enter`,
  attributes: { name: `name of ${profileId}` },
  segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
});

beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver({
    respond: (r) => {
      if (r.path === '/always500') return { status: 500, body: 'boom' };
      if (r.path === '/bad') return { status: 400, body: { error: 'bad request' } };
      if (r.path === '/busy' && r.attempt === 1) return { status: 429, headers: { 'retry-after': '1' } };
      return undefined;
    },
  });
  refusedPort = await closedPort();
  dir = tempDir();
  writeEvents(dir, [
    enter('p-1'),
    '{"profileId": "p-x", ', // not JSON
    { eventId: 'no-profile', attributes: { name: 'x' } }, // no profileId
    { profileId: 'p-y', segmentMembership: { ups: { 'aud-1': { status: 'qualified' } } } }, // bad status
    enter('p-2'),
  ]);
  configPath = writeConfig(dir, config({ e500: `${rx.url}/always500`, e400: `${rx.url}/bad`, refused: `http://127.0.0.1:${refusedPort}/nothing` }));
  run = await runCli(['run', '--config', configPath, '--once']);
});
afterEach(() => stopAll());
afterAll(async () => {
  await rx?.close();
  removeTempDirs();
});

const listJson = async (...extra: string[]): Promise<StoredFailure[]> => {
  const r = await runCli(['failed', 'list', '--config', configPath, '--json', ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return jsonLines<StoredFailure>(r.stdout);
};

describe('failed exports', () => {
  it('run --once still exits 0, and the summary counts delivered, failed and rejected', () => {
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/events read\s+5\b/);
    expect(run.stdout).toMatch(/events rejected\s+3\b/);
    expect(run.stdout).toMatch(/exports delivered\s+2\b/);
    expect(run.stdout).toMatch(/exports failed\s+6\b/);
    expect(run.stdout).toMatch(/flow-429: delivered 2, failed 0/);
    expect(run.stdout).toMatch(/flow-500: delivered 0, failed 2/);
  });

  it('a 500 is tried three times with the same Idempotency-Key, then stored', () => {
    const hits = rx.at('/always500');
    expect(hits).toHaveLength(6);
    for (const p of ['p-1', 'p-2']) {
      const mine = hits.filter((h) => (h.body as { name: string }).name === `name of ${p}`);
      expect(mine).toHaveLength(3);
      expect(new Set(mine.map((h) => h.key)).size).toBe(1);
    }
  });

  it('a 400 is tried once, then stored', () => {
    const hits = rx.at('/bad');
    expect(hits).toHaveLength(2);
    expect(new Set(hits.map((h) => h.key)).size).toBe(2);
  });

  it('a 429 with Retry-After is retried after the time it asks for', () => {
    const hits = rx.at('/busy');
    expect(hits).toHaveLength(4);
    for (const key of new Set(hits.map((h) => h.key))) {
      const [first, second, ...more] = hits.filter((h) => h.key === key);
      expect(more).toHaveLength(0);
      expect(first.status).toBe(429);
      expect(second.status).toBe(200);
      // retry.maxDelayMs is 100: waiting a second is the Retry-After being honoured
      expect(second.at - first.at).toBeGreaterThanOrEqual(950);
    }
  });

  it('`failed list` shows each stored request: dataflow, profile, status or error, attempts', async () => {
    const r = await runCli(['failed', 'list', '--config', configPath]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^6 failed requests/m);
    expect(r.stdout).toMatch(/flow-500\s+p-1\s+HTTP 500\s+attempts=3/);
    expect(r.stdout).toMatch(/flow-500\s+p-2\s+HTTP 500\s+attempts=3/);
    expect(r.stdout).toMatch(/flow-400\s+p-1\s+HTTP 400\s+attempts=1/);
    expect(r.stdout).toMatch(/flow-refused\s+p-2\s+\S+\s+attempts=3/);
  });

  it('`failed list --json` holds dataflow, profile, payload, attempts, last status, and a clear reason for a refused connection', async () => {
    const list = await listJson();
    expect(list).toHaveLength(6);
    const byFlow = (id: string): StoredFailure[] => list.filter((f) => f.dataflowId === id).sort((a, b) => a.profileId.localeCompare(b.profileId));

    const f500 = byFlow('flow-500');
    expect(f500.map((f) => [f.profileId, f.attempts, f.lastStatus])).toEqual([['p-1', 3, 500], ['p-2', 3, 500]]);
    for (const f of f500) {
      const sent = rx.at('/always500').find((h) => h.key === f.idempotencyKey);
      expect(sent, 'the stored key is the key that was sent').toBeDefined();
      expect(f.payload).toEqual(sent!.body);
      expect(f.destinationId).toBe('dest-500');
      expect(f.lastError).toMatch(/500/);
      expect(Number.isNaN(Date.parse(f.failedAt))).toBe(false);
    }

    const f400 = byFlow('flow-400');
    expect(f400.map((f) => [f.profileId, f.attempts, f.lastStatus])).toEqual([['p-1', 1, 400], ['p-2', 1, 400]]);

    const refused = byFlow('flow-refused');
    expect(refused.map((f) => [f.profileId, f.attempts, f.lastStatus])).toEqual([['p-1', 3, undefined], ['p-2', 3, undefined]]);
    for (const f of refused) {
      expect(f.lastErrorCode).toBe('ERR_HTTP_CONNECTION');
      expect(f.lastError).toMatch(/ECONNREFUSED|refused/i);
      expect(f.payload).toMatchObject({ name: `name of ${f.profileId}`, segmentMembership: { ups: { 'aud-1': { status: 'realized' } } } });
    }
    expect(byFlow('flow-429')).toHaveLength(0);
  });

  it('`failed list --dataflow` shows that dataflow only', async () => {
    const list = await listJson('--dataflow', 'flow-400');
    expect(list.map((f) => f.dataflowId)).toEqual(['flow-400', 'flow-400']);
  });

  it('`rejected list` names each rejected event with its reason, while the valid events around them were delivered', async () => {
    const [text, json] = await Promise.all([
      runCli(['rejected', 'list', '--config', configPath]),
      runCli(['rejected', 'list', '--config', configPath, '--json']),
    ]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^3 rejected events/m);
    expect(json.code, json.stderr).toBe(0);
    const list = jsonLines<{ sourceKey: string; code: string; reason: string; raw: string }>(json.stdout);
    expect(list.map((r) => r.code)).toEqual(['ERR_EVENT_JSON', 'ERR_EVENT_SHAPE', 'ERR_EVENT_SHAPE']);
    expect(list[0].sourceKey).toMatch(/:2$/);
    expect(list[1].reason).toMatch(/profileId: required/);
    expect(list[1].sourceKey).toMatch(/:3$/);
    expect(list[2].reason).toMatch(/segmentMembership\.ups\.aud-1\.status: must be one of/);
    expect(list[2].sourceKey).toMatch(/:4$/);
    for (const r of list) expect(text.stdout).toContain(r.reason);
    // p-1 (line 1) and p-2 (line 5) were delivered on the healthy dataflow
    const delivered = rx.at('/busy').filter((h) => h.status === 200).map((h) => (h.body as { name: string }).name);
    expect(delivered.sort()).toEqual(['name of p-1', 'name of p-2']);
  });
});

describe('failed replay', () => {
  // Runs after the tests above (same file, in order): the store holds 6 records.
  it('replays with the current config: same Idempotency-Key, delivered ones leave the store, failing ones stay', async () => {
    const [before, unknown] = await Promise.all([
      listJson(),
      runCli(['failed', 'replay', '--config', configPath, '--dataflow', 'no-such-flow']),
    ]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no-such-flow/);
    expect(before).toHaveLength(6);
    const keyOf = (flow: string, p: string): string => before.find((f) => f.dataflowId === flow && f.profileId === p)!.idempotencyKey;

    // the operator fixes two endpoints; dest-400 still answers 400
    writeConfig(dir, config({ e500: `${rx.url}/fixed500`, e400: `${rx.url}/bad`, refused: `${rx.url}/fixedRefused` }));

    // only one dataflow first
    const one = await runCli(['failed', 'replay', '--config', configPath, '--dataflow', 'flow-500']);
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(/replayed 2: delivered 2, failed 0/);
    const fixed500 = rx.at('/fixed500');
    expect(fixed500).toHaveLength(2);
    expect(fixed500.map((h) => h.key).sort()).toEqual([keyOf('flow-500', 'p-1'), keyOf('flow-500', 'p-2')].sort());
    for (const h of fixed500) expect(h.body).toEqual(before.find((f) => f.idempotencyKey === h.key)!.payload);
    expect(rx.at('/fixedRefused')).toHaveLength(0);
    const afterOne = await listJson();
    expect(afterOne.map((f) => f.dataflowId).sort()).toEqual(['flow-400', 'flow-400', 'flow-refused', 'flow-refused']);

    // then everything
    const badBefore = rx.at('/bad').length;
    const all = await runCli(['failed', 'replay', '--config', configPath]);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(/replayed 4: delivered 2, failed 2/);
    expect(rx.at('/fixedRefused').map((h) => h.key).sort()).toEqual([keyOf('flow-refused', 'p-1'), keyOf('flow-refused', 'p-2')].sort());
    const badAgain = rx.at('/bad').slice(badBefore);
    expect(badAgain.map((h) => h.key).sort()).toEqual([keyOf('flow-400', 'p-1'), keyOf('flow-400', 'p-2')].sort());

    const left = await listJson();
    expect(left.map((f) => [f.dataflowId, f.profileId, f.attempts, f.lastStatus, f.replays]).sort()).toEqual([
      ['flow-400', 'p-1', 2, 400, 1],
      ['flow-400', 'p-2', 2, 400, 1],
    ]);
    expect(left.map((f) => f.idempotencyKey).sort()).toEqual([keyOf('flow-400', 'p-1'), keyOf('flow-400', 'p-2')].sort());

    // once the last endpoint is fixed, the store empties
    writeConfig(dir, config({ e500: `${rx.url}/fixed500`, e400: `${rx.url}/fixed400`, refused: `${rx.url}/fixedRefused` }));
    const last = await runCli(['failed', 'replay', '--config', configPath]);
    expect(last.stdout).toMatch(/replayed 2: delivered 2, failed 0/);
    const [empty, text] = await Promise.all([listJson(), runCli(['failed', 'list', '--config', configPath])]);
    expect(empty).toEqual([]);
    expect(text.stdout).toMatch(/^0 failed requests/m);
  });
});
