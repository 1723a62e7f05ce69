/**
 * `${ENV}` for commands that only read (SPEC §12): with `allowUnsetEnv`, an unset variable is
 * a placeholder (listed in `unsetEnv`, never a secret) instead of an error; `requireEnv` gives
 * the errors back for the fields a command needs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireEnv, substituteEnv } from '../../src/config/env.js';
import { resolveConfig, type AppConfig } from '../../src/config/load.js';
import { ConfigError, ConfigErrors } from '../../src/errors.js';
import { generatePki, type TestPki } from '../support/pki.js';

let pki: TestPki;
beforeAll(async () => {
  pki = await generatePki({ passphrase: 'Env-Passphrase-11aa' });
});
afterAll(async () => {
  await pki?.cleanup();
});

function raw(destination: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    source: { kind: 'jetstream', servers: '${NATS_URL}' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [{ id: 'dest-1', endpoint: 'https://collector.example.com/in', ...destination }],
    dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
  };
}
const lenient = (r: unknown, env: NodeJS.ProcessEnv = {}): AppConfig => resolveConfig(r, { env, baseDir: '/base', allowUnsetEnv: true });

describe('unset variables for commands that only read', () => {
  it('become placeholders listed in unsetEnv, not secrets; set ones stay secrets', () => {
    const cfg = lenient(
      raw({
        headers: 'x-api-key:${API_KEY},x-tenant:${TENANT}',
        auth: { type: 'bearer', token: '${TOKEN}' },
        signing: { secret: '${SIGNING}' },
        endpoint: '${ENDPOINT}',
      }),
      { TENANT: 'acme-tenant' },
    );
    expect(cfg.unsetEnv?.map((u) => [u.name, u.path])).toEqual([
      ['NATS_URL', 'source.servers'],
      ['ENDPOINT', 'destinations[0].endpoint'],
      ['API_KEY', 'destinations[0].headers'],
      ['TOKEN', 'destinations[0].auth.token'],
      ['SIGNING', 'destinations[0].signing.secret'],
    ]);
    const d = cfg.destinations[0];
    expect(d.headers).toEqual({ 'x-api-key': '${API_KEY}', 'x-tenant': 'acme-tenant' });
    expect(d.auth).toEqual({ type: 'bearer', token: '${TOKEN}' });
    expect(d.url).toBe('https://unset.invalid/ENDPOINT'); // a URL, so the field validates
    expect(d.signing?.secrets[0]).toMatch(/^whsec_/);
    expect(cfg.secrets).toContain('acme-tenant');
    for (const u of cfg.unsetEnv ?? []) expect(cfg.secrets).not.toContain(u.placeholder);
    expect(cfg.secrets.some((s) => d.signing!.secrets[0].endsWith(s))).toBe(false);
  });

  it('without allowUnsetEnv they are errors, as before', () => {
    expect(() => resolveConfig(raw({ auth: { type: 'bearer', token: '${TOKEN}' } }), { env: {}, baseDir: '/b' })).toThrow(ConfigErrors);
    expect(() => substituteEnv({ a: '${X}' }, {})).toThrow(/a: environment variable X is not set/);
    expect(substituteEnv({ a: '${X}' }, {}, { allowUnset: true })).toEqual({ value: { a: '${X}' }, secrets: [], unset: [{ name: 'X', path: 'a', placeholder: '${X}' }] });
  });

  it('a field that cannot be checked without its variable says so', () => {
    const err = (() => {
      try {
        lenient(raw({ endpoint: '${SCHEME}://collector.example.com/in' }), { NATS_URL: 'nats://x:4222' });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toBe('destinations[0].endpoint: environment variable SCHEME is not set (needed to check this field)');
  });

  it('an unset TLS passphrase does not fail the key check (it cannot be done without it)', () => {
    const tls = { cert: pki.encryptedClient.certPath, key: pki.encryptedClient.keyPath, passphrase: '${TLS_PASS}' };
    expect(lenient(raw({ tls })).unsetEnv?.map((u) => u.name)).toContain('TLS_PASS');
    expect(() => resolveConfig(raw({ tls }), { env: { NATS_URL: 'n', TLS_PASS: 'wrong-one' }, baseDir: '/b' })).toThrow(/passphrase/);
  });

  it('requireEnv reports the unset variables under the given fields only', () => {
    const cfg = lenient(raw({ auth: { type: 'bearer', token: '${TOKEN}' } }));
    expect(() => requireEnv(cfg.unsetEnv, ['store'])).not.toThrow();
    expect(() => requireEnv(cfg.unsetEnv, ['source'])).toThrow('source.servers: environment variable NATS_URL is not set');
    expect(() => requireEnv(cfg.unsetEnv, ['destinations'])).toThrow('destinations[0].auth.token: environment variable TOKEN is not set');
    expect(() => requireEnv(cfg.unsetEnv)).toThrow(ConfigErrors);
    expect(() => requireEnv([], undefined)).not.toThrow();
  });
});
