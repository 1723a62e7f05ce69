/**
 * THE LEAK TEST of issue 14 (item 2): every kind of secret — a bearer token, an OAuth2 client
 * secret (Basic), the access and refresh tokens obtained at run time, a password grant's
 * password and client secret, a `${ENV}` header value with an innocent name, a `${ENV}` query
 * value, a signing secret and a TLS key passphrase — echoed by a careless endpoint in every
 * form (raw, encodeURIComponent, form `+`, RFC 3986 re-encoding, lower-case hex, base64,
 * base64url, base64 inside a larger blob, JSON-escaped), in the body of 4xx and 5xx answers,
 * some of them straddling the 200-character cut of the error excerpt. The built command runs
 * at trace level with `--metrics-port` (file store), then again with the JetStream failed
 * store (real nats-server); then the run logs, `/metrics`, the admin API and the web console
 * (its files, its API routes, its pages as chromium renders them, a replay made from the page
 * with the admin token — itself one of the secrets), `failed list` and `--json`, the
 * files on disk and every message of the JetStream streams are searched for every form of
 * every secret and for any 8-character fragment of one. None may be found; the receivers
 * check the secrets were really sent, so the search is not vacuous.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { ensureBuilt, jsonLines, removeTempDirs, runCli, startCli, stopAll, tempDir, writeConfig, writeEvents, type CliResult } from '../support/cli.js';
import { freePort, startNatsServer, type NatsServer } from '../support/nats-server.js';
import { generatePki, type TestPki } from '../support/pki.js';
import { startReceiver, type ReceivedRequest, type Receiver } from '../support/receiver.js';
import { launchChromium } from '../support/browser.js';
import { startTokenServer, type RecordedTokenRequest, type TokenServer, type TokenServerReply } from '../support/token-server.js';

const hex = (n = 4): string => randomBytes(n).toString('hex');
/** Secrets made of random hex with at most two characters in a row that encodings change. */
const S = {
  bearer: `brr!T0k'(${hex()})*~${hex()}`,
  ccClientSecret: `cs ${hex()}!'${hex()}é/"${hex()}`,
  pwClientSecret: `pc*~${hex()}'(${hex()}`,
  password: `pw ${hex()}!+${hex()}é&${hex()}=%${hex()}`,
  partnerSig: `ps ${hex()}!'${hex()}()${hex()}`, // a `${ENV}` header whose name does not look secret
  querySecret: `qs ${hex()}!'${hex()}*/${hex()}é${hex()}`, // a `${ENV}` query value
  signing: `whsec_${randomBytes(32).toString('base64')}`,
  passphrase: `pp ${hex()}!'${hex()}()${hex()}`,
  admin: `adm ${hex()}!'${hex()}~${hex()}`, // admin.token: the console's actions
};
const CC_ID = 'cc-client';
const PW_ID = 'pw-client';
const USERNAME = 'jane@example.com';
/** Tokens minted by the token servers at run time (access and refresh). */
const minted: string[] = [];
const mint = (kind: 'at' | 'rt'): string => {
  const t = `${kind}!${hex()}'(${hex()})*~${hex()}`;
  minted.push(t);
  return t;
};

const rfc3986 = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const form = (s: string): string => new URLSearchParams({ s }).toString().slice(2);
const jsonEscaped = (s: string): string => JSON.stringify(s).slice(1, -1);
const jsonEscapedPhp = (s: string): string =>
  jsonEscaped(s)
    .replace(/\//g, '\\/')
    .replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** Every form an endpoint may echo a value in. */
function forms(s: string): Record<string, string> {
  return {
    raw: s,
    encodeURIComponent: encodeURIComponent(s),
    form: form(s),
    'RFC 3986': rfc3986(s),
    'lower-case hex': rfc3986(s).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()),
    base64: Buffer.from(s).toString('base64'),
    base64url: Buffer.from(s).toString('base64url'),
    'JSON-escaped': jsonEscaped(s),
    'JSON-escaped (\\/, \\u00xx)': jsonEscapedPhp(s),
  };
}
const FORM_NAMES = Object.keys(forms('x'));

/** The secrets an echo can carry at the time of a request: the config's, and the tokens minted so far. */
function knownSecrets(): string[] {
  return [...Object.values(S), ...minted];
}

/** `n` characters with no whitespace (flattening keeps their length). */
const pad = (n: number): string => '_'.repeat(Math.max(0, n));

let straddleSeq = 0;
/**
 * The careless endpoint: a 400 whose body echoes one secret in one form straddling the
 * 200-character cut (cycling through every secret × form), or a 500 whose body echoes the
 * request (authorization, the x-partner-sig header, the URL) and every secret in every form,
 * plain and inside a base64 blob.
 */
function answer(r: ReceivedRequest): { status: number; body: string } | undefined {
  const name = (r.body as { person?: { name?: { firstName?: string } } } | undefined)?.person?.name?.firstName ?? '';
  if (name.startsWith('ok')) return undefined;
  const received = [String(r.headers.authorization), String(r.headers['x-partner-sig']), r.url, decodeURIComponent(r.url)];
  if (name.startsWith('all')) {
    const values = [...received, ...knownSecrets()];
    const parts = values.flatMap((v) => Object.values(forms(v)));
    const blob = Buffer.from(`{"request":${JSON.stringify(received)},"secrets":${JSON.stringify(knownSecrets())}}`).toString('base64');
    return { status: 500, body: `upstream rejected ${parts.join(' | ')} blob=${blob}` };
  }
  // a straddle: the authorization actually received, or one of the known secrets
  const pool = [String(r.headers.authorization).replace(/^Bearer /, ''), String(r.headers['x-partner-sig']), S.querySecret, ...Object.values(S)];
  const i = straddleSeq++;
  const secret = pool[i % pool.length]!;
  const f = Object.values(forms(secret))[Math.floor(i / pool.length) % FORM_NAMES.length]!;
  const keep = 8 + (i % Math.max(1, f.length - 9)); // 8 … length-1 characters before the cut
  return { status: 400, body: `${pad(200 - keep)}${f} is not accepted here` };
}

let pki: TestPki;
let nats: NatsServer;
let rx: Receiver;
let tsCc: TokenServer;
let tsPw: TokenServer;
let cfgDir: string;
const outputs: Array<{ where: string; text: string }> = [];
const env = (): Record<string, string> => ({
  HD_CC_SECRET: S.ccClientSecret,
  HD_PW_CLIENT_SECRET: S.pwClientSecret,
  HD_PASSWORD: S.password,
  HD_PARTNER_SIG: S.partnerSig,
  HD_QUERY_SECRET: S.querySecret,
  HD_SIGNING: S.signing,
  HD_KEY_PASS: S.passphrase,
  HD_ADMIN: S.admin,
});

/** A token endpoint that mints tokens full of characters that encodings change, with refresh tokens. */
function minting(req: RecordedTokenRequest): TokenServerReply | undefined {
  const grant = req.form.grant_type;
  if (grant !== 'client_credentials' && grant !== 'password' && grant !== 'refresh_token') return undefined;
  const id = req.basic?.clientId ?? req.form.client_id;
  const secret = req.basic?.clientSecret ?? req.form.client_secret;
  const ok = (id === CC_ID && secret === S.ccClientSecret) || (id === PW_ID && secret === S.pwClientSecret);
  if (!ok) return { status: 401, body: { error: 'invalid_client', error_description: `unknown client secret ${String(secret)}` } };
  if (grant === 'password' && req.form.password !== S.password) return { status: 400, body: { error: 'invalid_grant' } };
  return { status: 200, body: { access_token: mint('at'), token_type: 'Bearer', expires_in: 3600, refresh_token: mint('rt') } };
}

function config(dir: string, failedRequests: unknown): string {
  const flow = (id: string, destination: string) => ({ id, destination, audiences: ['aud-1'], attributes: ['person.name.firstName'] });
  const retry = { minDelayMs: 10, maxDelayMs: 30 };
  return writeConfig(dir, {
    source: { kind: 'file', path: join(cfgDir, 'events.jsonl') },
    failedRequests,
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [
      {
        id: 'dest-bearer',
        endpoint: `${rx.url}/bearer`,
        headers: 'x-partner-sig:${HD_PARTNER_SIG},x-tenant:acme',
        queryParameters: 'sig=${HD_QUERY_SECRET}&v=1',
        auth: { type: 'bearer', token: S.bearer },
        // the client key is only used for https endpoints; its passphrase is a secret all the same
        tls: { cert: pki.encryptedClient.certPath, key: pki.encryptedClient.keyPath, passphrase: '${HD_KEY_PASS}' },
        signing: { secret: '${HD_SIGNING}' },
        retry,
      },
      {
        id: 'dest-cc',
        endpoint: `${rx.url}/cc`,
        auth: { type: 'oauth2-client-credentials', accessTokenUrl: tsCc.url, clientId: CC_ID, clientSecret: '${HD_CC_SECRET}', credentialsType: 'basic' },
        retry,
      },
      {
        id: 'dest-pw',
        endpoint: `${rx.url}/pw`,
        auth: { type: 'oauth2-password', accessTokenUrl: tsPw.url, clientId: PW_ID, clientSecret: '${HD_PW_CLIENT_SECRET}', username: USERNAME, password: '${HD_PASSWORD}' },
        retry,
      },
    ],
    dataflows: [flow('flow-bearer', 'dest-bearer'), flow('flow-cc', 'dest-cc'), flow('flow-pw', 'dest-pw')],
    admin: { token: '${HD_ADMIN}' },
    log: { level: 'trace' },
  });
}

/** Profiles: `ok-*` delivered, `all-*` 500 echoing everything (3 attempts), the rest 400 straddling the cut. */
const PROFILES = [
  'ok-1',
  'all-1',
  'all-2',
  ...Array.from({ length: 28 }, (_, i) => `cut-${i}`),
];
const EXPORTS = PROFILES.length * 3;
const FAILED = EXPORTS - 3;

async function cli(where: string, args: string[], configPath: string): Promise<CliResult> {
  const r = await runCli([...args, '--config', configPath], { env: env(), timeoutMs: 60_000 });
  outputs.push({ where: `${where}: ${args.join(' ')} stdout`, text: r.stdout }, { where: `${where}: ${args.join(' ')} stderr`, text: r.stderr });
  return r;
}

function snapshotFiles(d: string, when: string): void {
  for (const name of readdirSync(d)) {
    const p = join(d, name);
    if (statSync(p).isDirectory()) snapshotFiles(p, when);
    else outputs.push({ where: `${p} (${when})`, text: readFileSync(p, 'utf8') });
  }
}

/**
 * The web console (issue 16): its files, its own API routes, and its pages as chromium renders
 * them (Dataflows, Failed requests, a profile's explain view, the answer to a replay made from
 * the page with the admin token).
 */
async function consolePages(base: string): Promise<void> {
  const files = ['/', '/console/app.js', '/console/dom.js', '/console/chart.js', '/console/dataflows.js', '/console/failed.js', '/console/style.css'];
  const routes = ['/api/console', '/api/series', '/api/failed/search', '/api/failed/search?status=5xx', '/api/explain?profile=all-1', '/api/partitions'];
  for (const path of [...files, ...routes]) {
    const res = await fetch(`${base}${path}`);
    outputs.push({ where: `file run: ${path}`, text: await res.text() });
  }
  expect(outputs.find((o) => o.where === 'file run: /api/explain?profile=all-1')?.text).toContain('"verdict":"export"');
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const open = async (hash: string, ready: string): Promise<void> => {
      await page.goto(`${base}/${hash}`);
      await page.waitForSelector(`body[data-ready="${ready}"]`);
      outputs.push({ where: `file run: console page ${hash}`, text: await page.content() });
    };
    await open('#/dataflows', 'dataflows');
    await open('#/explain?profile=all-1&dataflow=flow-bearer', 'explain');
    await open('#/failed', 'failed');
    await page.fill('#token', S.admin);
    await page.click('#token-save');
    await page.click('tr[data-profile="all-1"][data-dataflow="flow-bearer"] [data-replay-one]');
    await page.waitForSelector('#action-result.ok');
    outputs.push({ where: 'file run: console page after a replay with the token', text: await page.content() });
    expect(outputs.at(-1)?.text).toContain('failed again 1');
  } finally {
    await browser.close();
  }
}

beforeAll(async () => {
  await ensureBuilt();
  [pki, nats] = await Promise.all([generatePki({ passphrase: S.passphrase }), startNatsServer()]);
  rx = await startReceiver({ respond: answer });
  tsCc = await startTokenServer({ clientId: CC_ID, clientSecret: S.ccClientSecret, override: minting });
  tsPw = await startTokenServer({ clientId: PW_ID, clientSecret: S.pwClientSecret, username: USERNAME, password: S.password, override: minting });
  cfgDir = tempDir('hd-e2e-leaks-');
  const enter = (p: string) => ({
    profileId: p,
    attributes: { person: { name: { firstName: p } } },
    segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
  });
  // one broken line: its rejection is logged at debug level
  writeEvents(cfgDir, [...PROFILES.map(enter), '{"profileId": ']);
}, 120_000);

afterEach(() => stopAll());
afterAll(async () => {
  await Promise.all([rx?.close(), tsCc?.close(), tsPw?.close(), nats?.stop()]);
  await pki?.cleanup();
  removeTempDirs();
});

describe('no secret, in any form, at any cut, in any output (issue 14)', () => {
  it('run (trace logs, /metrics) with the file store, then failed list and --json', async () => {
    const dir = tempDir('hd-e2e-leaks-file-');
    // the data folder apart from the config (which holds the bearer token literally)
    const configPath = config(dir, { kind: 'file', path: join(dir, 'data', 'failed.jsonl') });
    const port = await freePort();
    const run = startCli(['run', '--config', configPath, '--metrics-port', String(port)], { env: env() });
    const failedLine = (text: string): number =>
      [...text.matchAll(/http_destination_exports_total\{dataflow="[^"]+",result="failed"\} (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
    let metrics = '';
    const deadline = Date.now() + 45_000;
    while (Date.now() < deadline) {
      try {
        metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        if (failedLine(metrics) >= FAILED) break;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(failedLine(metrics), metrics).toBe(FAILED);
    outputs.push({ where: 'file run: /metrics', text: metrics });
    // the admin server's JSON API (the console reads it) and its readiness answer
    for (const path of ['/api/dataflows', '/api/failed', '/api/alerts', '/readyz']) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      outputs.push({ where: `file run: ${path}`, text: await res.text() });
    }
    expect(outputs.find((o) => o.where === 'file run: /api/failed')?.text).toContain('HTTP 400');
    await consolePages(`http://127.0.0.1:${port}`);
    run.signal('SIGTERM');
    const done = await run.exited;
    outputs.push({ where: 'file run: stdout', text: done.stdout }, { where: 'file run: stderr (trace)', text: done.stderr });
    // debug and warning lines were written (something to search)
    expect(done.stderr).toContain('"level":20');
    expect(done.stderr).toContain('"level":40');

    const status = await cli('file', ['status', '--json'], configPath);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain('"failed"');
    expect((await cli('file', ['status'], configPath)).code).toBe(0);
    const list = await cli('file', ['failed', 'list'], configPath);
    const json = await cli('file', ['failed', 'list', '--json'], configPath);
    expect(list.code, list.stderr).toBe(0);
    expect(json.code, json.stderr).toBe(0);
    const records = jsonLines<{ lastStatus?: number; lastError: string }>(json.stdout);
    expect(records).toHaveLength(FAILED);
    expect(records.filter((r) => r.lastStatus === 400).length).toBe(28 * 3);
    expect(records.filter((r) => r.lastStatus === 500).length).toBe(2 * 3);
    // operators still get the endpoint's message, with the secrets masked
    expect(records.some((r) => r.lastError.startsWith('HTTP 500: upstream rejected [REDACTED]'))).toBe(true);
    expect(records.some((r) => /^HTTP 400: _{20,}\[REDACTED\]/.test(r.lastError))).toBe(true);
    snapshotFiles(join(dir, 'data'), 'after the file run');
    expect(outputs.some((o) => o.where.endsWith('failed.jsonl (after the file run)') && o.text.includes('HTTP 400'))).toBe(true);
  }, 120_000);

  it('run --once with the JetStream failed store, then failed list and --json, and the streams themselves', async () => {
    const dir = tempDir('hd-e2e-leaks-js-');
    const configPath = config(dir, { kind: 'jetstream', servers: nats.url });
    const run = await cli('jetstream', ['run', '--once'], configPath);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`exports failed\\s+${FAILED}\\b`));
    const json = await cli('jetstream', ['failed', 'list', '--json'], configPath);
    await cli('jetstream', ['failed', 'list'], configPath);
    expect(jsonLines(json.stdout)).toHaveLength(FAILED);

    // every message of every stream, as stored
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await jetstreamManager(nc);
      for await (const info of jsm.streams.list()) {
        const { first_seq: first, last_seq: last } = info.state;
        let text = '';
        for (let seq = first; seq > 0 && seq <= last; seq++) {
          try {
            const m = await jsm.streams.getMessage(info.config.name, { seq });
            if (m) text += `${m.string()}\n`;
          } catch {
            // replaced (one record per subject) or removed
          }
        }
        outputs.push({ where: `JetStream stream ${info.config.name}`, text });
      }
    } finally {
      await nc.close();
    }
    expect(outputs.some((o) => o.where === 'JetStream stream HTTP_DESTINATION_FAILED' && o.text.includes('flow-cc'))).toBe(true);
  }, 120_000);

  it('the secrets were really sent and echoed (the search is not vacuous)', () => {
    const bearer = rx.at('/bearer');
    expect(bearer.length).toBeGreaterThan(30);
    for (const r of bearer) {
      expect(r.headers.authorization).toBe(`Bearer ${S.bearer}`);
      expect(r.headers['x-partner-sig']).toBe(S.partnerSig);
      expect(r.query.get('sig')).toBe(S.querySecret);
    }
    const issued = minted.filter((t) => t.startsWith('at!'));
    expect(issued.length).toBeGreaterThanOrEqual(2);
    for (const r of [...rx.at('/cc'), ...rx.at('/pw')]) expect(issued.map((t) => `Bearer ${t}`)).toContain(r.headers.authorization);
    expect(tsCc.requests.some((q) => q.basic?.clientSecret === S.ccClientSecret)).toBe(true);
    expect(tsPw.requests.some((q) => q.form.password === S.password && q.form.client_secret === S.pwClientSecret)).toBe(true);
    // every secret × form went across the cut at least once
    expect(straddleSeq).toBeGreaterThanOrEqual(2 * 28 * 3);
  });

  it('finds no secret, in any form, nor any 8-character fragment of one, anywhere', () => {
    expect(outputs.length).toBeGreaterThanOrEqual(12);
    const keyPem = readFileSync(pki.encryptedClient.keyPath, 'utf8');
    const values: Array<[string, string]> = [
      ...Object.entries(S),
      ['signing key (base64 part)', S.signing.slice('whsec_'.length)],
      ...minted.map((t): [string, string] => [`minted ${t.slice(0, 2)}`, t]),
    ];
    const wholeOnly: Array<[string, string]> = [
      ['bearer header', `Bearer ${S.bearer}`],
      ['basic header', Buffer.from(`${form(CC_ID)}:${form(S.ccClientSecret)}`).toString('base64')],
      ...keyPem.split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----')).map((l, i): [string, string] => [`tls key line ${i}`, l]),
    ];
    const leaks: string[] = [];
    const search = (name: string, needle: string, how: string): void => {
      for (const { where, text } of outputs) {
        const at = text.indexOf(needle);
        if (at >= 0) leaks.push(`${name} (${how} ${JSON.stringify(needle)}) in ${where}: …${text.slice(Math.max(0, at - 80), at + needle.length + 20)}…`);
      }
    };
    for (const [name, value] of values) {
      for (const [formName, f] of Object.entries(forms(value))) {
        search(name, f, formName);
        const windows = new Set<string>();
        for (let i = 0; i + 8 <= f.length; i++) windows.add(f.slice(i, i + 8));
        for (const w of windows) search(name, w, `8-character fragment of its ${formName} form`);
      }
    }
    for (const [name, value] of wholeOnly) search(name, value, 'whole');
    expect(leaks.slice(0, 20), `${leaks.length} leaks:\n${leaks.slice(0, 20).join('\n\n')}`).toEqual([]);
  });
});
