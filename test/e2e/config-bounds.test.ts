/**
 * Config bounds through the built command (issue 14 item 4): `validate` exits 2 naming the
 * field, and never prints a password it refuses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, removeTempDirs, runCli, tempDir, writeConfig, writeEvents } from '../support/cli.js';

const AUD1 = { id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };
const PASSWORD = 'Cli-Url-Pw-4471';

beforeAll(async () => {
  await ensureBuilt();
});
afterAll(() => removeTempDirs());

function config(destination: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    failedRequests: { kind: 'file', path: 'failed.jsonl' },
    audiences: [AUD1],
    destinations: [{ id: 'dest-1', endpoint: 'http://127.0.0.1:9/in', ...destination }],
    dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
    ...extra,
  };
}

describe('validate refuses out-of-bounds configs with exit 2, naming the field', () => {
  it('durations, rateLimit, a CR/LF token, URL credentials, a device as a TLS file', async () => {
    const cases: Array<{ cfg: Record<string, unknown>; expected: RegExp }> = [
      { cfg: config({ timeoutMs: 3e9 }), expected: /destinations\[0\]\.timeoutMs: must be at most 2147483647 ms/ },
      { cfg: config({}, { worker: { drainTimeoutMs: 1e14 } }), expected: /worker\.drainTimeoutMs: must be at most 2147483647 ms/ },
      {
        cfg: { ...config({}), dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'], rateLimit: 1e-300 }] },
        expected: /dataflows\[0\]\.rateLimit: must be at least 0\.1/,
      },
      { cfg: config({ auth: { type: 'bearer', token: `${PASSWORD}\r\nx-injected: 1` } }), expected: /destinations\[0\]\.auth\.token: must not contain CR, LF/ },
      { cfg: config({ endpoint: `http://user:${PASSWORD}@127.0.0.1:9/in` }), expected: /destinations\[0\]\.endpoint: must not contain credentials/ },
      { cfg: config({ tls: { ca: '/dev/zero' } }), expected: /destinations\[0\]\.tls\.ca: \/dev\/zero is not a regular file/ },
    ];
    const results = await Promise.all(
      cases.map(async (c) => {
        const dir = tempDir();
        writeEvents(dir, []);
        return { c, r: await runCli(['validate', '--config', writeConfig(dir, c.cfg)]) };
      }),
    );
    for (const { c, r } of results) {
      expect(r.code, `${c.expected}\n${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(c.expected);
      expect(r.stderr + r.stdout).not.toContain(PASSWORD);
      expect(r.stdout).toBe('');
    }
  });
});

describe('validate shows the proxy a destination uses, with its credentials masked', () => {
  it('a proxy password from ${ENV} is not printed (nor its Basic form); a literal one exits 2 unprinted', async () => {
    const pw = 'Proxy-Pw-E2e-6120';
    const dir = tempDir();
    writeEvents(dir, []);
    const ok = await runCli(
      ['validate', '--config', writeConfig(dir, config({ proxy: 'http://alice:${HD_E2E_PROXY_PW}@127.0.0.1:3128' }))],
      { env: { HD_E2E_PROXY_PW: pw } },
    );
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/proxy:/);
    expect(ok.stdout).toMatch(/127\.0\.0\.1:3128/);
    expect(ok.stdout + ok.stderr).not.toContain(pw);
    expect(ok.stdout + ok.stderr).not.toContain(Buffer.from(`alice:${pw}`).toString('base64'));

    const dir2 = tempDir();
    writeEvents(dir2, []);
    const bad = await runCli(['validate', '--config', writeConfig(dir2, config({ proxy: `http://alice:${pw}@127.0.0.1:3128` }))]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/destinations\[0\]\.proxy\.url: a proxy password must come from the environment/);
    expect(bad.stdout + bad.stderr).not.toContain(pw);
  });
});
