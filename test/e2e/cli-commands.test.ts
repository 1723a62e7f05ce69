/**
 * End to end, through the built command (SPEC §12): commands that only read work without the
 * secrets' variables (`run` and `failed replay` still refuse, naming the variable);
 * `audiences import` with `;`/tab CSVs, `--delimiter`, and a non-zero exit when nothing could
 * be imported; `failed replay` with `--limit`, `--since`, `--concurrency` and progress lines;
 * one-line summaries that count everything.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBuilt, jsonLines, removeTempDirs, runCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { startReceiver, type Receiver } from '../support/receiver.js';

const RETRY = { minDelayMs: 10, maxDelayMs: 20 };
const AUD1 = { id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };
const UP = { id: 'aud-up', name: 'Uploaded', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'upload' };
/** Lines between progress reports in these tests (the default, 2 s, is longer than they run). */
const FAST_PROGRESS = { HTTP_DESTINATION_PROGRESS_MS: '100' };

let rx: Receiver;
let healthy = false;

beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver({
    respond: (r) => (r.path === '/flaky' ? (healthy ? { status: 200, delayMs: 150 } : { status: 500 }) : undefined),
  });
});
afterEach(() => stopAll());
afterAll(async () => {
  await rx?.close();
  removeTempDirs();
});

const enter = (profileId: string, n = 0): unknown => ({
  profileId,
  attributes: { n },
  segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
});

function config(endpoint: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    failedRequests: { kind: 'file', path: 'failed.jsonl' },
    audiences: [AUD1, UP],
    destinations: [{ id: 'dest-1', endpoint, retry: RETRY, ...extra }],
    dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'], attributes: ['n'] }],
  };
}

describe('commands that read need no secrets', () => {
  it('validate, failed list and rejected list run with unset variables; run and failed replay exit 2 naming them', async () => {
    const dir = tempDir();
    writeEvents(dir, [enter('p-1'), 'not json']);
    const secretsCfg = {
      headers: 'x-api-key:${HD_E2E_KEY_UNSET},x-tenant:acme',
      auth: { type: 'bearer', token: '${HD_E2E_TOKEN_UNSET}' },
      signing: { secret: '${HD_E2E_SIGNING_UNSET}' },
    };
    const cfg = writeConfig(dir, config(`${rx.url}/ok`, secretsCfg));
    // a failed request and a rejected event to list: run once with the secrets set, endpoint down
    const down = writeConfig(dir, config('http://127.0.0.1:9/down', secretsCfg), 'down.yaml');
    const env = { HD_E2E_KEY_UNSET: 'key-1234567', HD_E2E_TOKEN_UNSET: 'tok-1234567', HD_E2E_SIGNING_UNSET: `whsec_${Buffer.from('0123456789abcdef').toString('base64')}` };
    const first = await runCli(['run', '--config', down, '--once', '--json'], { env });
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ failed: 1, rejected: 1 });

    const [validate, failedList, rejectedList, run, replay] = await Promise.all([
      runCli(['validate', '--config', cfg]),
      runCli(['failed', 'list', '--config', cfg, '--json']),
      runCli(['rejected', 'list', '--config', cfg]),
      runCli(['run', '--config', cfg, '--once']),
      runCli(['failed', 'replay', '--config', cfg]),
    ]);
    expect(validate.code, validate.stderr).toBe(0);
    expect(validate.stdout).toMatch(/is valid/);
    for (const name of ['HD_E2E_KEY_UNSET', 'HD_E2E_TOKEN_UNSET', 'HD_E2E_SIGNING_UNSET']) {
      expect(validate.stdout).toMatch(new RegExp(`WARNING: destinations\\[0\\]\\.[a-z.]+: environment variable ${name} is not set`));
    }
    expect(validate.stdout).toContain('x-api-key: ${HD_E2E_KEY_UNSET} (unset)');
    expect(validate.stdout).toContain('token: ${HD_E2E_TOKEN_UNSET} (unset)');
    expect(validate.stdout).toContain('x-tenant: acme');
    expect(failedList.code, failedList.stderr).toBe(0);
    expect(jsonLines(failedList.stdout)).toHaveLength(1);
    expect(rejectedList.code, rejectedList.stderr).toBe(0);
    expect(rejectedList.stdout).toMatch(/^1 rejected event/);
    for (const r of [run, replay]) {
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/destinations\[0\]\.headers: environment variable HD_E2E_KEY_UNSET is not set/);
      expect(r.stderr).toMatch(/HD_E2E_TOKEN_UNSET/);
    }
    // nothing was sent or changed by the refused commands
    expect(readFileSync(join(dir, 'failed.jsonl'), 'utf8').trim().split('\n')).toHaveLength(1);
  });
});

describe('audiences import', () => {
  function setup(): { dir: string; cfg: string; events: string } {
    const dir = tempDir();
    const events = writeEvents(dir, []);
    return { dir, cfg: writeConfig(dir, config(`${rx.url}/ok`)), events };
  }

  it('imports ;- and tab-separated files (detected) and any delimiter given, with a summary that counts every row', async () => {
    const { dir, cfg, events } = setup();
    writeFileSync(join(dir, 'semi.csv'), 'profileId;ecid\np-1;e1\np-2;e2\n;e3\n');
    writeFileSync(join(dir, 'tab.csv'), 'profileId\tecid\np-3\te3\n');
    writeFileSync(join(dir, 'pipe.csv'), 'profileId|ecid\np-4|e4\n');
    const semi = await runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', join(dir, 'semi.csv')]);
    expect(semi.code, semi.stderr).toBe(0);
    expect(semi.stdout).toMatch(/^imported 2 profiles into aud-up \(2 new, 0 duplicates\) of 3 rows; 1 bad row:\n {2}line 4: profileId is empty\n$/);
    const tab = await runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', join(dir, 'tab.csv')]);
    expect(tab.code, tab.stderr).toBe(0);
    expect(tab.stdout).toMatch(/^imported 1 profiles/);
    const pipe = await runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', '--delimiter', '|', join(dir, 'pipe.csv')]);
    expect(pipe.code, pipe.stderr).toBe(0);
    const lines = readFileSync(events, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { profileId: string; identityMap: unknown });
    expect(lines.map((e) => [e.profileId, e.identityMap])).toEqual([
      ['p-1', { ecid: [{ id: 'e1' }] }],
      ['p-2', { ecid: [{ id: 'e2' }] }],
      ['p-3', { ecid: [{ id: 'e3' }] }],
      ['p-4', { ecid: [{ id: 'e4' }] }],
    ]);
  });

  it('exits non-zero when nothing could be imported, listing the bad rows; a bad --delimiter is bad usage', async () => {
    const { dir, cfg, events } = setup();
    writeFileSync(join(dir, 'bad.csv'), 'profileId,ecid\n,e1\np-2,e2,extra\n');
    writeFileSync(join(dir, 'wrong.csv'), 'profileId;ecid\np-1;e1\n');
    const [bad, wrong, badDelimiter] = await Promise.all([
      runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', join(dir, 'bad.csv')]),
      runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', '--delimiter', ',', join(dir, 'wrong.csv')]),
      runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', '--delimiter', ';;', join(dir, 'wrong.csv')]),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/imported 0 profiles .* of 2 rows; 2 bad rows:\n {2}line 2: profileId is empty\n {2}line 3: expected 2 fields, found 3/);
    expect(bad.stderr).toMatch(/nothing imported from .*bad\.csv/);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/line 1: header: no profileId column \(fields split on ","; use --delimiter/);
    expect(badDelimiter.code).toBe(2);
    expect(badDelimiter.stderr).toMatch(/--delimiter/);
    expect(readFileSync(events, 'utf8')).toBe('');
  });
});

describe('failed replay', () => {
  it('--limit, --since and --concurrency choose what goes and how; progress on stderr with --progress; a summary counting everything', async () => {
    healthy = false;
    const dir = tempDir();
    writeEvents(dir, [enter('p-1', 1), enter('p-2', 1), enter('p-3', 1), enter('p-4', 1), enter('p-5', 1)]);
    const cfg = writeConfig(dir, config(`${rx.url}/flaky`));
    const first = await runCli(['run', '--config', cfg, '--once', '--json']);
    expect(JSON.parse(first.stdout)).toMatchObject({ failed: 5 });
    healthy = true;

    const [future, badSince, badLimit] = await Promise.all([
      runCli(['failed', 'replay', '--config', cfg, '--since', '2999-01-01T00:00:00Z']),
      runCli(['failed', 'replay', '--config', cfg, '--since', 'yesterday']),
      runCli(['failed', 'replay', '--config', cfg, '--limit', '-1']),
    ]);
    expect(future.code, future.stderr).toBe(0);
    expect(future.stdout.trim()).toBe('replayed 0: delivered 0, failed 0 (kept in the store), skipped 0 of unknown dataflows; 5 stored, 5 not selected (--since/--limit)');
    expect(badSince.code).toBe(2);
    expect(badSince.stderr).toMatch(/--since/);
    expect(badLimit.code).toBe(2);

    const quiet = await runCli(['failed', 'replay', '--config', cfg, '--since', '1h', '--limit', '1'], { env: FAST_PROGRESS });
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout.trim()).toBe('replayed 1: delivered 1, failed 0 (kept in the store), skipped 0 of unknown dataflows; 5 stored, 4 not selected (--since/--limit)');
    expect(quiet.stderr).not.toMatch(/failed replay: /); // stderr is not a terminal, no --progress

    const before = rx.at('/flaky').length;
    const loud = await runCli(['failed', 'replay', '--config', cfg, '--concurrency', '1', '--progress'], { env: FAST_PROGRESS });
    expect(loud.code, loud.stderr).toBe(0);
    expect(loud.stdout.trim()).toBe('replayed 4: delivered 4, failed 0 (kept in the store), skipped 0 of unknown dataflows; 4 stored');
    expect(loud.stderr).toMatch(/^failed replay: \d of 4 \(\d+%\), \d+\/s, \d+ s: delivered \d, failed 0, skipped 0$/m);
    // --concurrency 1: one request at a time (each takes 150 ms at the receiver)
    const sent = rx.at('/flaky').slice(before);
    expect(sent).toHaveLength(4);
    for (let i = 1; i < sent.length; i++) expect(sent[i].at).toBeGreaterThanOrEqual(sent[i - 1].answeredAt!);
  });
});
