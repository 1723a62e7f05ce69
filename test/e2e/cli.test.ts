/**
 * End to end: the command line itself (SPEC §11, §12). Config errors exit 2 naming the
 * field; bad usage exits 2; `validate` masks secrets; `run` follows a growing file and
 * drains in-flight exports on SIGTERM; `audiences import` feeds a custom upload through the
 * source.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBuilt, logLines, removeTempDirs, runCli, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { now, startReceiver, type Receiver } from '../support/receiver.js';

const RETRY = { minDelayMs: 20, maxDelayMs: 100 };
const AUD1 = { id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };

let rx: Receiver;

beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver({
    respond: (r) => (r.path === '/slow' ? { status: 200, delayMs: 1_200 } : undefined),
  });
});
afterEach(() => stopAll());
afterAll(async () => {
  await rx?.close();
  removeTempDirs();
});

function baseConfig(destination: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    failedRequests: { kind: 'file', path: 'failed.jsonl' },
    audiences: [AUD1],
    destinations: [{ id: 'dest-1', endpoint: `${rx.url}/ok`, retry: RETRY, ...destination }],
    dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
  };
}

const enter = (profileId: string): unknown => ({
  profileId,
  segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
});

describe('config errors and usage', () => {
  it('a bad config exits 2 with a message naming the field', async () => {
    const cases: Array<{ destination: Record<string, unknown>; expected: RegExp }> = [
      {
        destination: { auth: { type: 'oauth2-client-credentials', accessTokenUrl: 'http://127.0.0.1:9/token', clientId: 'c', credentialsType: 'basic' } },
        expected: /destinations\[0\]\.auth\.clientSecret: required/,
      },
      { destination: { colour: 'blue' }, expected: /destinations\[0\]\.colour: unknown key/ },
      { destination: { endpoint: 'ftp://example.com/in' }, expected: /destinations\[0\]\.endpoint: must be an http:\/\/ or https:\/\/ URL/ },
      { destination: { endpoint: 'not a url' }, expected: /destinations\[0\]\.endpoint: / },
      { destination: { headers: { 'x-evil': 'a\r\nx-injected: 1' } }, expected: /destinations\[0\]\.headers\.x-evil: .*CR or LF/ },
    ];
    const results = await Promise.all(
      cases.map(async (c) => {
        const dir = tempDir();
        writeEvents(dir, []);
        const cfg = writeConfig(dir, baseConfig(c.destination));
        return { c, r: await runCli(['validate', '--config', cfg]) };
      }),
    );
    for (const { c, r } of results) {
      expect(r.code, `${c.expected}\n${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(c.expected);
      expect(r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/); // a message, not a stack trace
      expect(r.stdout).toBe('');
    }
  });

  it('run refuses a bad config the same way, before doing anything', async () => {
    const dir = tempDir();
    writeEvents(dir, [enter('p-1')]);
    const cfg = writeConfig(dir, { ...baseConfig(), dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'], rateLimit: 20_000 }] });
    const before = rx.requests.length;
    const r = await runCli(['run', '--config', cfg, '--once']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/dataflows\[0\]\.rateLimit: .*10000/);
    expect(rx.requests.length).toBe(before);
  });

  it('an unknown command, a missing --config or a config file that does not exist exits 2', async () => {
    const [unknown, noConfig, noConfigList, missingFile] = await Promise.all([
      runCli(['frobnicate']),
      runCli(['run', '--once']),
      runCli(['failed', 'list']),
      runCli(['validate', '--config', join(tempDir(), 'nope.yaml')]),
    ]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/frobnicate/);
    expect(noConfig.code).toBe(2);
    expect(noConfig.stderr).toMatch(/--config/);
    expect(noConfigList.code).toBe(2);
    expect(noConfigList.stderr).toMatch(/--config/);
    expect(missingFile.code).toBe(2);
    expect(missingFile.stderr).toMatch(/nope\.yaml/);
  });

  it('validate prints the config it would run, with every secret masked', async () => {
    const dir = tempDir();
    writeEvents(dir, []);
    const secrets = {
      token: 'validate-bearer-9af1c2',
      apiKey: 'validate-api-key-77e0',
      clientSecret: 'validate-client-secret-31b8',
      password: 'validate-password-c4d2',
      signing: `whsec_${Buffer.from('validate-signing-key-0123456789').toString('base64')}`,
    };
    const cfg = writeConfig(dir, {
      ...baseConfig(),
      destinations: [
        { id: 'dest-1', endpoint: `${rx.url}/ok`, auth: { type: 'bearer', token: secrets.token }, headers: 'x-api-key:${HD_E2E_API_KEY},x-tenant:acme', signing: { secret: secrets.signing } },
        {
          id: 'dest-2',
          endpoint: `${rx.url}/other`,
          auth: { type: 'oauth2-password', accessTokenUrl: `${rx.url}/token`, clientId: 'client-2', clientSecret: secrets.clientSecret, username: 'user-2', password: secrets.password },
        },
      ],
    });
    const r = await runCli(['validate', '--config', cfg], { env: { HD_E2E_API_KEY: secrets.apiKey } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/is valid/);
    expect(r.stdout).toContain(`${rx.url}/ok`);
    expect(r.stdout).toContain('x-tenant');
    expect(r.stdout).toContain('client-2');
    expect(r.stdout).toContain('[REDACTED]');
    const all = r.stdout + r.stderr;
    for (const s of [...Object.values(secrets), secrets.signing.slice('whsec_'.length)]) {
      expect(all).not.toContain(s);
      expect(all).not.toContain(Buffer.from(s).toString('base64'));
    }
  });

  it('warns when a destination turns off verification of the server certificate', async () => {
    const dir = tempDir();
    writeEvents(dir, []);
    const on = writeConfig(dir, { ...baseConfig(), destinations: [{ id: 'dest-1', endpoint: `${rx.url}/ok`, tls: {} }] }, 'on.yaml');
    const off = writeConfig(dir, { ...baseConfig(), destinations: [{ id: 'dest-1', endpoint: `${rx.url}/ok`, tls: { rejectUnauthorized: false } }] }, 'off.yaml');
    const quiet = await runCli(['validate', '--config', on]);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout).not.toMatch(/WARNING/);
    const loud = await runCli(['validate', '--config', off]);
    expect(loud.code, loud.stderr).toBe(0);
    expect(loud.stdout).toMatch(/WARNING: destinations dest-1: tls.rejectUnauthorized is false/);
    const run = await runCli(['run', '--config', off, '--once']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/rejectUnauthorized is false/);
  });
});

describe('run (no --once)', () => {
  it('follows lines appended to the file and, on SIGTERM, drains in-flight exports and exits 0', async () => {
    const dir = tempDir();
    const events = writeEvents(dir, [enter('p-1'), enter('p-2')]);
    const cfg = writeConfig(dir, baseConfig({ endpoint: `${rx.url}/slow` }));
    const slow = (): typeof rx.requests => rx.at('/slow');

    const worker = startCli(['run', '--config', cfg]);
    await rx.waitFor(() => slow().length === 2 && slow().every((r) => r.status === 200), 20_000);

    appendFileSync(events, `${JSON.stringify(enter('p-3'))}\n${JSON.stringify(enter('p-4'))}\n`);
    await rx.waitFor(() => slow().length === 4, 10_000);
    // both new exports are in flight (the receiver holds them 1.2 s): stop now
    expect(slow().slice(2).every((r) => r.status === undefined)).toBe(true);
    const signalledAt = now();
    worker.signal('SIGTERM');
    const result = await worker.exited;
    const exitedAt = now();

    expect(result.code, result.stderr).toBe(0);
    expect(result.signal).toBeNull();
    // it waited for the answers before exiting
    for (const r of slow().slice(2)) {
      expect(r.status).toBe(200);
      expect(r.answeredAt!).toBeGreaterThan(signalledAt);
      expect(r.answeredAt!).toBeLessThanOrEqual(exitedAt);
    }
    const stopped = logLines(result.stderr).find((l) => l.msg === 'worker stopped') as { summary?: Record<string, unknown> } | undefined;
    expect(stopped, result.stderr).toBeDefined();
    expect(stopped!.summary).toMatchObject({ eventsRead: 4, delivered: 4, failed: 0, abandoned: 0 });
    const failed = join(dir, 'failed.jsonl');
    expect(existsSync(failed) ? readFileSync(failed, 'utf8').trim() : '').toBe('');
    for (const r of slow()) expect(r.body).toMatchObject({ segmentMembership: { ups: { 'aud-1': { status: 'realized' } } } });
  });
});

describe('audiences import', () => {
  it('appends membership events for an upload audience, reports bad rows by line, and run --once exports them', async () => {
    const dir = tempDir();
    const events = writeEvents(dir, [{ profileId: 'p-0', attributes: { a: 1 } }]);
    const cfg = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      failedRequests: { kind: 'file', path: 'failed.jsonl' },
      audiences: [
        { id: 'aud-up', name: 'Uploaded list', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'upload' },
        { id: 'aud-seg', name: 'Segment', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'segmentation' },
      ],
      destinations: [{ id: 'dest-1', endpoint: `${rx.url}/upload`, retry: RETRY, includeSegmentNames: true }],
      dataflows: [{ id: 'flow-up', destination: 'dest-1', audiences: ['aud-up'] }],
    });
    const csv = join(dir, 'users.csv');
    writeFileSync(csv, ['profileId,ecid,email', 'p-u1,ecid-u1,', 'p-u2,ecid-u2,u2@example.com', ',ecid-bad,', 'p-u4,a,b,c', '"p-u5",ecid-u5,', ''].join('\n'));

    const [imported, wrongOrigin, unknownAudience] = await Promise.all([
      runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-up', csv]),
      runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-seg', csv]),
      runCli(['audiences', 'import', '--config', cfg, '--audience', 'aud-nope', csv]),
    ]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toMatch(/imported 3 profiles into aud-up/);
    expect(imported.stdout).toMatch(/line 4: .*profileId/);
    expect(imported.stdout).toMatch(/line 5: .*fields/);
    expect(imported.stdout).not.toMatch(/line [1236]:/);
    expect(wrongOrigin.code).toBe(2);
    expect(wrongOrigin.stderr).toMatch(/aud-seg/);
    expect(unknownAudience.code).toBe(2);
    expect(unknownAudience.stderr).toMatch(/aud-nope/);
    // only the successful import wrote to the source
    expect(readFileSync(events, 'utf8').trim().split('\n')).toHaveLength(4);

    const r = await runCli(['run', '--config', cfg, '--once', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim())).toMatchObject({ eventsRead: 4, rejected: 0, delivered: 3, failed: 0 });
    const got = rx.at('/upload').map((h) => h.body as { identityMap: Record<string, Array<{ id: string }>>; segmentMembership: { ups: Record<string, { status: string; name?: string }> } });
    expect(got.map((b) => b.identityMap).sort((a, b) => a.ecid[0].id.localeCompare(b.ecid[0].id))).toEqual([
      { ecid: [{ id: 'ecid-u1' }] },
      { ecid: [{ id: 'ecid-u2' }], email: [{ id: 'u2@example.com' }] },
      { ecid: [{ id: 'ecid-u5' }] },
    ]);
    for (const b of got) {
      expect(Object.keys(b.segmentMembership.ups)).toEqual(['aud-up']);
      expect(b.segmentMembership.ups['aud-up']).toMatchObject({ status: 'realized', name: 'Uploaded list' });
    }
  });
});
