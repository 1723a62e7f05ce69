import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { DeliveryError } from '../../src/errors.js';
import { createOAuth2Provider, formEncode, type OAuth2AuthConfig } from '../../src/sinks/http/auth/oauth2.js';
import type { AuthProvider } from '../../src/sinks/http/auth/types.js';
import { createRedactor, MASK, processSecrets, SecretRegistry } from '../../src/observability/redact.js';
import { startTokenServer, type TokenServer, type TokenServerOptions } from '../support/token-server.js';

const CLIENT_ID = 'a b:c/é+';
const CLIENT_SECRET = 'cs-S3cr3t a:b/é+&=%~*';
const USERNAME = 'jane doe@acme.com';
const PASSWORD = 'pw-P4ss w:rd/é+&=%';
/** Every value that must never show in an error message or a log entry. */
const SECRETS = [CLIENT_SECRET, PASSWORD, formEncode(CLIENT_SECRET), formEncode(PASSWORD), encodeURIComponent(CLIENT_SECRET)];

let agent: Agent;
const servers: TokenServer[] = [];
const providers: AuthProvider[] = [];
const warnings: Array<{ obj: object; msg: string }> = [];
const logger = { warn: (obj: object, msg: string) => void warnings.push({ obj, msg }) };

beforeAll(() => {
  agent = new Agent({ connections: 8 });
});
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const w of warnings.splice(0)) expectNoSecret(JSON.stringify(w), []);
});
afterAll(async () => {
  await agent.close();
});

async function server(opts: Partial<TokenServerOptions> = {}): Promise<TokenServer> {
  const s = await startTokenServer({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, username: USERNAME, password: PASSWORD, ...opts });
  servers.push(s);
  return s;
}

function clientCredentials(s: { url: string }, extra: Partial<Extract<OAuth2AuthConfig, { type: 'oauth2-client-credentials' }>> = {}): OAuth2AuthConfig {
  return { type: 'oauth2-client-credentials', accessTokenUrl: s.url, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, credentialsType: 'body-form', ...extra };
}

function passwordGrant(s: { url: string }, extra: Partial<Extract<OAuth2AuthConfig, { type: 'oauth2-password' }>> = {}): OAuth2AuthConfig {
  return { type: 'oauth2-password', accessTokenUrl: s.url, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, username: USERNAME, password: PASSWORD, ...extra };
}

function provider(auth: OAuth2AuthConfig, deps: { now?: () => number; timeoutMs?: number } = {}): AuthProvider {
  const p = createOAuth2Provider(auth, { dispatcher: agent, timeoutMs: deps.timeoutMs ?? 5_000, now: deps.now, logger });
  providers.push(p);
  return p;
}

function expectNoSecret(text: string, tokens: string[]): void {
  for (const s of [...SECRETS, ...tokens]) expect(text).not.toContain(s);
  expect(text).not.toMatch(/Basic [A-Za-z0-9+/=]{8,}/);
}

/** The DeliveryError `p` rejects with, checked to hold no secret (nor any issued token). */
async function authError(p: Promise<unknown>, s?: TokenServer): Promise<DeliveryError> {
  const err = await p.then(
    () => {
      throw new Error('expected authorize() to reject');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DeliveryError);
  const e = err as DeliveryError;
  expect(e.code).toBe('ERR_AUTH');
  expectNoSecret(`${e.message} ${String(e.stack)} ${JSON.stringify(e)} ${String((e.cause as Error | undefined)?.message)}`, s?.issued ?? []);
  return e;
}

/** Resolves once `cond` holds (polled), for background work we cannot await directly. */
async function until(cond: () => boolean | Promise<boolean>, ms = 2_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('oauth2-client-credentials, credentialsType body-form', () => {
  it('POSTs grant_type, client_id and client_secret form-encoded and returns a Bearer header', async () => {
    const s = await server();
    const p = provider(clientCredentials(s));
    const headers = await p.authorize();
    expect(headers).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    expect(s.requests).toHaveLength(1);
    const r = s.requests[0];
    expect(r.method).toBe('POST');
    expect(r.path).toBe('/oauth/token');
    expect(r.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(r.headers.accept).toBe('application/json');
    expect(r.headers.authorization).toBeUndefined();
    expect(r.form).toEqual({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET });
    expect(r.rawBody).toBe(
      'grant_type=client_credentials&client_id=a+b%3Ac%2F%C3%A9%2B&client_secret=cs-S3cr3t+a%3Ab%2F%C3%A9%2B%26%3D%25%7E%2A',
    );
  });

  it('sends scope when configured', async () => {
    const s = await server();
    const p = provider(clientCredentials(s, { scope: 'profiles:write read' }));
    await p.authorize();
    expect(s.requests[0].form).toEqual({
      grant_type: 'client_credentials',
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      scope: 'profiles:write read',
    });
    expect(s.requests[0].rawBody).toContain('&scope=profiles%3Awrite+read');
  });

  it('reuses one token for every later request', async () => {
    const s = await server();
    const p = provider(clientCredentials(s));
    const first = await p.authorize();
    for (let i = 0; i < 20; i++) expect(await p.authorize()).toEqual(first);
    expect(s.requests).toHaveLength(1);
  });

  it('makes exactly one token request for 50 concurrent authorize() calls', async () => {
    const s = await server({ delayMs: 100 }); // slow, so all 50 callers really wait at once
    const p = provider(clientCredentials(s));
    const results = await Promise.all(Array.from({ length: 50 }, () => p.authorize()));
    expect(s.requests).toHaveLength(1);
    expect(results).toHaveLength(50);
    expect(new Set(results.map((h) => h.authorization))).toEqual(new Set(['Bearer at-1-client_credentials']));
  });

  it('normalises token_type "bearer" to Bearer and defaults a missing token_type to Bearer', async () => {
    const s = await server({ tokenType: 'bearer' });
    expect(await provider(clientCredentials(s)).authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    const s2 = await server({ override: () => ({ status: 200, body: { access_token: 'xyz123' } }) });
    expect(await provider(clientCredentials(s2)).authorize()).toEqual({ authorization: 'Bearer xyz123' });
  });
});

describe('oauth2-client-credentials, credentialsType basic', () => {
  it('sends Authorization: Basic base64(urlencode(id):urlencode(secret)) and only grant_type (+ scope) in the body', async () => {
    const s = await server();
    const p = provider(clientCredentials(s, { credentialsType: 'basic', scope: 'a b' }));
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    const r = s.requests[0];
    const expected = Buffer.from('a+b%3Ac%2F%C3%A9%2B:cs-S3cr3t+a%3Ab%2F%C3%A9%2B%26%3D%25%7E%2A', 'utf8').toString('base64');
    expect(r.headers.authorization).toBe(`Basic ${expected}`);
    // The server splits at the first ':' — which only works because ':' in the id is encoded.
    expect(r.basic).toMatchObject({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    expect(r.rawBody).toBe('grant_type=client_credentials&scope=a+b');
    expect(r.form).toEqual({ grant_type: 'client_credentials', scope: 'a b' });
    expect(r.method).toBe('POST');
    expect(r.headers['content-type']).toBe('application/x-www-form-urlencoded');
  });

  it('a wrong secret is a non-retryable ERR_AUTH naming host, status and OAuth error, not the secret', async () => {
    const s = await server({ clientSecret: 'the-right-one' });
    const e = await authError(provider(clientCredentials(s, { credentialsType: 'basic' })).authorize(), s);
    expect(e.retryable).toBe(false);
    expect(e.statusCode).toBe(401);
    expect(e.message).toContain(`127.0.0.1:${s.port}`);
    expect(e.message).toContain('401');
    expect(e.message).toContain('invalid_client');
  });
});

describe('oauth2-password', () => {
  it('POSTs grant_type=password, username, password and the client credentials in the body', async () => {
    const s = await server();
    const p = provider(passwordGrant(s, { scope: 'profiles' }));
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-password' });
    const r = s.requests[0];
    expect(r.method).toBe('POST');
    expect(r.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(r.headers.authorization).toBeUndefined();
    expect(r.form).toEqual({
      grant_type: 'password',
      username: USERNAME,
      password: PASSWORD,
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      scope: 'profiles',
    });
    expect(r.rawBody).toContain('username=jane+doe%40acme.com&password=pw-P4ss+w%3Ard%2F%C3%A9%2B%26%3D%25');
  });

  it('a refused password is a non-retryable ERR_AUTH (400 invalid_grant) without the password', async () => {
    const s = await server({ password: 'another' });
    const e = await authError(provider(passwordGrant(s)).authorize(), s);
    expect(e.retryable).toBe(false);
    expect(e.statusCode).toBe(400);
    expect(e.message).toMatch(/400/);
    expect(e.message).toContain('invalid_grant');
    expect(e.message).toContain(`127.0.0.1:${s.port}`);
  });
});

describe('renewal', () => {
  it('renews before expiry in the background, then blocks on an expired token', async () => {
    const s = await server({ expiresIn: 100 }); // renew after 70 s (min(90 s, 100 s - 30 s)), expires at 100 s
    let t = 1_000_000;
    const p = provider(clientCredentials(s), { now: () => t });
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    t += 69_000;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    expect(s.requests).toHaveLength(1);
    t += 2_000; // 71 s: in the renewal window; the current token is still served meanwhile
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    await until(async () => (await p.authorize()).authorization === 'Bearer at-2-client_credentials');
    t += 101_000; // past the second token's expiry: the caller waits for a fresh one
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-3-client_credentials' });
    expect(s.requests).toHaveLength(3);
    expect(s.requests.every((r) => r.form.grant_type === 'client_credentials')).toBe(true);
  });

  it('renews a token too short-lived for "30 s before expiry" at half its lifetime', async () => {
    const s = await server({ expiresIn: 10 }); // renewal at 5 s, expiry at 10 s
    let t = 0;
    const p = provider(clientCredentials(s), { now: () => t });
    await p.authorize();
    t = 4_900;
    await p.authorize();
    expect(s.requests).toHaveLength(1);
    t = 5_100;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    await until(async () => (await p.authorize()).authorization === 'Bearer at-2-client_credentials');
    t = 20_000; // the second token (fetched at 5.1 s) expired at 15.1 s: the caller waits
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-3-client_credentials' });
    expect(s.requests).toHaveLength(3);
  });

  it('keeps a token without expires_in until a 401', async () => {
    const s = await server({ expiresIn: undefined });
    let t = 0;
    const p = provider(clientCredentials(s), { now: () => t });
    const h = await p.authorize();
    t = 30 * 24 * 3600 * 1000;
    expect(await p.authorize()).toEqual(h);
    expect(s.requests).toHaveLength(1);
    expect(p.invalidate(h)).toBe(true);
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-2-client_credentials' });
  });

  it('uses the refresh_token grant when a refresh token was issued (body-form)', async () => {
    const s = await server({ expiresIn: 60, issueRefreshToken: true });
    let t = 0;
    const p = provider(clientCredentials(s), { now: () => t });
    await p.authorize();
    t = 61_000;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-2-refresh_token' });
    expect(s.requests[1].form).toEqual({
      grant_type: 'refresh_token',
      refresh_token: 'rt-1',
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
    });
    // The new refresh token replaces the old one.
    t = 200_000;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-3-refresh_token' });
    expect(s.requests[2].form.refresh_token).toBe('rt-2');
  });

  it('authenticates the refresh_token grant with Basic when credentialsType is basic', async () => {
    const s = await server({ expiresIn: 60, issueRefreshToken: true });
    let t = 0;
    const p = provider(clientCredentials(s, { credentialsType: 'basic' }), { now: () => t });
    await p.authorize();
    t = 61_000;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-2-refresh_token' });
    expect(s.requests[1].rawBody).toBe('grant_type=refresh_token&refresh_token=rt-1');
    expect(s.requests[1].basic).toMatchObject({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  });

  it('falls back to a fresh grant when the refresh_token grant fails, and warns without secrets', async () => {
    const s = await server({ expiresIn: 60, issueRefreshToken: true, acceptRefresh: false });
    let t = 0;
    const p = provider(passwordGrant(s), { now: () => t });
    await p.authorize();
    t = 61_000;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-2-password' });
    expect(s.requests.map((r) => r.form.grant_type)).toEqual(['password', 'refresh_token', 'password']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0].msg).toMatch(/refresh_token grant failed/);
    expectNoSecret(JSON.stringify(warnings), ['rt-1', 'at-1-password']);
  });

  it('a failed background renewal keeps serving the still-valid token and retries later', async () => {
    let down = false;
    const s = await server({ expiresIn: 100, override: () => (down ? { status: 503 } : undefined) });
    let t = 0;
    const p = provider(clientCredentials(s), { now: () => t });
    await p.authorize();
    down = true;
    t = 75_000;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    await until(() => warnings.length === 1);
    expect(warnings[0].msg).toMatch(/renewal failed/);
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
    expect(s.requests).toHaveLength(2); // no new attempt within the back-off
    down = false;
    t = 80_000;
    await p.authorize();
    await until(async () => (await p.authorize()).authorization === 'Bearer at-2-client_credentials');
  });
});

describe('invalidate (401 from the endpoint)', () => {
  it('drops the current token so the next authorize() gets a new one', async () => {
    const s = await server();
    const p = provider(clientCredentials(s));
    const h1 = await p.authorize();
    expect(p.invalidate(h1)).toBe(true);
    const h2 = await p.authorize();
    expect(h2).toEqual({ authorization: 'Bearer at-2-client_credentials' });
    // A late 401 for the old token does not throw away the new one.
    expect(p.invalidate(h1)).toBe(true);
    expect(await p.authorize()).toEqual(h2);
    expect(s.requests).toHaveLength(2);
  });

  it('a storm of 401s for the same token causes one renewal', async () => {
    const s = await server();
    const p = provider(clientCredentials(s));
    const h1 = await p.authorize();
    const results = await Promise.all(
      Array.from({ length: 50 }, async () => {
        p.invalidate({ Authorization: h1.authorization });
        return p.authorize();
      }),
    );
    expect(new Set(results.map((h) => h.authorization))).toEqual(new Set(['Bearer at-2-client_credentials']));
    expect(s.requests).toHaveLength(2);
  });
});

describe('token endpoint failures', () => {
  it('an unreachable endpoint is a retryable ERR_AUTH naming the host', async () => {
    const s = await server();
    await s.close();
    const e = await authError(provider(clientCredentials(s)).authorize());
    expect(e.retryable).toBe(true);
    expect(e.message).toContain(`127.0.0.1:${s.port}`);
    expect(e.message).toContain('ECONNREFUSED');
  });

  it('a timeout is a retryable ERR_AUTH', async () => {
    const s = await server({ override: () => ({ status: 200, body: { access_token: 'late' }, delayMs: 3_000 }) });
    const started = Date.now();
    const e = await authError(provider(clientCredentials(s), { timeoutMs: 200 }).authorize(), s);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(e.retryable).toBe(true);
    expect(e.message).toMatch(/timed out after 200 ms/);
  });

  it('5xx is retryable, 400/401/403 are not; the next call tries again', async () => {
    let status = 503;
    const s = await server({ override: () => (status ? { status, body: { error: 'temporarily_unavailable' } } : undefined) });
    const p = provider(clientCredentials(s));
    const e503 = await authError(p.authorize(), s);
    expect(e503).toMatchObject({ retryable: true, statusCode: 503 });
    expect(e503.message).toContain('temporarily_unavailable');
    for (const st of [400, 401, 403]) {
      status = st;
      const e = await authError(p.authorize(), s);
      expect(e).toMatchObject({ retryable: false, statusCode: st });
      expect(e.message).toContain(`HTTP ${st}`);
    }
    status = 0;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-1-client_credentials' });
  });

  it('never repeats a secret, even when the token endpoint echoes it back', async () => {
    const secret = 'EchoedSecretValue123';
    const s = await server({
      clientSecret: secret,
      override: (r) => ({ status: 401, body: { error: r.form.client_secret, error_description: `bad secret ${r.form.client_secret}` } }),
    });
    const e = await authError(provider(clientCredentials(s, { clientSecret: secret })).authorize(), s);
    expect(e.message).not.toContain(secret);
    expect(e.message).toContain('401');
  });

  it('a 2xx answer without an access_token is a non-retryable ERR_AUTH', async () => {
    const s = await server({ override: () => ({ status: 200, body: '<html>login</html>' }) });
    const e = await authError(provider(clientCredentials(s)).authorize(), s);
    expect(e.retryable).toBe(false);
    expect(e.message).toMatch(/not a JSON object/);
    const s2 = await server({ override: () => ({ status: 200, body: { token_type: 'Bearer' } }) });
    expect((await authError(provider(clientCredentials(s2)).authorize(), s2)).message).toMatch(/no access_token/);
    const s3 = await server({ override: () => ({ status: 200, body: { access_token: 'a\r\nx-injected: 1' } }) });
    expect((await authError(provider(clientCredentials(s3)).authorize(), s3)).message).toMatch(/not a valid header value/);
  });
});

describe('close()', () => {
  it('aborts a token request in flight, resolves promptly, and refuses later calls', async () => {
    // A server that never answers: the only way out is close().
    const hang = createServer(() => undefined);
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(hang.address() as AddressInfo).port}/token`;
    try {
      const p = createOAuth2Provider(clientCredentials({ url }), { dispatcher: agent, timeoutMs: 30_000 });
      const pending = p.authorize();
      const caught = authError(pending);
      await new Promise((r) => setTimeout(r, 50));
      const started = Date.now();
      await p.close();
      expect(Date.now() - started).toBeLessThan(1_000);
      expect((await caught).retryable).toBe(false);
      expect((await authError(p.authorize())).message).toMatch(/closed/);
    } finally {
      hang.closeAllConnections();
      await new Promise((r) => hang.close(r));
    }
  });
});

describe('runtime secrets (issue 14: tokens obtained at run time are masked everywhere)', () => {
  it('registers its client secret, password and every access and refresh token it obtains, before handing a token out', async () => {
    const s = await server({ expiresIn: 60, issueRefreshToken: true });
    const registry = new SecretRegistry();
    let t = 0;
    const p = createOAuth2Provider(passwordGrant(s), { dispatcher: agent, timeoutMs: 5_000, now: () => t, secrets: registry });
    providers.push(p);
    expect(registry.has(CLIENT_SECRET)).toBe(true);
    expect(registry.has(PASSWORD)).toBe(true);
    // a redactor made before any token exists (the logger's, the sink's) masks them as they come
    const redactor = createRedactor([], { registry });
    const first = await p.authorize();
    expect(first).toEqual({ authorization: 'Bearer at-1-password' });
    expect(registry.has('at-1-password')).toBe(true);
    expect(registry.has('rt-1')).toBe(true);
    t = 61_000;
    expect(await p.authorize()).toEqual({ authorization: 'Bearer at-2-refresh_token' });
    for (const v of ['at-1-password', 'at-2-refresh_token', 'Bearer at-2-refresh_token']) expect(registry.has(v)).toBe(true);
    expect(registry.has('rt-2')).toBe(true); // the refresh token issued with the second token
    const echo = `auth=${encodeURIComponent('Bearer at-2-refresh_token')} old=${Buffer.from('at-1-password').toString('base64url')} rt=rt-2`;
    expect(redactor.text(echo)).toBe(`auth=${MASK} old=${MASK} rt=${MASK}`);
  });

  it('registers in the process registry by default', async () => {
    const s = await server({ expiresIn: 60 });
    const p = createOAuth2Provider(clientCredentials(s), { dispatcher: agent, timeoutMs: 5_000 });
    providers.push(p);
    await p.authorize();
    expect(processSecrets.has(s.issued[0]!)).toBe(true);
  });
});
