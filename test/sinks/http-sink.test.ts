import { describe, it, expect, afterEach } from 'vitest';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { firstValueFrom, Observable, of, type Subscriber } from 'rxjs';
import type { DataflowConfig, DestinationConfig } from '../../src/config/load.js';
import { DeliveryError, HttpDestinationError, StoreError } from '../../src/errors.js';
import type { AuthProvider } from '../../src/sinks/http/auth/types.js';
import { verifyWebhook } from '../../src/sinks/http/signing.js';
import { HttpSink, type HttpSinkOptions } from '../../src/sinks/http/sink.js';
import { createSinks } from '../../src/sinks/http/sinks.js';
import { createTransport, type HttpTransport } from '../../src/sinks/http/transport.js';
import type { RateLimiter } from '../../src/stores/rate-limiter.js';
import type { DeliveryOutcome, ExportJob, FailedRequest, FailedRequestStore } from '../../src/sinks/types.js';

const TOKEN = 'bearer-token-s3cr3t';
const API_KEY = 'api-key-value-123';

interface Hit {
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
  at: number;
}
type Handler = (hit: Hit, res: ServerResponse, n: number) => void;

interface TestServer {
  url: string;
  port: number;
  hits: Hit[];
  closed: number;
  close(): Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function startServer(handler: Handler): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const hits: Hit[] = [];
  const state = { closed: 0 };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const hit = { url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
      hits.push(hit);
      res.on('close', () => {
        if (!res.writableFinished) state.closed += 1;
      });
      handler(hit, res, hits.length);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  cleanups.push(close);
  return {
    url: `http://127.0.0.1:${port}/hook?v=1`,
    port,
    hits,
    get closed() {
      return state.closed;
    },
    close,
  };
}

function destination(url: string, over: Partial<DestinationConfig> = {}): DestinationConfig {
  return {
    id: 'dest-1',
    url,
    headers: { 'x-api-key': API_KEY, 'x-tenant': 'acme' },
    auth: { type: 'bearer', token: TOKEN },
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
    retry: { minDelayMs: 10, maxDelayMs: 40, retryAfterMaxMs: 2_000 },
    timeoutMs: 1_000,
    connections: 2,
    ...over,
  };
}

class MemoryFailedStore implements FailedRequestStore {
  records = new Map<string, FailedRequest>();
  failPut = false;
  async put(r: FailedRequest): Promise<void> {
    if (this.failPut) throw new Error('disk full');
    this.records.set(r.id, structuredClone(r));
  }
  async list(): Promise<FailedRequest[]> {
    return [...this.records.values()];
  }
  async remove(ids: string[]): Promise<void> {
    for (const id of ids) this.records.delete(id);
  }
  async close(): Promise<void> {}
}

/** Grants at once, counting permits. */
function instantLimiter(): RateLimiter & { acquired: number } {
  const l = {
    acquired: 0,
    acquire: () =>
      new Observable<void>((s) => {
        l.acquired += 1;
        s.next();
        s.complete();
      }),
  };
  return l;
}

/** Grants only when the test says so (as the Redis limiter may), counting waiters. */
function manualLimiter(): RateLimiter & { waiting: Array<Subscriber<void>>; acquired: number; gaveUp: number } {
  const l = {
    waiting: [] as Array<Subscriber<void>>,
    acquired: 0,
    gaveUp: 0,
    acquire: () =>
      new Observable<void>((s) => {
        l.acquired += 1;
        l.waiting.push(s);
        return () => {
          const i = l.waiting.indexOf(s);
          if (i >= 0) {
            l.waiting.splice(i, 1);
            l.gaveUp += 1;
          }
        };
      }),
  };
  return l;
}

const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));

let seq = 0;
function job(over: Partial<ExportJob> = {}): ExportJob {
  seq += 1;
  return {
    dataflowId: 'flow-1',
    destinationId: 'dest-1',
    profileId: `p-${seq}`,
    idempotencyKey: `flow-1:test:${seq}`,
    payload: { person: { name: { firstName: 'John' } }, identityMap: { ecid: [{ id: '1457' }] } },
    ...over,
  };
}

function makeSink(
  dest: DestinationConfig,
  over: Partial<HttpSinkOptions> = {},
): { sink: HttpSink; store: MemoryFailedStore; limiter: ReturnType<typeof instantLimiter> } {
  const store = new MemoryFailedStore();
  const limiter = instantLimiter();
  const sink = new HttpSink({ destination: dest, limiter, failedStore: store, ...over });
  cleanups.push(() => sink.close());
  return { sink, store, limiter };
}

function expectNoSecret(value: unknown): void {
  const text = JSON.stringify(value);
  for (const secret of [TOKEN, API_KEY, 'Bearer', 'authorization', '127.0.0.1', 'fresh-token', 'old-token']) {
    expect(text).not.toContain(secret);
  }
}

describe('HttpSink against a real HTTP server', () => {
  it('delivers on 2xx with the payload, custom headers, idempotency key and bearer token', async () => {
    const s = await startServer((_h, res) => res.writeHead(204).end());
    const { sink, store, limiter } = makeSink(destination(s.url));
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out).toEqual({ status: 'delivered', job: j, attempts: 1, statusCode: 204 });
    expect(s.hits).toHaveLength(1);
    const h = s.hits[0]!;
    expect(h.url).toBe('/hook?v=1');
    expect(JSON.parse(h.body)).toEqual(j.payload);
    expect(h.headers['content-type']).toBe('application/json');
    expect(h.headers['idempotency-key']).toBe(j.idempotencyKey);
    expect(h.headers['x-api-key']).toBe(API_KEY);
    expect(h.headers['x-tenant']).toBe('acme');
    expect(h.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(h.headers['user-agent']).toMatch(/^http-destination\//);
    expect(limiter.acquired).toBe(1);
    expect(store.records.size).toBe(0);
  });

  it('tells onResponse the status of every attempt, and undefined when no answer came', async () => {
    const s = await startServer((_h, res, n) => res.writeHead(n === 1 ? 503 : 200).end());
    const seen: Array<number | undefined> = [];
    const { sink } = makeSink(destination(s.url, { retry: { minDelayMs: 1, maxDelayMs: 2, retryAfterMaxMs: 2 } }), { onResponse: (st) => seen.push(st) });
    const out = await firstValueFrom(sink.send(job()));
    expect(out.status).toBe('delivered');
    expect(seen).toEqual([503, 200]);
    const dead = makeSink(destination('http://127.0.0.1:9/x', { retry: { minDelayMs: 1, maxDelayMs: 2, retryAfterMaxMs: 2 } }), { onResponse: (st) => seen.push(st) });
    expect((await firstValueFrom(dead.sink.send(job()))).status).toBe('failed');
    expect(seen.slice(2)).toEqual([undefined, undefined, undefined]);
  });

  it('is cold: nothing is sent before subscription', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const { sink, limiter } = makeSink(destination(s.url));
    const send$ = sink.send(job());
    await new Promise((r) => setTimeout(r, 50));
    expect(s.hits).toHaveLength(0);
    expect(limiter.acquired).toBe(0);
    await firstValueFrom(send$);
    expect(s.hits).toHaveLength(1);
  });

  it('retries a 500 and delivers on the next attempt, with the same Idempotency-Key', async () => {
    const s = await startServer((_h, res, n) => res.writeHead(n === 1 ? 500 : 200).end());
    const { sink, store, limiter } = makeSink(destination(s.url));
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out).toMatchObject({ status: 'delivered', attempts: 2, statusCode: 200 });
    expect(s.hits.map((h) => h.headers['idempotency-key'])).toEqual([j.idempotencyKey, j.idempotencyKey]);
    expect(limiter.acquired).toBe(2);
    expect(store.records.size).toBe(0);
  });

  it('stores the request after three 500s (two retries), with no secret in the record', async () => {
    const s = await startServer((_h, res) => res.writeHead(500).end('internal error'));
    const warnings: Array<{ obj: object; msg: string }> = [];
    const now = Date.UTC(2026, 10, 26, 10, 0, 0);
    const { sink, store } = makeSink(destination(s.url), {
      logger: { warn: (obj, msg) => warnings.push({ obj, msg }) },
      now: () => now,
    });
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out).toEqual({
      status: 'failed',
      job: j,
      attempts: 3,
      statusCode: 500,
      code: 'ERR_HTTP_STATUS',
      error: 'HTTP 500: internal error',
    });
    expect(s.hits).toHaveLength(3);
    expect(new Set(s.hits.map((h) => h.headers['idempotency-key']))).toEqual(new Set([j.idempotencyKey]));
    expect(store.records.get(j.idempotencyKey)).toEqual({
      id: j.idempotencyKey,
      dataflowId: 'flow-1',
      destinationId: 'dest-1',
      profileId: j.profileId,
      idempotencyKey: j.idempotencyKey,
      payload: j.payload,
      attempts: 3,
      lastStatus: 500,
      lastErrorCode: 'ERR_HTTP_STATUS',
      lastError: 'HTTP 500: internal error',
      failedAt: '2026-11-26T10:00:00.000Z',
    });
    expectNoSecret(store.records.get(j.idempotencyKey));
    expect(warnings).toHaveLength(1);
    expectNoSecret(warnings);
  });

  it('warns at most once per interval, counting the stored failures in between', async () => {
    const s = await startServer((_h, res) => res.writeHead(422).end());
    const warnings: Array<Record<string, unknown>> = [];
    let now = 1_000_000;
    const { sink, store } = makeSink(destination(s.url), {
      logger: { warn: (obj) => warnings.push(obj as Record<string, unknown>) },
      now: () => now,
      warnIntervalMs: 10_000,
    });
    for (let i = 0; i < 3; i++) await firstValueFrom(sink.send(job()));
    expect(store.records.size).toBe(3);
    expect(warnings.map((w) => w.storedSinceLastWarning)).toEqual([1]);
    now += 10_000;
    await firstValueFrom(sink.send(job()));
    expect(warnings.map((w) => w.storedSinceLastWarning)).toEqual([1, 3]);
    expect(warnings[1]).toMatchObject({ destinationId: 'dest-1', code: 'ERR_HTTP_STATUS', statusCode: 422, attempts: 1 });
  });

  it('does not retry a 400: stored after one attempt', async () => {
    const s = await startServer((_h, res) => res.writeHead(400).end('bad field'));
    const { sink, store } = makeSink(destination(s.url));
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out).toMatchObject({ status: 'failed', attempts: 1, statusCode: 400, code: 'ERR_HTTP_STATUS' });
    expect(s.hits).toHaveLength(1);
    expect(store.records.get(j.idempotencyKey)).toMatchObject({ attempts: 1, lastStatus: 400 });
  });

  it('sends nothing once its guard says the partition was lost, and errors with FencedError (not stored)', async () => {
    const s = await startServer((_h, res) => res.writeHead(500).end('again'));
    const { sink, store } = makeSink(destination(s.url));
    let current = true;
    const j = job({ guard: () => current });
    // The first attempt goes out (500); the lease is lost during the backoff: no retry is sent.
    const p = firstValueFrom(sink.send(j)).then(
      () => 'settled',
      (e: unknown) => e,
    );
    await new Promise((r) => setTimeout(r, 5));
    current = false;
    const err = await p;
    expect(err).toMatchObject({ code: 'ERR_FENCED' });
    expect(s.hits).toHaveLength(1);
    expect(store.records.size).toBe(0);
  });

  it('waits as long as a 429 Retry-After asks before retrying', async () => {
    const s = await startServer((_h, res, n) =>
      n === 1 ? res.writeHead(429, { 'retry-after': '1' }).end() : res.writeHead(200).end(),
    );
    const { sink } = makeSink(destination(s.url));
    const out = await firstValueFrom(sink.send(job()));
    expect(out).toMatchObject({ status: 'delivered', attempts: 2 });
    const gap = s.hits[1]!.at - s.hits[0]!.at;
    expect(gap).toBeGreaterThanOrEqual(950);
    expect(gap).toBeLessThan(1_800);
  });

  it('caps a long Retry-After at retry.retryAfterMaxMs', async () => {
    const s = await startServer((_h, res, n) =>
      n === 1 ? res.writeHead(503, { 'retry-after': '3600' }).end() : res.writeHead(200).end(),
    );
    const { sink } = makeSink(destination(s.url, { retry: { minDelayMs: 10, maxDelayMs: 40, retryAfterMaxMs: 100 } }));
    const out = await firstValueFrom(sink.send(job()));
    expect(out).toMatchObject({ status: 'delivered', attempts: 2 });
    const gap = s.hits[1]!.at - s.hits[0]!.at;
    expect(gap).toBeGreaterThanOrEqual(90);
    expect(gap).toBeLessThan(800);
  });

  it('retries after a timeout', async () => {
    const s = await startServer((_h, res, n) => {
      if (n > 1) res.writeHead(200).end();
      // the first request never gets an answer
    });
    const { sink } = makeSink(destination(s.url, { timeoutMs: 200 }));
    const out = await firstValueFrom(sink.send(job()));
    expect(out).toMatchObject({ status: 'delivered', attempts: 2, statusCode: 200 });
    expect(s.hits).toHaveLength(2);
  });

  it('retries a refused connection, then stores it', async () => {
    const s = await startServer(() => undefined);
    const url = s.url;
    await s.close();
    const { sink, store, limiter } = makeSink(destination(url));
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out).toMatchObject({ status: 'failed', attempts: 3, code: 'ERR_HTTP_CONNECTION' });
    expect(out.status === 'failed' && out.error).toMatch(/^connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
    expect(limiter.acquired).toBe(3);
    const rec = store.records.get(j.idempotencyKey)!;
    expect(rec).toMatchObject({ attempts: 3, lastErrorCode: 'ERR_HTTP_CONNECTION' });
    expect(rec.lastStatus).toBeUndefined();
    expect(JSON.stringify(rec)).not.toContain(TOKEN);
  });

  it('on a 401, renews renewable credentials and resends once, through the limiter', async () => {
    const s = await startServer((h, res) =>
      res.writeHead(h.headers.authorization === 'Bearer fresh-token' ? 200 : 401).end(),
    );
    let token = 'old-token';
    const invalidated: Array<Record<string, string>> = [];
    const auth: AuthProvider = {
      authorize: async () => ({ Authorization: `Bearer ${token}` }),
      invalidate: (headers) => {
        invalidated.push(headers);
        token = 'fresh-token';
        return true;
      },
      close: async () => undefined,
    };
    const { sink, limiter, store } = makeSink(destination(s.url), { auth });
    const out = await firstValueFrom(sink.send(job()));
    expect(out).toMatchObject({ status: 'delivered', attempts: 1, statusCode: 200 });
    expect(s.hits.map((h) => h.headers.authorization)).toEqual(['Bearer old-token', 'Bearer fresh-token']);
    expect(invalidated).toEqual([{ authorization: 'Bearer old-token' }]);
    expect(limiter.acquired).toBe(2);
    expect(store.records.size).toBe(0);
  });

  it('resends a 401 only once: a second 401 is a permanent failure, stored without the token', async () => {
    const s = await startServer((h, res) => res.writeHead(401).end(`denied for ${h.headers.authorization}`));
    let n = 0;
    const auth: AuthProvider = {
      authorize: async () => ({ authorization: `Bearer old-token-${++n}` }),
      invalidate: () => true,
      close: async () => undefined,
    };
    const { sink, store } = makeSink(destination(s.url), { auth });
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out).toMatchObject({ status: 'failed', attempts: 1, statusCode: 401 });
    expect(s.hits).toHaveLength(2);
    const rec = store.records.get(j.idempotencyKey)!;
    expect(rec.lastError).toBe('HTTP 401: denied for [REDACTED]');
    expectNoSecret(rec);
  });

  it('does not resend a 401 with static bearer credentials', async () => {
    const s = await startServer((_h, res) => res.writeHead(401).end());
    const { sink } = makeSink(destination(s.url));
    const out = await firstValueFrom(sink.send(job()));
    expect(out).toMatchObject({ status: 'failed', attempts: 1, statusCode: 401 });
    expect(s.hits).toHaveLength(1);
  });

  it('masks auth and sensitive header values a server echoes into its error body', async () => {
    const s = await startServer((h, res) =>
      res.writeHead(500).end(`auth=${h.headers.authorization} key=${h.headers['x-api-key']}`),
    );
    const { sink, store } = makeSink(destination(s.url));
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out.status === 'failed' && out.error).toBe('HTTP 500: auth=[REDACTED] key=[REDACTED]');
    expectNoSecret(store.records.get(j.idempotencyKey));
  });

  it('masks a sensitive header value echoed in another form (base64) though the sink was given no config secrets', async () => {
    const key = 'hdr-only-key-7f3a9c';
    const s = await startServer((_h, res) => res.writeHead(400).end(`seen ${Buffer.from(key).toString('base64')} and ${encodeURIComponent(key)}`));
    const { sink, store } = makeSink(destination(s.url, { headers: { 'x-api-key': key } }));
    const j = job();
    const out = await firstValueFrom(sink.send(j));
    expect(out.status === 'failed' && out.error).toBe('HTTP 400: seen [REDACTED] and [REDACTED]');
    expect(JSON.stringify(store.records.get(j.idempotencyKey))).not.toContain(Buffer.from(key).toString('base64'));
  });

  it('fixed credentials (auth.fixedHeaders) go into every request without an authorize() call; the fence still holds', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    let authorized = 0;
    const auth: AuthProvider = {
      fixedHeaders: { Authorization: 'Fixed fixed-cred-1234' },
      authorize: () => {
        authorized += 1;
        return Promise.resolve({ authorization: 'Fixed fixed-cred-1234' });
      },
      invalidate: () => false,
      close: () => Promise.resolve(),
    };
    const { sink } = makeSink(destination(s.url, { headers: { authorization: 'custom loses' } }), { auth });
    for (let i = 0; i < 3; i++) expect(await firstValueFrom(sink.send(job()))).toMatchObject({ status: 'delivered' });
    expect(authorized).toBe(0);
    expect(s.hits.map((h) => h.headers.authorization)).toEqual(['Fixed fixed-cred-1234', 'Fixed fixed-cred-1234', 'Fixed fixed-cred-1234']);
    const err = await firstValueFrom(sink.send(job({ guard: () => false }))).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_FENCED' });
    expect(s.hits).toHaveLength(3);
  });

  it('a 401 to fixed credentials is not resent and its reason does not hold them', async () => {
    const s = await startServer((h, res) => res.writeHead(401).end(`bad ${h.headers.authorization}`));
    const auth: AuthProvider = {
      fixedHeaders: { authorization: 'Fixed other-cred-98765' },
      authorize: () => Promise.resolve({ authorization: 'Fixed other-cred-98765' }),
      invalidate: () => false,
      close: () => Promise.resolve(),
    };
    const { sink } = makeSink(destination(s.url), { auth });
    const out = await firstValueFrom(sink.send(job()));
    expect(out).toMatchObject({ status: 'failed', attempts: 1, statusCode: 401 });
    expect(out.status === 'failed' && out.error).toBe('HTTP 401: bad [REDACTED]');
    expect(s.hits).toHaveLength(1);
  });

  it('retries a retryable auth failure and stores a permanent one', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    let calls = 0;
    const flaky: AuthProvider = {
      authorize: async () => {
        calls += 1;
        if (calls === 1) throw new DeliveryError('ERR_AUTH', 'token endpoint: HTTP 503', { retryable: true });
        return { authorization: 'Bearer fresh-token' };
      },
      invalidate: () => true,
      close: async () => undefined,
    };
    const a = makeSink(destination(s.url), { auth: flaky });
    expect(await firstValueFrom(a.sink.send(job()))).toMatchObject({ status: 'delivered', attempts: 2 });

    const refused: AuthProvider = {
      authorize: async () => {
        throw new DeliveryError('ERR_AUTH', 'token endpoint refused the grant: invalid_client', { retryable: false });
      },
      invalidate: () => true,
      close: async () => undefined,
    };
    const b = makeSink(destination(s.url), { auth: refused });
    const j = job();
    expect(await firstValueFrom(b.sink.send(j))).toMatchObject({ status: 'failed', attempts: 1, code: 'ERR_AUTH' });
    expect(b.store.records.get(j.idempotencyKey)).toMatchObject({ lastErrorCode: 'ERR_AUTH' });
    expect(s.hits).toHaveLength(1);
  });

  it('does not store when storeFailures is false', async () => {
    const s = await startServer((_h, res) => res.writeHead(404).end());
    const { sink, store } = makeSink(destination(s.url), { storeFailures: false });
    const out = await firstValueFrom(sink.send(job()));
    expect(out).toMatchObject({ status: 'failed', attempts: 1, statusCode: 404 });
    expect(store.records.size).toBe(0);
  });

  it('errors with a StoreError when the failed request cannot be stored', async () => {
    const s = await startServer((_h, res) => res.writeHead(400).end());
    const { sink, store } = makeSink(destination(s.url));
    store.failPut = true;
    const err = await firstValueFrom(sink.send(job())).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('ERR_STORE');
  });

  it('signs the request when signing is configured', async () => {
    const secret = 'whsec_' + Buffer.from('sink-test-signing-secret-32bytes').toString('base64');
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const { sink } = makeSink(destination(s.url, { signing: { secrets: [secret] } }));
    const j = job();
    await firstValueFrom(sink.send(j));
    const h = s.hits[0]!;
    expect(h.headers['webhook-id']).toBe(j.idempotencyKey);
    expect(
      verifyWebhook({
        secrets: [secret],
        id: String(h.headers['webhook-id']),
        timestamp: String(h.headers['webhook-timestamp']),
        body: h.body,
        signature: String(h.headers['webhook-signature']),
      }),
    ).toBe(true);
  });

  it('cancels the request in flight when unsubscribed', async () => {
    const s = await startServer(() => undefined);
    const { sink, store } = makeSink(destination(s.url, { timeoutMs: 5_000 }));
    const outcomes: DeliveryOutcome[] = [];
    const sub = sink.send(job()).subscribe((o) => outcomes.push(o));
    while (s.hits.length === 0) await new Promise((r) => setTimeout(r, 5));
    sub.unsubscribe();
    for (let i = 0; i < 100 && s.closed === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(s.closed).toBe(1);
    expect(outcomes).toEqual([]);
    expect(store.records.size).toBe(0);
  });

  it('takes a permit granted later (as the Redis limiter may) and sends only then', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const limiter = manualLimiter();
    const { sink } = makeSink(destination(s.url), { limiter });
    const outcomes: DeliveryOutcome[] = [];
    let completed = false;
    sink.send(job()).subscribe({ next: (o) => outcomes.push(o), complete: () => (completed = true) });
    await tick();
    expect(s.hits).toHaveLength(0);
    expect(limiter.waiting).toHaveLength(1);
    const w = limiter.waiting.shift()!;
    w.next();
    w.complete();
    while (!completed) await tick(5);
    expect(outcomes).toMatchObject([{ status: 'delivered', attempts: 1, statusCode: 200 }]);
    expect(s.hits).toHaveLength(1);
  });

  it('unsubscribing while waiting for a permit gives the place up and sends nothing', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const limiter = manualLimiter();
    const { sink } = makeSink(destination(s.url), { limiter });
    const outcomes: DeliveryOutcome[] = [];
    const sub = sink.send(job()).subscribe((o) => outcomes.push(o));
    expect(limiter.waiting).toHaveLength(1);
    sub.unsubscribe();
    expect(limiter.gaveUp).toBe(1);
    expect(limiter.waiting).toHaveLength(0);
    await tick(50);
    expect(s.hits).toHaveLength(0);
    expect(outcomes).toEqual([]);
  });

  it('unsubscribing while the auth headers are pending sends nothing', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    let release!: (h: Record<string, string>) => void;
    const auth: AuthProvider = {
      authorize: () => new Promise((r) => (release = r)),
      invalidate: () => false,
      close: async () => undefined,
    };
    const { sink, store } = makeSink(destination(s.url), { auth });
    const outcomes: DeliveryOutcome[] = [];
    const sub = sink.send(job()).subscribe((o) => outcomes.push(o));
    await tick(5);
    sub.unsubscribe();
    release({ authorization: 'Bearer fresh-token' });
    await tick(50);
    expect(s.hits).toHaveLength(0);
    expect(outcomes).toEqual([]);
    expect(store.records.size).toBe(0);
  });

  it('errors with ERR_RATE_LIMITER and no outcome when the limiter completes without a permit', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const limiter: RateLimiter = { acquire: () => new Observable<void>((sub) => sub.complete()) };
    const { sink, store } = makeSink(destination(s.url), { limiter });
    const outcomes: DeliveryOutcome[] = [];
    let failed: unknown;
    sink.send(job()).subscribe({ next: (o) => outcomes.push(o), error: (e: unknown) => (failed = e) });
    expect(failed).toMatchObject({ code: 'ERR_RATE_LIMITER' });
    expect(outcomes).toEqual([]);
    await tick();
    expect(s.hits).toHaveLength(0);
    expect(store.records.size).toBe(0);
  });

  it('a limiter error abandons the export: nothing sent, nothing stored, send errors (the message is nak\'ed)', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const limiter: RateLimiter = {
      acquire: () => new Observable<void>((sub) => sub.error(new HttpDestinationError('ERR_RATE_LIMITER', 'the redis rate limiter is closed'))),
    };
    const { sink, store } = makeSink(destination(s.url), { limiter });
    const err = await firstValueFrom(sink.send(job())).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_RATE_LIMITER' });
    expect(store.records.size).toBe(0);
    expect(s.hits).toHaveLength(0);
  });

  it('uses only the first permit of a limiter that emits more than once', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    let acquired = 0;
    const limiter: RateLimiter = {
      acquire: () =>
        new Observable<void>((sub) => {
          acquired += 1;
          sub.next();
          sub.next();
          sub.complete();
        }),
    };
    const { sink } = makeSink(destination(s.url), { limiter });
    const outcomes: DeliveryOutcome[] = [];
    await new Promise<void>((resolve) => sink.send(job()).subscribe({ next: (o) => outcomes.push(o), complete: resolve }));
    expect(outcomes).toMatchObject([{ status: 'delivered', attempts: 1 }]);
    expect(acquired).toBe(1);
    expect(s.hits).toHaveLength(1);
  });

  it('a guard already lost at the first attempt: nothing sent, FencedError, not stored', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const { sink, store, limiter } = makeSink(destination(s.url));
    const err = await firstValueFrom(sink.send(job({ guard: () => false }))).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_FENCED' });
    expect(limiter.acquired).toBe(1);
    expect(s.hits).toHaveLength(0);
    expect(store.records.size).toBe(0);
  });

  it('unsubscribing during the retry wait sends no further attempt', async () => {
    const s = await startServer((_h, res) => res.writeHead(503).end());
    const retries: number[] = [];
    const { sink, store } = makeSink(destination(s.url, { retry: { minDelayMs: 100, maxDelayMs: 100, retryAfterMaxMs: 100 } }), {
      onRetry: (info) => retries.push(info.attempt),
    });
    const outcomes: DeliveryOutcome[] = [];
    const sub = sink.send(job()).subscribe((o) => outcomes.push(o));
    while (retries.length === 0) await tick(5);
    sub.unsubscribe();
    await tick(200);
    expect(s.hits).toHaveLength(1);
    expect(retries).toEqual([1]);
    expect(outcomes).toEqual([]);
    expect(store.records.size).toBe(0);
  });

  it('tells onRetry of each retry, counting from the first attempt', async () => {
    const s = await startServer((_h, res, n) => res.writeHead(n < 3 ? 500 : 200).end());
    const retries: Array<{ attempt: number; key: string }> = [];
    const { sink } = makeSink(destination(s.url), { onRetry: (info) => retries.push({ attempt: info.attempt, key: info.job.idempotencyKey }) });
    const j = job();
    expect(await firstValueFrom(sink.send(j))).toMatchObject({ status: 'delivered', attempts: 3 });
    expect(retries).toEqual([
      { attempt: 1, key: j.idempotencyKey },
      { attempt: 2, key: j.idempotencyKey },
    ]);
  });

  it('close() closes its transport and auth provider once', async () => {
    const closed: string[] = [];
    const transport: HttpTransport = {
      send: async () => ({ statusCode: 200, headers: {} }),
      dispatcher: createTransport({ destination: { connections: 1, timeoutMs: 100 } }).dispatcher,
      close: async () => {
        closed.push('transport');
      },
    };
    const auth: AuthProvider = {
      authorize: async () => ({}),
      invalidate: () => false,
      close: async () => {
        closed.push('auth');
      },
    };
    const sink = new HttpSink({ destination: destination('http://127.0.0.1:9/'), limiter: instantLimiter(), failedStore: new MemoryFailedStore(), transport, auth });
    await sink.close();
    await sink.close();
    expect(closed.sort()).toEqual(['auth', 'transport']);
    await transport.dispatcher.close();
  });
});

describe('createSinks', () => {
  it('a shared auth provider with fixed credentials: the sinks of createSinks use them without authorize()', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    let authorized = 0;
    const sinks = createSinks(
      {
        destinations: [destination(s.url)],
        dataflows: [{ id: 'f1', destinationId: 'dest-1', audiences: [], attributes: [], includeSegmentNames: false, includeSegmentTimestamps: false, rateLimit: 100 }],
      },
      {
        failedStore: new MemoryFailedStore(),
        limiterFor: () => ({ acquire: () => of(undefined) }),
        authFor: () => ({
          fixedHeaders: { authorization: 'Fixed shared-cred-4321' },
          authorize: () => {
            authorized += 1;
            return Promise.resolve({ authorization: 'Fixed shared-cred-4321' });
          },
          invalidate: () => false,
          close: () => Promise.resolve(),
        }),
      },
    );
    cleanups.push(() => sinks.close());
    expect(await firstValueFrom(sinks.get('f1')!.send(job({ dataflowId: 'f1' })))).toMatchObject({ status: 'delivered' });
    expect(s.hits[0]!.headers.authorization).toBe('Fixed shared-cred-4321');
    expect(authorized).toBe(0);
  });

  it('builds one sink per dataflow, sharing transport and auth per destination', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const d1 = destination(s.url);
    const d2 = destination(s.url, { id: 'dest-2', auth: { type: 'none' }, headers: {} });
    const flow = (id: string, destinationId: string): DataflowConfig => ({
      id,
      destinationId,
      audiences: [{ id: 'aud-1', mappingCreatedAt: 0, mappingUpdatedAt: 0 }],
      attributes: [],
      includeSegmentNames: false,
      includeSegmentTimestamps: false,
      rateLimit: 100,
    });
    const transports: string[] = [];
    const limiters: string[] = [];
    const closed: string[] = [];
    const sinks = createSinks(
      { destinations: [d1, d2], dataflows: [flow('f1', 'dest-1'), flow('f2', 'dest-1'), flow('f3', 'dest-2')] },
      {
        failedStore: new MemoryFailedStore(),
        limiterFor: (f) => {
          limiters.push(`${f.id}:${f.rateLimit}`);
          return { acquire: () => of(undefined) };
        },
        transportFor: (d) => {
          transports.push(d.id);
          const t = createTransport({ destination: d });
          return { ...t, close: async () => { closed.push(d.id); await t.close(); } };
        },
      },
    );
    expect(transports).toEqual(['dest-1', 'dest-2']);
    expect(limiters).toEqual(['f1:100', 'f2:100', 'f3:100']);
    expect([...sinks.sinks.keys()]).toEqual(['f1', 'f2', 'f3']);
    expect(sinks.get('nope')).toBeUndefined();

    expect(await firstValueFrom(sinks.get('f1')!.send(job({ dataflowId: 'f1' })))).toMatchObject({ status: 'delivered' });
    expect(await firstValueFrom(sinks.get('f3')!.send(job({ dataflowId: 'f3' })))).toMatchObject({ status: 'delivered' });
    expect(s.hits[0]!.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(s.hits[1]!.headers.authorization).toBeUndefined();

    // closing one sink leaves the shared transport open for the other dataflow
    await sinks.get('f1')!.close();
    expect(closed).toEqual([]);
    expect(await firstValueFrom(sinks.get('f2')!.send(job({ dataflowId: 'f2' })))).toMatchObject({ status: 'delivered' });

    await sinks.close();
    await sinks.close();
    expect(closed.sort()).toEqual(['dest-1', 'dest-2']);
  });

  it('defaults to an in-memory token bucket per dataflow and real transports', async () => {
    const s = await startServer((_h, res) => res.writeHead(200).end());
    const sinks = createSinks(
      {
        destinations: [destination(s.url)],
        dataflows: [
          {
            id: 'f1',
            destinationId: 'dest-1',
            audiences: [{ id: 'aud-1', mappingCreatedAt: 0, mappingUpdatedAt: 0 }],
            attributes: [],
            includeSegmentNames: false,
            includeSegmentTimestamps: false,
            rateLimit: 20,
          },
        ],
      },
      { failedStore: new MemoryFailedStore() },
    );
    cleanups.push(() => sinks.close());
    const outs = await Promise.all(
      Array.from({ length: 5 }, () => firstValueFrom(sinks.get('f1')!.send(job({ dataflowId: 'f1' })))),
    );
    expect(outs.map((o) => o.status)).toEqual(Array(5).fill('delivered'));
    expect(s.hits).toHaveLength(5);
    // 20/s with a burst of 1: five permits take about 200 ms
    expect(s.hits.at(-1)!.at - s.hits[0]!.at).toBeGreaterThanOrEqual(150);
  });
});
