/**
 * End to end: `explain` (SPEC §12) through the built command, against a real redis-server:
 * `run --once` exports (or not) a few profiles, then `explain` must give, per dataflow, the
 * verdict the worker reached and the exact request it sent (same body, same
 * Idempotency-Key), with secrets masked, also when the secrets' variables are not set.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, removeTempDirs, runCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

const SECRETS = { HD_X_API_KEY: 'explain-api-key-5d1f0a', HD_X_TOKEN: 'explain-bearer-93cc2e' };

let rx: Receiver;
let redis: RedisServer;
let cfg: string;
let memoryCfg: string;

const enter = (id: string) => ({ segmentMembership: { ups: { [id]: { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } } });

beforeAll(async () => {
  await ensureBuilt();
  [rx, redis] = await Promise.all([startReceiver(), startRedisServer()]);
  const dir = tempDir();
  writeEvents(dir, [
    { profileId: 'p-in', eventId: 'e-1', ...enter('aud-1'), attributes: { person: { name: { firstName: 'John' }, gender: 'm' } }, identityMap: { ecid: [{ id: 'ec-1' }] } },
    { profileId: 'p-sib', eventId: 'e-2', ...enter('aud-1') },
    { profileId: 'p-sib', eventId: 'e-3', attributes: { person: { gender: 'f' } } },
    { profileId: 'p-out', eventId: 'e-4', attributes: { person: { name: { firstName: 'Ann' } } } },
  ]);
  const config = {
    source: { kind: 'file', path: 'events.jsonl' },
    store: { kind: 'redis', url: redis.url, keyPrefix: 'explain:' },
    failedRequests: { kind: 'file', path: 'failed.jsonl' },
    audiences: [
      { id: 'aud-1', name: 'Johns', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 },
      { id: 'aud-3', name: 'Other', mergePolicyId: 'mp-2', createdAt: 1, updatedAt: 2 },
    ],
    destinations: [
      {
        id: 'dest-1',
        endpoint: `${rx.url}/explain`,
        queryParameters: 'v=2',
        // x-auth: too short for the value redactor; masked because its name says credential
        headers: 'x-api-key:${HD_X_API_KEY},x-tenant:acme,x-auth:k9z',
        auth: { type: 'bearer', token: '${HD_X_TOKEN}' },
        includeSegmentNames: true,
        retry: { minDelayMs: 20, maxDelayMs: 50 },
      },
    ],
    dataflows: [
      { id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'], attributes: ['person.name.firstName'] },
      { id: 'flow-2', destination: 'dest-1', audiences: ['aud-3'], attributes: ['person.name'] },
    ],
  };
  cfg = writeConfig(dir, config);
  memoryCfg = writeConfig(dir, { ...config, store: { kind: 'memory' } }, 'memory.yaml');
  const r = await runCli(['run', '--config', cfg, '--once', '--json'], { env: SECRETS });
  expect(r.code, r.stderr).toBe(0);
  expect(JSON.parse(r.stdout)).toMatchObject({ eventsRead: 4, delivered: 2, failed: 0 });
});
afterEach(() => stopAll());
afterAll(async () => {
  await Promise.all([rx?.close(), redis?.stop()]);
  removeTempDirs();
});

interface Report {
  profileId: string;
  found: boolean;
  snapshot: Record<string, unknown>;
  last: { eventId?: string; written: string[]; entered: string[] } | null;
  dataflows: Array<{ dataflowId: string; verdict: string; reasons: string[]; why: string[]; request: { url: string; headers: Record<string, string>; body: unknown } }>;
}

describe('explain', () => {
  it('shows the verdict the worker reached and the exact request it sent, secrets masked', async () => {
    const r = await runCli(['explain', '--config', cfg, '--profile', 'p-in', '--json'], { env: SECRETS });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    expect(report).toMatchObject({ profileId: 'p-in', found: true, last: { eventId: 'e-1', entered: ['aud-1'] } });
    expect(report.snapshot).toEqual({
      profileId: 'p-in',
      attributes: { person: { name: { firstName: 'John' }, gender: 'm' } },
      identityMap: { ecid: [{ id: 'ec-1' }] },
      memberships: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } },
    });
    const [f1, f2] = report.dataflows;
    expect(f1).toMatchObject({ dataflowId: 'flow-1', verdict: 'export', reasons: ['membership', 'identity', 'attribute'] });
    expect(f2).toMatchObject({ dataflowId: 'flow-2', verdict: 'none', reasons: [] });
    expect(f2.why[0]).toMatch(/^not in any mapped audience \(mapped: aud-3\)/);

    const sent = rx.at('/explain').filter((q) => (q.body as { identityMap?: unknown }).identityMap && q.headers['idempotency-key'] === f1.request.headers['idempotency-key']);
    expect(sent).toHaveLength(1);
    expect(f1.request.body).toEqual(sent[0].body);
    expect(f1.request.url).toBe(`${rx.url}/explain?v=2`);
    expect(f1.request.headers).toMatchObject({
      'x-api-key': '[REDACTED]',
      'x-tenant': 'acme',
      'x-auth': '[REDACTED]',
      'content-type': 'application/json',
      authorization: 'Bearer [REDACTED]',
    });
    expect(sent[0].headers.authorization).toBe(`Bearer ${SECRETS.HD_X_TOKEN}`); // the receiver got the real one
    for (const s of Object.values(SECRETS)) expect(r.stdout + r.stderr).not.toContain(s);
  });

  it('says why an update did not export, in readable text', async () => {
    const r = await runCli(['explain', '--config', cfg, '--profile', 'p-sib', '--dataflow', 'flow-1'], { env: SECRETS });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^profile p-sib \(store: redis\)/);
    expect(r.stdout).toMatch(/last update e-3:\n\s+wrote\s+person\.gender/);
    expect(r.stdout).toMatch(/dataflow flow-1 → destination dest-1\n\s+last update: NO EXPORT/);
    expect(r.stdout).toContain('no mapped attribute written (wrote: person.gender; mapped: person.name.firstName)');
    expect(r.stdout).toMatch(/POST http:\/\/127\.0\.0\.1:\d+\/explain\?v=2\n\s+user-agent: http-destination\//);
    expect(r.stdout).not.toMatch(/dataflow flow-2/);
    const out = await runCli(['explain', '--config', cfg, '--profile', 'p-out', '--json'], { env: SECRETS });
    const report = JSON.parse(out.stdout) as Report;
    expect(report.dataflows.map((f) => f.verdict)).toEqual(['none', 'none']);
    expect(report.dataflows[0].why[0]).toMatch(/^not in any mapped audience/);
  });

  it('works without the secrets set, showing them as unset', async () => {
    const r = await runCli(['explain', '--config', cfg, '--profile', 'p-in', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    expect(report.dataflows[0].request.headers).toMatchObject({ 'x-api-key': '${HD_X_API_KEY} (unset)', authorization: 'Bearer ${HD_X_TOKEN} (unset)' });
  });

  it('exits 1 for a profile the store does not hold, 2 for an unknown dataflow or a memory store', async () => {
    const [missing, badFlow, memory] = await Promise.all([
      runCli(['explain', '--config', cfg, '--profile', 'p-nobody', '--json']),
      runCli(['explain', '--config', cfg, '--profile', 'p-in', '--dataflow', 'nope']),
      runCli(['explain', '--config', memoryCfg, '--profile', 'p-in']),
    ]);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toEqual({ profileId: 'p-nobody', found: false });
    expect(missing.stderr).toMatch(/p-nobody is not in the store/);
    expect(badFlow.code).toBe(2);
    expect(badFlow.stderr).toMatch(/--dataflow: unknown dataflow "nope"/);
    expect(memory.code).toBe(2);
    expect(memory.stderr).toMatch(/store\.kind: memory/);
  });
});
