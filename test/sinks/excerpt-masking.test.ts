/**
 * Issue 14, item 2: the excerpt of an endpoint's error answer is masked *before* it is cut.
 * Endpoints echo the request back (headers, URL) in every encoding; a secret straddling the
 * 200-character cut of the excerpt, or the 512-byte window of the kept body, must leave no
 * fragment in the reason, nor in the stored failed request. Runtime OAuth2 tokens included.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { firstValueFrom, Observable } from 'rxjs';
import type { DestinationConfig } from '../../src/config/load.js';
import { DeliveryError } from '../../src/errors.js';
import { createRedactor, MASK, processSecrets, SecretRegistry } from '../../src/observability/redact.js';
import { createAuthProvider } from '../../src/sinks/http/auth/index.js';
import { HttpSink } from '../../src/sinks/http/sink.js';
import { createThreadTransport } from '../../src/sinks/http/thread-transport.js';
import { createTransport, TRANSPORT_DEFAULTS, type HttpTransport, type TransportOptions } from '../../src/sinks/http/transport.js';
import type { FailedRequest, FailedRequestStore } from '../../src/sinks/types.js';
import { startTokenServer, type TokenServer } from '../support/token-server.js';

const rfc3986 = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const form = (s: string): string => new URLSearchParams({ s }).toString().slice(2);

/** The forms an endpoint echoes a value in. */
function echoForms(s: string): Record<string, string> {
  return {
    raw: s,
    encodeURIComponent: encodeURIComponent(s),
    form: form(s),
    'RFC 3986': rfc3986(s),
    'lower-case hex': rfc3986(s).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()),
    base64: Buffer.from(s).toString('base64'),
    base64url: Buffer.from(s).toString('base64url'),
    'JSON-escaped': JSON.stringify(s).slice(1, -1).replace(/\//g, '\\/'),
  };
}

function fragments(s: string): string[] {
  const out = new Set<string>();
  for (const f of Object.values(echoForms(s))) for (let i = 0; i + 8 <= f.length; i++) out.add(f.slice(i, i + 8));
  return [...out];
}

function leaksOf(text: string, secrets: string[]): string[] {
  return secrets.flatMap((s) => fragments(s).filter((f) => text.includes(f)).map((f) => `${JSON.stringify(f)} of ${JSON.stringify(s)}`));
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

type Answer = (req: IncomingMessage, body: string) => { status: number; body: string };

async function endpoint(answer: Answer): Promise<{ url: string }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const a = answer(req, Buffer.concat(chunks).toString('utf8'));
      res.writeHead(a.status, { 'content-type': 'text/plain' }).end(a.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  server.closeIdleConnections();
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` };
}

function transport(t: HttpTransport): HttpTransport {
  cleanups.push(() => t.close());
  return t;
}

async function failure(p: Promise<unknown>): Promise<DeliveryError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(DeliveryError);
    return err as DeliveryError;
  }
  throw new Error('expected the request to fail');
}

const post = (url: string, headers: Record<string, string> = {}) => ({ url, method: 'POST' as const, headers: { 'content-type': 'application/json', ...headers }, body: '{}' });

/** Text of `n` characters with no whitespace run (so flattening keeps its length). */
const pad = (n: number): string => 'e'.repeat(n);

/**
 * Both transports: undici on the main thread, or on the transport thread — which knows no
 * secret: the excerpt comes back raw and is masked here, on the main thread.
 */
describe.each(['inline', 'thread'] as const)('%s transport', (kind) => {
  const make = (o: Pick<TransportOptions, 'destination' | 'redactor'>): HttpTransport =>
    kind === 'inline' ? createTransport(o) : createThreadTransport(o);

  describe('the excerpt of an error answer is masked before it is cut', () => {
    const SECRET = `brr!T0k'()*~-${'x7'.repeat(4)}`; // 21 characters that every encoding treats differently

    it('a secret straddling the 200-character cut, in every echo form, leaves no fragment', async () => {
      const registry = new SecretRegistry();
      const redactor = createRedactor([SECRET], { registry });
      const cut = TRANSPORT_DEFAULTS.errorExcerptChars;
      const cases: Array<{ name: string; before: number; form: string }> = [];
      for (const [name, f] of Object.entries(echoForms(SECRET))) {
        // the cut falls after 8, after half, and 1 before the end of the echoed form
        for (const keep of [8, Math.floor(f.length / 2), f.length - 1]) cases.push({ name, before: cut - keep, form: f });
      }
      let i = 0;
      const s = await endpoint(() => {
        const c = cases[i++ % cases.length]!;
        return { status: 500, body: `${pad(c.before)}${c.form} and the rest of the answer` };
      });
      const t = transport(make({ destination: { connections: 1, timeoutMs: 2_000 }, redactor }));
      for (const c of cases) {
        const err = await failure(t.send(post(s.url)));
        expect(err.statusCode).toBe(500);
        expect(err.message.startsWith(`HTTP 500: ${pad(20)}`), c.name).toBe(true);
        expect(leaksOf(err.message, [SECRET]), `${c.name}: ${err.message}`).toEqual([]);
      }
    });

    it('a secret straddling the end of the kept bytes (errorExcerptBytes) leaves no fragment, even when flattening shortens the text', async () => {
      const registry = new SecretRegistry();
      const redactor = createRedactor([SECRET], { registry });
      const window = TRANSPORT_DEFAULTS.errorExcerptBytes;
      const forms = Object.entries(echoForms(SECRET));
      let i = 0;
      const s = await endpoint(() => {
        const [, f] = forms[i++ % forms.length]!;
        // whitespace collapses to one space: what is left of the 512 bytes fits in the 200 characters
        const head = `x${' '.repeat(window - 20)}y `;
        return { status: 502, body: `${head}${f}${pad(100)}` };
      });
      const t = transport(make({ destination: { connections: 1, timeoutMs: 2_000 }, redactor }));
      for (const [name] of forms) {
        const err = await failure(t.send(post(s.url)));
        expect(err.message, name).toContain('HTTP 502: x y');
        expect(leaksOf(err.message, [SECRET]), `${name}: ${err.message}`).toEqual([]);
        expect(err.message, name).toContain(MASK);
      }
    });

    it('by default masks every secret of the process, including one registered after the transport was made', async () => {
      const late = `late-runtime-token-${Date.now()}!'`;
      const s = await endpoint((req) => ({ status: 401, body: `denied: ${String(req.headers.authorization)} / ${form(String(req.headers.authorization))}` }));
      const t = transport(make({ destination: { connections: 1, timeoutMs: 2_000 } }));
      processSecrets.add(late);
      const err = await failure(t.send(post(s.url, { authorization: `Bearer ${late}` })));
      expect(err.message).toBe(`HTTP 401: denied: Bearer ${MASK} / Bearer+${MASK}`);
    });
  });
});

class MemoryFailedStore implements FailedRequestStore {
  records: FailedRequest[] = [];
  async put(r: FailedRequest): Promise<void> {
    this.records.push(structuredClone(r));
  }
  async list(): Promise<FailedRequest[]> {
    return this.records;
  }
  async remove(): Promise<void> {}
  async close(): Promise<void> {}
}

const instant = { acquire: () => new Observable<void>((s) => (s.next(), s.complete())) };

function destination(url: string, over: Partial<DestinationConfig>): DestinationConfig {
  return {
    id: 'dest-1',
    url,
    headers: {},
    auth: { type: 'none' },
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
    retry: { minDelayMs: 5, maxDelayMs: 10, retryAfterMaxMs: 100 },
    timeoutMs: 2_000,
    connections: 1,
    ...over,
  };
}

const job = (n: number) => ({
  dataflowId: 'flow-1',
  destinationId: 'dest-1',
  profileId: `p-${n}`,
  idempotencyKey: `flow-1:k:${n}`,
  payload: { person: { name: { firstName: 'Ada' } } },
});

describe('HTTP sink: stored failed requests hold no fragment of a secret echoed at the cut', () => {
  it('a bearer token echoed form-encoded and straddling the 200-character cut (the finding: 14 of 15 characters stored)', async () => {
    const token = `brr!T0k'(${Date.now().toString(36)}`;
    const s = await endpoint((req) => {
      const echoed = form(String(req.headers.authorization)); // Bearer+brr%21T0k%27%28…
      return { status: 400, body: `${pad(200 - echoed.length + 3)}${echoed} rejected` };
    });
    const store = new MemoryFailedStore();
    const sink = new HttpSink({
      destination: destination(s.url, { auth: { type: 'bearer', token } }),
      limiter: instant,
      failedStore: store,
      secrets: [token],
    });
    cleanups.push(() => sink.close());
    const out = await firstValueFrom(sink.send(job(1)));
    expect(out.status).toBe('failed');
    expect(store.records).toHaveLength(1);
    const text = JSON.stringify({ out: out.status === 'failed' ? out.error : '', record: store.records });
    expect(leaksOf(text, [token, `Bearer ${token}`]), text).toEqual([]);
  });

  let tokens: TokenServer | undefined;
  afterEach(async () => {
    await tokens?.close();
    tokens = undefined;
  });

  it('an OAuth2 access token obtained at run time, echoed in every form across the cut, is masked in the reason and the record', async () => {
    tokens = await startTokenServer({ clientId: 'cid', clientSecret: 'client-secret-9f8e7d' });
    const forms = (auth: string): string[] => Object.values(echoForms(auth.slice('Bearer '.length)));
    let n = 0;
    const s = await endpoint((req) => {
      const all = forms(String(req.headers.authorization));
      const i = n++;
      if (i % 2 === 1) return { status: 503, body: `token ${all.join(' ')} end` };
      const f = all[(i / 2) % all.length]!;
      return { status: 503, body: `${pad(200 - Math.floor(f.length / 2))}${f} end` };
    });
    const dest = destination(s.url, {
      auth: { type: 'oauth2-client-credentials', accessTokenUrl: tokens.url, clientId: 'cid', clientSecret: 'client-secret-9f8e7d', credentialsType: 'basic' },
    });
    const store = new MemoryFailedStore();
    const sink = new HttpSink({
      destination: dest,
      limiter: instant,
      failedStore: store,
      secrets: ['client-secret-9f8e7d'],
      auth: createAuthProvider(dest.auth, { timeoutMs: 2_000 }),
    });
    cleanups.push(() => sink.close());
    const outs = [];
    for (let i = 0; i < 6; i++) outs.push(await firstValueFrom(sink.send(job(100 + i))));
    expect(outs.every((o) => o.status === 'failed')).toBe(true);
    expect(tokens.issued.length).toBeGreaterThanOrEqual(1);
    const text = JSON.stringify({ outs: outs.map((o) => (o.status === 'failed' ? o.error : '')), records: store.records });
    expect(text).toContain(MASK);
    expect(leaksOf(text, tokens.issued), text).toEqual([]);
  });
});
