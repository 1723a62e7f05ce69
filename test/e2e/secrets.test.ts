/**
 * THE LEAK TEST (issue 4, SPEC §5): one config with every kind of secret — a bearer token
 * (written in the config), OAuth2 client credentials (Basic), the OAuth2 password grant
 * against real token servers, an `x-api-key` header, a header with an innocent name and a
 * query parameter from `${ENV}` (README: every value from the environment is a secret), a
 * Standard Webhooks signing secret, an mTLS client key under a passphrase — and failures on
 * every path (a 500 and a 401 that echo the request back, a token endpoint answering 401, an
 * unreachable endpoint). Every command an operator would run is run with debug logging; then
 * every byte of their stdout/stderr and every file they wrote is searched for each secret in
 * the forms it could take (raw, base64, URL/form-encoded, JSON-escaped) and for the access
 * tokens issued: none may be found. The receivers check the credentials really were sent, so
 * the search is not vacuous.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHmac, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { verifyWebhook } from '../../src/sinks/http/signing.js';
import { ensureBuilt, jsonLines, removeTempDirs, runCli, stopAll, tempDir, writeConfig, writeEvents, type CliResult } from '../support/cli.js';
import { generatePki, type TestPki } from '../support/pki.js';
import { closedPort, startReceiver, type ReceivedRequest, type Receiver } from '../support/receiver.js';
import { startTokenServer, type TokenServer } from '../support/token-server.js';

const RETRY = { minDelayMs: 20, maxDelayMs: 100 };
const rnd = (): string => randomBytes(9).toString('hex');

/** Every secret of the config, by name. Chosen with characters that change when encoded. */
const S = {
  bearer: `bt-${rnd()}`, // literal in the config file
  bearerMtls: `bt2-${rnd()}`,
  bearerDown: `bt3-${rnd()}`,
  apiKey: `ak-${rnd()}`,
  partnerSig: `ps-${rnd()}`, // a header from ${ENV} whose name does not look secret
  querySecret: `qs/${rnd()}:x`,
  ccClientSecret: `cs-${rnd()}:/+&= %`,
  wrongClientSecret: `wcs-${rnd()}&=`,
  pwClientSecret: `pcs-${rnd()}`,
  password: `pw-${rnd()}!#/ é`,
  passphrase: `pp-${rnd()}`,
  signing: `whsec_${randomBytes(32).toString('base64')}`,
};
const CC_CLIENT_ID = 'cc client:1';
const PW_CLIENT_ID = 'pw-client';
const USERNAME = 'user@example.com';

let pki: TestPki;
let rx: Receiver;
let mrx: Receiver;
let tsCc: TokenServer;
let tsPw: TokenServer;
let cfgDir: string;
let dataDir: string;
let configPath: string;
const outputs: Array<{ command: string; result: CliResult }> = [];
const formEncode = (s: string): string => new URLSearchParams({ s }).toString().slice(2);

async function cli(...args: string[]): Promise<CliResult> {
  const result = await runCli([...args, '--config', configPath], {
    env: {
      HD_BEARER_MTLS: S.bearerMtls,
      HD_BEARER_DOWN: S.bearerDown,
      HD_API_KEY: S.apiKey,
      HD_PARTNER_SIG: S.partnerSig,
      HD_QUERY_SECRET: S.querySecret,
      HD_CC_SECRET: S.ccClientSecret,
      HD_WRONG_SECRET: S.wrongClientSecret,
      HD_PW_CLIENT_SECRET: S.pwClientSecret,
      HD_PASSWORD: S.password,
      HD_KEY_PASS: S.passphrase,
      HD_SIGNING: S.signing,
    },
  });
  outputs.push({ command: args.join(' '), result });
  // what the command left on disk, as it was right after it (a later replay rewrites the store)
  snapshotFiles(dataDir, `after ${args.join(' ')}`);
  return result;
}

const files: Array<{ where: string; text: string }> = [];
function snapshotFiles(d: string, when: string): void {
  for (const name of readdirSync(d)) {
    const p = join(d, name);
    if (statSync(p).isDirectory()) snapshotFiles(p, when);
    else files.push({ where: `${p} (${when})`, text: readFileSync(p, 'utf8') });
  }
}

/** A receiver script: answers echo the request back on the failure paths (as many real servers do). */
const echo = (r: ReceivedRequest): string =>
  `rejected ${r.url} (sig ${String(r.query.get('sig'))}) authorization=${String(r.headers.authorization)} ` +
  `x-api-key=${String(r.headers['x-api-key'])} x-partner-sig=${String(r.headers['x-partner-sig'])}`;
const profileOf = (r: ReceivedRequest): string => (r.body as { person?: { name?: { firstName?: string } } })?.person?.name?.firstName ?? '';
let bearerFailsFor = new Set(['p-2']);

beforeAll(async () => {
  await ensureBuilt();
  pki = await generatePki({ passphrase: S.passphrase });
  rx = await startReceiver({
    respond: (r) => {
      if (r.path === '/bearer' && bearerFailsFor.has(profileOf(r))) return { status: 500, body: echo(r) };
      if (r.path === '/cc' && profileOf(r) === 'p-2') return { status: 401, body: { error: 'invalid_token', detail: echo(r) } };
      return undefined;
    },
  });
  mrx = await startReceiver({ https: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca.cert, requestCert: true } });
  tsCc = await startTokenServer({
    clientId: CC_CLIENT_ID,
    clientSecret: S.ccClientSecret,
    // the wrong secret is refused, with the secret echoed in the error (a careless IdP)
    override: (req) =>
      req.form.client_secret === S.wrongClientSecret
        ? { status: 401, body: { error: 'invalid_client', error_description: `unknown secret ${req.form.client_secret}` } }
        : undefined,
  });
  tsPw = await startTokenServer({ clientId: PW_CLIENT_ID, clientSecret: S.pwClientSecret, username: USERNAME, password: S.password });
  const downPort = await closedPort();

  cfgDir = tempDir('hd-e2e-secrets-cfg-');
  dataDir = tempDir('hd-e2e-secrets-data-');
  const flow = (id: string, destination: string) => ({ id, destination, audiences: ['aud-1'], attributes: ['person.name.firstName'] });
  configPath = writeConfig(cfgDir, {
    source: { kind: 'file', path: 'events.jsonl' },
    failedRequests: { kind: 'file', path: join(dataDir, 'failed.jsonl') },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [
      {
        id: 'dest-bearer',
        endpoint: `${rx.url}/bearer`,
        headers: 'x-api-key:${HD_API_KEY},x-tenant:acme,x-partner-sig:${HD_PARTNER_SIG}',
        queryParameters: 'sig=${HD_QUERY_SECRET}&v=1',
        auth: { type: 'bearer', token: S.bearer },
        retry: RETRY,
      },
      {
        id: 'dest-cc',
        endpoint: `${rx.url}/cc`,
        auth: { type: 'oauth2-client-credentials', accessTokenUrl: tsCc.url, clientId: CC_CLIENT_ID, clientSecret: '${HD_CC_SECRET}', credentialsType: 'basic' },
        retry: RETRY,
      },
      {
        id: 'dest-pw',
        endpoint: `${rx.url}/pw`,
        auth: { type: 'oauth2-password', accessTokenUrl: tsPw.url, clientId: PW_CLIENT_ID, clientSecret: '${HD_PW_CLIENT_SECRET}', username: USERNAME, password: '${HD_PASSWORD}' },
        retry: RETRY,
      },
      {
        id: 'dest-badtoken',
        endpoint: `${rx.url}/badtoken`,
        auth: { type: 'oauth2-client-credentials', accessTokenUrl: tsCc.url, clientId: CC_CLIENT_ID, clientSecret: '${HD_WRONG_SECRET}', credentialsType: 'body-form' },
        retry: RETRY,
      },
      {
        id: 'dest-mtls',
        endpoint: `${mrx.url}/signed`,
        auth: { type: 'bearer', token: '${HD_BEARER_MTLS}' },
        tls: { cert: pki.encryptedClient.certPath, key: pki.encryptedClient.keyPath, ca: pki.ca.certPath, passphrase: '${HD_KEY_PASS}' },
        signing: { secret: '${HD_SIGNING}' },
        retry: RETRY,
      },
      {
        id: 'dest-down',
        endpoint: `http://127.0.0.1:${downPort}/down?x=1`,
        queryParameters: 'sig=${HD_QUERY_SECRET}',
        auth: { type: 'bearer', token: '${HD_BEARER_DOWN}' },
        retry: RETRY,
        timeoutMs: 2_000,
      },
    ],
    dataflows: [
      flow('flow-bearer', 'dest-bearer'),
      flow('flow-cc', 'dest-cc'),
      flow('flow-pw', 'dest-pw'),
      flow('flow-badtoken', 'dest-badtoken'),
      flow('flow-mtls', 'dest-mtls'),
      flow('flow-down', 'dest-down'),
    ],
    log: { level: 'debug' },
  });
  const enter = (p: string) => ({
    profileId: p,
    attributes: { person: { name: { firstName: p } } },
    segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
  });
  writeEvents(cfgDir, [enter('p-1'), '{"profileId": ', { attributes: {} }, enter('p-2')]);
}, 60_000);

afterEach(() => stopAll());
afterAll(async () => {
  await Promise.all([rx?.close(), mrx?.close(), tsCc?.close(), tsPw?.close()]);
  await pki?.cleanup();
  removeTempDirs();
});

interface Failure {
  dataflowId: string;
  profileId: string;
  attempts: number;
  lastStatus?: number;
  lastErrorCode: string;
  lastError: string;
}

describe('no secret leaks, with every secret type and failures on every path', () => {
  it('runs validate, run --once, failed list (text, --json), rejected list, failed replay', async () => {
    const validate = await cli('validate');
    expect(validate.code, validate.stderr).toBe(0);

    const run = await cli('run', '--once');
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/events rejected\s+2\b/);
    expect(run.stdout).toMatch(/exports delivered\s+6\b/); // bearer p-1, cc p-1, pw ×2, mtls ×2
    expect(run.stdout).toMatch(/exports failed\s+6\b/); // bearer p-2, cc p-2, badtoken ×2, down ×2

    const [list, listJson, rejected, rejectedJson] = await Promise.all([
      cli('failed', 'list'),
      cli('failed', 'list', '--json'),
      cli('rejected', 'list'),
      cli('rejected', 'list', '--json'),
    ]);
    for (const r of [list, listJson, rejected, rejectedJson]) expect(r.code, r.stderr).toBe(0);
    const failures = jsonLines<Failure>(listJson.stdout);
    expect(failures.map((f) => `${f.dataflowId}/${f.profileId}`).sort()).toEqual([
      'flow-badtoken/p-1',
      'flow-badtoken/p-2',
      'flow-bearer/p-2',
      'flow-cc/p-2',
      'flow-down/p-1',
      'flow-down/p-2',
    ]);
    const byFlow = (id: string): Failure[] => failures.filter((f) => f.dataflowId === id);
    expect(byFlow('flow-bearer')[0]).toMatchObject({ lastStatus: 500, attempts: 3 });
    expect(byFlow('flow-cc')[0]).toMatchObject({ lastStatus: 401 });
    for (const f of byFlow('flow-badtoken')) expect(f.lastErrorCode).toBe('ERR_AUTH');
    for (const f of byFlow('flow-down')) expect(f.lastErrorCode).toBe('ERR_HTTP_CONNECTION');
    expect(rejected.stdout).toMatch(/^2 rejected events/m);

    // replay: the bearer endpoint works now; the other failures fail again (and are written again)
    bearerFailsFor = new Set();
    const replay = await cli('failed', 'replay');
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toMatch(/replayed 6: delivered 1, failed 5/);
    const after = await cli('failed', 'list', '--json');
    expect(jsonLines<Failure>(after.stdout)).toHaveLength(5);
  });

  it('the receivers got the right credentials (the search below is not vacuous)', () => {
    // bearer + x-api-key + query secret
    const bearer = rx.at('/bearer');
    expect(bearer.length).toBeGreaterThanOrEqual(5); // p-1, p-2 ×3, replay
    for (const r of bearer) {
      expect(r.headers.authorization).toBe(`Bearer ${S.bearer}`);
      expect(r.headers['x-api-key']).toBe(S.apiKey);
      expect(r.headers['x-partner-sig']).toBe(S.partnerSig);
      expect(r.query.get('sig')).toBe(S.querySecret);
    }
    // client credentials with Basic: the token server saw the encoded id and secret; the endpoint the token
    const ccTokenReqs = tsCc.requests.filter((q) => q.basic !== undefined);
    expect(ccTokenReqs.length).toBeGreaterThanOrEqual(1);
    for (const q of ccTokenReqs) {
      expect(q.basic).toMatchObject({ clientId: CC_CLIENT_ID, clientSecret: S.ccClientSecret });
      expect(q.headers.authorization).toBe(`Basic ${Buffer.from(`${formEncode(CC_CLIENT_ID)}:${formEncode(S.ccClientSecret)}`).toString('base64')}`);
      expect(q.form.grant_type).toBe('client_credentials');
    }
    const cc = rx.at('/cc');
    expect(cc.length).toBeGreaterThanOrEqual(3); // p-1; p-2, renewed once on 401 and resent
    const ccIssued = tsCc.issued.filter((tkn) => tkn.endsWith('client_credentials'));
    for (const r of cc) expect(ccIssued.map((tkn) => `Bearer ${tkn}`)).toContain(r.headers.authorization);
    expect(ccIssued.length).toBeGreaterThanOrEqual(2); // renewed on the 401
    // the wrong secret went to the token server in the body, and was refused; its endpoint never saw a request
    expect(tsCc.requests.some((q) => q.form.client_secret === S.wrongClientSecret)).toBe(true);
    expect(rx.at('/badtoken')).toHaveLength(0);
    // password grant
    const pwTokenReqs = tsPw.requests;
    expect(pwTokenReqs.length).toBeGreaterThanOrEqual(1);
    for (const q of pwTokenReqs) {
      expect(q.form).toMatchObject({ grant_type: 'password', username: USERNAME, password: S.password, client_id: PW_CLIENT_ID, client_secret: S.pwClientSecret });
    }
    const pw = rx.at('/pw');
    expect(pw).toHaveLength(2);
    for (const r of pw) expect(tsPw.issued.map((tkn) => `Bearer ${tkn}`)).toContain(r.headers.authorization);
    // mTLS with the passphrase-protected key, bearer, and signatures that verify
    const signed = mrx.at('/signed');
    expect(signed).toHaveLength(2);
    const key = Buffer.from(S.signing.slice('whsec_'.length), 'base64');
    for (const r of signed) {
      expect(r.clientCertCN).toBe('test-client');
      expect(r.headers.authorization).toBe(`Bearer ${S.bearerMtls}`);
      const id = String(r.headers['webhook-id']);
      const ts = String(r.headers['webhook-timestamp']);
      const sig = String(r.headers['webhook-signature']);
      expect(id).toBe(r.key);
      expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(300);
      expect(verifyWebhook({ secrets: [S.signing], id, timestamp: ts, body: r.rawBody, signature: sig })).toBe(true);
      // independently: v1, + base64 HMAC-SHA256 over `${id}.${timestamp}.${body}` with the decoded key
      const expected = createHmac('sha256', key).update(`${id}.${ts}.${r.rawBody}`).digest('base64');
      expect(sig.split(' ')).toContain(`v1,${expected}`);
      // a tampered body does not verify
      expect(verifyWebhook({ secrets: [S.signing], id, timestamp: ts, body: `${r.rawBody} `, signature: sig })).toBe(false);
    }
  });

  it('no secret, in any form, in any output or stored file', () => {
    expect(outputs.length).toBeGreaterThanOrEqual(8);
    const texts: Array<{ where: string; text: string }> = [];
    for (const { command, result } of outputs) {
      texts.push({ where: `${command}: stdout`, text: result.stdout });
      texts.push({ where: `${command}: stderr`, text: result.stderr });
    }
    texts.push(...files);
    // the stored failure with the echoed request was there before the replay delivered it
    expect(files.some((x) => /failed\.jsonl \(after run --once\)$/.test(x.where) && x.text.includes('flow-bearer'))).toBe(true);
    expect(files.some((x) => /rejected\.jsonl \(after run --once\)$/.test(x.where))).toBe(true);
    // debug logging did write something to search
    expect(outputs.some((o) => o.result.stderr.includes('"level":20') || o.result.stderr.includes('"level":40'))).toBe(true);

    const keyPem = readFileSync(pki.encryptedClient.keyPath, 'utf8');
    const keyLines = keyPem.split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----'));
    const values: Array<[string, string]> = [
      ...Object.entries(S),
      ['signing key (base64 part)', S.signing.slice('whsec_'.length)],
      ['basic header', Buffer.from(`${formEncode(CC_CLIENT_ID)}:${formEncode(S.ccClientSecret)}`).toString('base64')],
      ...keyLines.map((l, i): [string, string] => [`tls key line ${i}`, l]),
      ...[...tsCc.issued, ...tsPw.issued].map((tkn): [string, string] => [`issued token ${tkn}`, tkn]),
    ];
    expect(tsCc.issued.length + tsPw.issued.length).toBeGreaterThanOrEqual(3);
    const leaks: string[] = [];
    for (const [name, value] of values) {
      const forms = new Set([
        value,
        Buffer.from(value).toString('base64'),
        Buffer.from(value).toString('base64url'),
        encodeURIComponent(value),
        formEncode(value),
        JSON.stringify(value).slice(1, -1),
      ]);
      for (const form of forms) {
        if (form.length < 6) continue;
        for (const { where, text } of texts) {
          const at = text.indexOf(form);
          if (at >= 0) leaks.push(`${name} (as ${JSON.stringify(form)}) in ${where}: …${text.slice(Math.max(0, at - 120), at + form.length + 40)}…`);
        }
      }
    }
    expect(leaks, leaks.join('\n\n')).toEqual([]);
  });
});
