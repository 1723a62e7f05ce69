/**
 * Config bounds (issue 14 item 4, README "Limits"): values that used to validate and then
 * misbehave at run time are ConfigErrors naming their field, and never echo a secret.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, ConfigErrors } from '../../src/errors.js';
import { LIMITS } from '../../src/config/schema.js';
import { resolveConfig, type AppConfig } from '../../src/config/load.js';
import { generatePki, type TestPki } from '../support/pki.js';

let dir: string;
let pki: TestPki;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hd-bounds-'));
  pki = await generatePki();
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await pki?.cleanup();
});

type Raw = {
  [k: string]: unknown;
  audiences: Array<Record<string, unknown>>;
  destinations: Array<Record<string, unknown>>;
  dataflows: Array<Record<string, unknown>>;
};
function minimal(): Raw {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [{ id: 'dest-1', endpoint: 'https://collector.example.com/profiles' }],
    dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
  };
}
const resolve = (raw: unknown, env: NodeJS.ProcessEnv = {}): AppConfig => resolveConfig(raw, { env, baseDir: dir });

/** Every ConfigError `fn` throws (it must throw one). */
function issues(fn: () => unknown): ConfigError[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigErrors) return err.issues;
    expect(err).toBeInstanceOf(ConfigError);
    return [err as ConfigError];
  }
  throw new Error('expected a config error, nothing was thrown');
}
/** The one problem `fn` reports: its path and its whole text. */
function only(fn: () => unknown): { path: string; message: string } {
  const all = issues(fn);
  expect(all.map((i) => i.message), 'exactly one problem').toHaveLength(1);
  return { path: all[0].path, message: all[0].message };
}

const MAX_MS = 2 ** 31 - 1;

describe('durations: at most 2^31-1 ms (the longest a Node timer waits)', () => {
  const cases: Array<[string, (raw: Raw, v: number) => void]> = [
    ['destinations[0].timeoutMs', (raw, v) => (raw.destinations[0].timeoutMs = v)],
    ['destinations[0].retry.minDelayMs', (raw, v) => (raw.destinations[0].retry = { minDelayMs: v, maxDelayMs: MAX_MS })],
    ['destinations[0].retry.maxDelayMs', (raw, v) => (raw.destinations[0].retry = { maxDelayMs: v })],
    ['destinations[0].retry.retryAfterMaxMs', (raw, v) => (raw.destinations[0].retry = { retryAfterMaxMs: v })],
    ['worker.drainTimeoutMs', (raw, v) => (raw.worker = { drainTimeoutMs: v })],
    ['source.ackWaitMs', (raw, v) => (raw.source = { kind: 'jetstream', ackWaitMs: v })],
  ];

  for (const [path, set] of cases) {
    it(`${path}: 3e9 and 1e14 are refused naming the field; 2^31-1 is accepted`, () => {
      for (const bad of [3e9, 1e14, MAX_MS + 1]) {
        const raw = minimal();
        set(raw, bad);
        const e = only(() => resolve(raw));
        expect(e.path).toBe(path);
        expect(e.message).toMatch(/at most 2147483647 ms/);
      }
      const raw = minimal();
      set(raw, MAX_MS);
      expect(() => resolve(raw)).not.toThrow();
    });
  }
});

describe('rateLimit floor', () => {
  it(`below ${LIMITS.minRateLimit}/s is refused naming the dataflow's rateLimit; ${LIMITS.minRateLimit} is accepted`, () => {
    for (const bad of [1e-300, 0.05, 0]) {
      const raw = minimal();
      raw.dataflows[0].rateLimit = bad;
      const e = only(() => resolve(raw));
      expect(e.path).toBe('dataflows[0].rateLimit');
      expect(e.message).toMatch(/at least 0\.1/);
    }
    const raw = minimal();
    raw.dataflows[0].rateLimit = 0.1;
    expect(resolve(raw).dataflows[0].rateLimit).toBe(0.1);
  });
});

describe('control characters in every value that goes into a request header', () => {
  const SECRET = 'Sekr3t-Xq81';
  const auths: Array<[string, (v: string) => Record<string, unknown>]> = [
    ['token', (v) => ({ type: 'bearer', token: v })],
    ['clientId', (v) => ({ type: 'oauth2-client-credentials', accessTokenUrl: 'https://idp.example/token', clientId: v, clientSecret: 'cs-1234', credentialsType: 'basic' })],
    ['clientSecret', (v) => ({ type: 'oauth2-client-credentials', accessTokenUrl: 'https://idp.example/token', clientId: 'c', clientSecret: v })],
    ['username', (v) => ({ type: 'oauth2-password', accessTokenUrl: 'https://idp.example/token', clientId: 'c', clientSecret: 'cs-1234', username: v, password: 'pw-1234' })],
    ['password', (v) => ({ type: 'oauth2-password', accessTokenUrl: 'https://idp.example/token', clientId: 'c', clientSecret: 'cs-1234', username: 'u', password: v })],
  ];
  for (const [field, auth] of auths) {
    it(`auth.${field} with CR/LF, NUL or TAB inside is refused naming it, and not echoed (also from \${ENV})`, () => {
      for (const bad of [`${SECRET}\r\nx-injected: 1`, `${SECRET}\nmore`, `${SECRET}\0`, `a\t${SECRET}`]) {
        for (const [value, env] of [
          [bad, {}],
          ['${HD_T_SECRET}', { HD_T_SECRET: bad }],
        ] as const) {
          const raw = minimal();
          raw.destinations[0].auth = auth(value);
          const e = only(() => resolve(raw, env));
          expect(e.path).toBe(`destinations[0].auth.${field}`);
          expect(e.message).toMatch(/CR, LF or other control characters/);
          expect(e.message).not.toContain(SECRET);
        }
      }
      const raw = minimal();
      raw.destinations[0].auth = auth(SECRET);
      expect(() => resolve(raw)).not.toThrow();
    });
  }

  it('a ${ENV}-expanded header value with CR/LF is refused naming the header, and not echoed', () => {
    const raw = minimal();
    raw.destinations[0].headers = { 'x-api-key': '${HD_T_KEY}' };
    const e = only(() => resolve(raw, { HD_T_KEY: `${SECRET}\r\nx-injected: 1` }));
    expect(e.path).toBe('destinations[0].headers.x-api-key');
    expect(e.message).not.toContain(SECRET);
  });
});

describe('credentials in endpoint URLs are refused, saying where they go, never echoed', () => {
  const PASSWORD = 'Pw-In-Url-93kd';
  it('endpoint http://user:pass@host', () => {
    for (const endpoint of [`http://user:${PASSWORD}@collector.example.com/in`, `https://user:${PASSWORD}@collector.example.com/in`, 'https://justuser@collector.example.com/in']) {
      const raw = minimal();
      raw.destinations[0].endpoint = endpoint;
      const e = only(() => resolve(raw));
      expect(e.path).toBe('destinations[0].endpoint');
      expect(e.message).toMatch(/must not contain credentials.*auth.*headers/);
      expect(e.message).not.toContain(PASSWORD);
      expect(e.message).not.toContain('justuser');
    }
  });

  it('the same from ${ENV}', () => {
    const raw = minimal();
    raw.destinations[0].endpoint = '${HD_T_URL}';
    const e = only(() => resolve(raw, { HD_T_URL: `https://user:${PASSWORD}@collector.example.com/in` }));
    expect(e.path).toBe('destinations[0].endpoint');
    expect(e.message).not.toContain(PASSWORD);
  });

  it('auth.accessTokenUrl', () => {
    const raw = minimal();
    raw.destinations[0].auth = {
      type: 'oauth2-client-credentials',
      accessTokenUrl: `https://client:${PASSWORD}@idp.example/token`,
      clientId: 'c',
      clientSecret: 'cs-1234',
    };
    const e = only(() => resolve(raw));
    expect(e.path).toBe('destinations[0].auth.accessTokenUrl');
    expect(e.message).toMatch(/must not contain credentials.*auth\.clientId/);
    expect(e.message).not.toContain(PASSWORD);
  });
});

describe('TLS files: regular files under the size cap', () => {
  const withCa = (ca: string): Raw => {
    const raw = minimal();
    raw.destinations[0].tls = { ca };
    return raw;
  };

  it('/dev/zero (a device) is refused naming tls.ca, at once', () => {
    const t0 = Date.now();
    const e = only(() => resolve(withCa('/dev/zero')));
    expect(e.path).toBe('destinations[0].tls.ca');
    expect(e.message).toMatch(/not a regular file/);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('a FIFO nobody writes to is refused naming tls.cert, without hanging', () => {
    const fifo = join(dir, 'cert.fifo');
    execFileSync('mkfifo', [fifo]);
    const raw = minimal();
    raw.destinations[0].tls = { cert: fifo, key: pki.client.keyPath };
    const t0 = Date.now();
    const e = only(() => resolve(raw));
    expect(e.path).toBe('destinations[0].tls.cert');
    expect(e.message).toMatch(/not a regular file/);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });

  it('a folder is refused naming tls.key', () => {
    const raw = minimal();
    raw.destinations[0].tls = { cert: pki.client.certPath, key: dir };
    const e = only(() => resolve(raw));
    expect(e.path).toBe('destinations[0].tls.key');
  });

  it(`a file over ${LIMITS.maxTlsFileBytes} bytes is refused naming tls.ca; one at the cap is read`, () => {
    const big = join(dir, 'big-ca.pem');
    writeFileSync(big, Buffer.alloc(LIMITS.maxTlsFileBytes + 1, 0x41));
    const e = only(() => resolve(withCa(big)));
    expect(e.path).toBe('destinations[0].tls.ca');
    expect(e.message).toMatch(/larger than 1048576 bytes/);
    // At the cap: read (then refused as not a certificate, which proves it was read).
    const atCap = join(dir, 'cap-ca.pem');
    writeFileSync(atCap, Buffer.alloc(LIMITS.maxTlsFileBytes, 0x41));
    expect(only(() => resolve(withCa(atCap))).message).toMatch(/not a usable CA certificate/);
  });

  it('a symlink to a regular file is fine (Kubernetes mounts secrets that way)', () => {
    const link = join(dir, 'ca-link.pem');
    symlinkSync(pki.ca.certPath, link);
    expect(resolve(withCa(link)).destinations[0].tls?.ca?.toString()).toBe(pki.ca.cert);
  });
});

describe('how many dataflows, destinations and audiences', () => {
  const audiences = (n: number): Array<Record<string, unknown>> =>
    Array.from({ length: n }, (_, i) => ({ id: `aud-${i}`, name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }));
  const dataflows = (n: number): Array<Record<string, unknown>> =>
    Array.from({ length: n }, (_, i) => ({ id: `flow-${i}`, destination: 'dest-1', audiences: ['aud-0'] }));

  it(`more than ${LIMITS.maxDataflows} dataflows is refused naming dataflows`, () => {
    const raw = minimal();
    raw.audiences = audiences(1);
    raw.dataflows = dataflows(LIMITS.maxDataflows + 1);
    const e = only(() => resolve(raw));
    expect(e.path).toBe('dataflows');
    expect(e.message).toMatch(/at most 1000 dataflows/);
  });

  it(`more than ${LIMITS.maxDestinations} destinations is refused naming destinations`, () => {
    const raw = minimal();
    raw.destinations = Array.from({ length: LIMITS.maxDestinations + 1 }, (_, i) => ({ id: `dest-${i + 1}`, endpoint: 'https://x.example/in' }));
    const e = only(() => resolve(raw));
    expect(e.path).toBe('destinations');
  });

  it(`more than ${LIMITS.maxAudiences} audiences is refused naming audiences`, () => {
    const raw = minimal();
    raw.audiences = audiences(LIMITS.maxAudiences + 1);
    raw.dataflows = [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-0'] }];
    const e = only(() => resolve(raw));
    expect(e.path).toBe('audiences');
  });

  it('dataflows × audiences over the cap (1000 × 1001) is refused with both counts; 1000 × 1000 passes', () => {
    const raw = minimal();
    raw.audiences = audiences(1_001);
    raw.dataflows = dataflows(1_000);
    const e = only(() => resolve(raw));
    expect(e.path).toBe('dataflows');
    expect(e.message).toMatch(/1000 dataflows × 1001 audiences is more than 1,000,000/);
    raw.audiences = audiences(1_000);
    expect(resolve(raw).dataflows).toHaveLength(1_000);
  });
});

describe('proxy', () => {
  it('a proxy URL string applies to http and https endpoints; noProxy as a list or a string', () => {
    const raw = minimal();
    raw.destinations[0].proxy = 'http://proxy.internal:3128';
    expect(resolve(raw).destinations[0].proxy).toEqual({
      httpProxy: 'http://proxy.internal:3128',
      httpsProxy: 'http://proxy.internal:3128',
      noProxy: '',
      from: 'config',
    });
    raw.destinations[0].proxy = { url: 'http://proxy.internal:3128', noProxy: ['localhost', '.internal'] };
    expect(resolve(raw).destinations[0].proxy?.noProxy).toBe('localhost,.internal');
  });

  it('a bad proxy URL names destinations[0].proxy.url', () => {
    const raw = minimal();
    raw.destinations[0].proxy = 'socks://proxy:1080';
    expect(only(() => resolve(raw)).path).toBe('destinations[0].proxy.url');
    raw.destinations[0].proxy = { url: 'http://p:1', colour: 'blue' };
    expect(only(() => resolve(raw)).path).toBe('destinations[0].proxy.colour');
  });

  it('a password written in the proxy URL is refused, not echoed; from ${ENV} it is accepted and a secret', () => {
    const PASSWORD = 'Proxy-Pw-55x!';
    const raw = minimal();
    raw.destinations[0].proxy = `http://alice:${encodeURIComponent(PASSWORD)}@proxy.internal:3128`;
    const e = only(() => resolve(raw));
    expect(e.path).toBe('destinations[0].proxy.url');
    expect(e.message).toMatch(/must come from the environment/);
    expect(e.message).not.toContain('Proxy-Pw');

    for (const [proxy, env] of [
      ['http://alice:${HD_T_PROXY_PW}@proxy.internal:3128', { HD_T_PROXY_PW: encodeURIComponent(PASSWORD) }],
      ['${HD_T_PROXY_URL}', { HD_T_PROXY_URL: `http://alice:${encodeURIComponent(PASSWORD)}@proxy.internal:3128` }],
    ] as const) {
      raw.destinations[0].proxy = { url: proxy };
      const cfg = resolve(raw, env);
      expect(cfg.destinations[0].proxy?.httpsProxy).toBe(`http://alice:${encodeURIComponent(PASSWORD)}@proxy.internal:3128`);
      expect(cfg.secrets).toContain(PASSWORD);
      expect(cfg.secrets).toContain(encodeURIComponent(PASSWORD));
      expect(cfg.secrets).toContain(Buffer.from(`alice:${PASSWORD}`).toString('base64'));
    }
  });

  it('HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment apply when the destination has no proxy; lowercase first', () => {
    const raw = minimal();
    const cfg = resolve(raw, { HTTPS_PROXY: 'http://upper:3128', https_proxy: 'http://lower:3128', NO_PROXY: 'localhost,.internal' });
    expect(cfg.destinations[0].proxy).toEqual({ httpProxy: '', httpsProxy: 'http://lower:3128', noProxy: 'localhost,.internal', from: 'env' });
    // HTTP_PROXY alone serves https:// endpoints too (as curl and undici do).
    expect(resolve(raw, { HTTP_PROXY: 'http://p:8080' }).destinations[0].proxy).toMatchObject({ httpProxy: 'http://p:8080', httpsProxy: 'http://p:8080' });
    expect(resolve(raw, {}).destinations[0].proxy).toBeUndefined();
  });

  it('the destination proxy wins over the environment (NO_PROXY of the environment does not apply to it)', () => {
    const raw = minimal();
    raw.destinations[0].proxy = 'http://configured:3128';
    const cfg = resolve(raw, { HTTPS_PROXY: 'http://from-env:3128', NO_PROXY: 'collector.example.com' });
    expect(cfg.destinations[0].proxy).toEqual({ httpProxy: 'http://configured:3128', httpsProxy: 'http://configured:3128', noProxy: '', from: 'config' });
  });

  it('credentials in an environment proxy are secrets; a bad one names the variable', () => {
    const cfg = resolve(minimal(), { HTTPS_PROXY: 'http://bob:env-proxy-pw-77@proxy:3128' });
    expect(cfg.secrets).toContain('env-proxy-pw-77');
    const e = only(() => resolve(minimal(), { HTTPS_PROXY: 'not a url' }));
    expect(e.path).toBe('env HTTPS_PROXY');
  });
});
