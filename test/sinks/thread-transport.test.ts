/**
 * What the thread transport adds to the transport contract (which test/sinks/transport.test.ts,
 * excerpt-masking.test.ts and test/tls/mtls.test.ts check against both transports): requests
 * and answers cross in batches, a thread that dies fails its pending requests (retryably) and
 * the next send starts a new one, the thread never holds a process that has nothing pending,
 * and the main-side `dispatcher` has the destination's settings.
 */
import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Worker } from 'node:worker_threads';
import { firstValueFrom, of } from 'rxjs';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config/load.js';
import { DeliveryError } from '../../src/errors.js';
import { createLogger } from '../../src/observability/logger.js';
import type { HttpRequest } from '../../src/sinks/http/request.js';
import { createThreadTransport, sharedTransportThread, TransportThread } from '../../src/sinks/http/thread-transport.js';
import type { HttpTransport } from '../../src/sinks/http/transport.js';
import type { FailedRequestStore } from '../../src/sinks/types.js';
import { createSinks } from '../../src/sinks/http/sinks.js';
import { HTTP_SINK_DEFAULTS } from '../../src/sinks/http/sink.js';
import { AttemptHandle } from '../../src/operators/attempt-exports.js';
import { Metrics } from '../../src/observability/metrics.js';
import { stalePermit } from '../../src/sinks/http/exchange.js';
import type { RateLimiter } from '../../src/stores/rate-limiter.js';
import { openSinks } from '../../src/worker/runtime.js';
import { ANS_READY } from '../../src/sinks/http/thread-protocol.js';
import { sharedClock } from '../../src/sinks/http/shared-clock.js';
import { generatePki, type TestPki } from '../support/pki.js';

const servers: Server[] = [];
const transports: HttpTransport[] = [];
afterEach(async () => {
  await Promise.all(transports.splice(0).map((t) => t.close()));
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function server(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; received: () => number }> {
  let received = 0;
  const s = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received += 1;
      handler(req, res);
    });
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}/profiles`, received: () => received };
}

const post = (url: string): HttpRequest => ({ url, method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });

function transport(thread: TransportThread, connections = 8): HttpTransport {
  const t = createThreadTransport({ destination: { connections, timeoutMs: 10_000 }, thread });
  transports.push(t);
  return t;
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

describe('thread transport: batching', () => {
  it('many sends of one turn cross in one message, and their answers in fewer messages than answers', async () => {
    const n = 50;
    // Hold every request until all have arrived, then answer them all at once.
    const held: ServerResponse[] = [];
    const s = await server((_req, res) => {
      held.push(res);
      if (held.length === n) for (const r of held) r.writeHead(200).end();
    });
    const thread = new TransportThread();
    const t = transport(thread, n);
    const all = Array.from({ length: n }, () => t.send(post(s.url)));
    const statuses = (await Promise.all(all)).map((r) => r.statusCode);
    expect(statuses).toEqual(Array(n).fill(200));
    // one message: the destination's dispatcher opened and all the requests
    expect(thread.posted).toBe(1);
    // answers of one event-loop turn of the thread share a message
    expect(thread.received).toBeGreaterThanOrEqual(1);
    expect(thread.received).toBeLessThan(n);
  });

  it('two destinations share one thread, each with its own dispatcher', async () => {
    const a = await server((_req, res) => res.writeHead(200).end());
    const b = await server((_req, res) => res.writeHead(202).end());
    const thread = new TransportThread();
    const ta = transport(thread, 1);
    const tb = transport(thread, 1);
    const [ra, rb] = await Promise.all([ta.send(post(a.url)), tb.send(post(b.url))]);
    expect([ra.statusCode, rb.statusCode]).toEqual([200, 202]);
    expect(thread.started).toBe(1);
    expect(thread.posted).toBe(1);
  });
});

describe('thread transport: a paced dataflow (SendOptions.pace)', () => {
  it('no more than perSecond of a dataflow leave the thread in a second: the rest wait for the window', async () => {
    const arrivals: number[] = [];
    const s = await server((_req, res) => {
      arrivals.push(performance.now());
      res.writeHead(200).end();
    });
    const thread = new TransportThread();
    const t = transport(thread, 4);
    const pace = { key: 'flow-1', perSecond: 10 }; // 10 in a second at most
    const unpaced = Array.from({ length: 12 }, () => t.send(post(s.url)));
    await Promise.all(unpaced); // another key (none): not held
    const first = performance.now();
    const sends = Array.from({ length: 14 }, () => t.send(post(s.url), { pace }));
    await Promise.all(sends);
    const paced = arrivals.slice(12);
    expect(paced).toHaveLength(14);
    // the 11th left one window after the first (a slower machine only makes it later)
    expect(paced[10]! - first).toBeGreaterThanOrEqual(900);
    expect(paced[9]! - first).toBeLessThan(paced[10]! - first);
  });
});

describe('thread transport: a permit deadline is checked after the pace gate (SendOptions.permitDeadline)', () => {
  it('a request the gate holds past its permit deadline is not sent (ERR_PERMIT_STALE); one still within it is', async () => {
    const urls: string[] = [];
    const s = await server((req, res) => {
      urls.push(req.url ?? '');
      res.writeHead(200).end();
    });
    const seen = (u: string): string => `${s.url}?${u}`;
    const thread = new TransportThread();
    const t = transport(thread, 4);
    // The thread started and answering first: else its start alone (~0.3 s under tsx) could
    // outlast the 300-ms permit below, which would then be found stale on arrival, not held.
    const warm = await server((_req, res) => res.writeHead(200).end());
    expect((await t.send(post(warm.url))).statusCode).toBe(200);
    // one a second: the first leaves, the ones behind it wait for the window (a second at least)
    const pace = { key: 'flow-deadline', perSecond: 1 };
    const first = t.send(post(seen('first')), { pace });
    // its permit is good for 300 ms: less than the gate holds it, whatever the machine's speed
    const stale = t.send(post(seen('stale')), { pace, permitDeadline: sharedClock() + 300 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    const fresh = t.send(post(seen('fresh')), { pace, permitDeadline: sharedClock() + 60_000 });
    expect((await first).statusCode).toBe(200);
    expect(await stale).toMatchObject({ code: 'ERR_PERMIT_STALE', retryable: true });
    expect((await fresh).statusCode).toBe(200);
    expect(urls).toEqual(['/profiles?first', '/profiles?fresh']);
  });
});

describe('thread transport: the thread dies', () => {
  it('pending sends reject with a retryable ERR_HTTP_CONNECTION, and a later send starts a new thread', async () => {
    const silent = await server(() => undefined); // never answers
    const ok = await server((_req, res) => res.writeHead(200).end());
    const thread = new TransportThread();
    const troubles: Array<[string, number]> = [];
    thread.onTrouble = (why, n) => troubles.push([why, n]);
    const t = transport(thread);
    const pending = Array.from({ length: 5 }, () =>
      t.send(post(silent.url)).then(
        () => undefined,
        (e: unknown) => e,
      ),
    );
    await until(() => silent.received() === 5);
    expect(thread.inFlight).toBe(5);
    await thread.current!.terminate();
    const errors = await Promise.all(pending);
    for (const e of errors) {
      expect(e).toBeInstanceOf(DeliveryError);
      expect((e as DeliveryError).code).toBe('ERR_HTTP_CONNECTION');
      expect((e as DeliveryError).retryable).toBe(true);
      expect((e as DeliveryError).message).toMatch(/^transport thread exited/);
    }
    expect(troubles).toEqual([['exited (code 1)', 5]]);
    expect(thread.troubles).toEqual({ exited: 1, failed: 0, stuck: 0 });
    expect(thread.inFlight).toBe(0);
    expect((await t.send(post(ok.url))).statusCode).toBe(200);
    expect(thread.started).toBe(2);
  });

  it('a thread that fails (an uncaught error) rejects its pending sends, naming no more than the error code', async () => {
    const thread = new TransportThread({ spawn: () => new Worker('setTimeout(() => { throw new TypeError("boom with a secret") }, 50)', { eval: true }) });
    const t = transport(thread);
    const err = await t.send(post('http://127.0.0.1:9/')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DeliveryError);
    expect((err as DeliveryError).code).toBe('ERR_HTTP_CONNECTION');
    expect((err as DeliveryError).retryable).toBe(true);
    expect((err as DeliveryError).message).toBe('transport thread failed (TypeError)');
    // the exit that follows the error is not a second trouble
    await until(() => thread.current === undefined);
    await new Promise((r) => setTimeout(r, 50));
    expect(thread.troubles).toEqual({ exited: 0, failed: 1, stuck: 0 });
  });
});

describe('thread transport: a thread that stops answering (the watchdog)', () => {
  /** A thread that says it is ready (or not), then never answers anything. */
  const mute = (announce: boolean) => () =>
    new Worker(
      `const { parentPort } = require('node:worker_threads'); ${announce ? `parentPort.postMessage([${ANS_READY}]);` : ''} parentPort.on('message', () => {}); setInterval(() => {}, 1000);`,
      { eval: true },
    );

  it('a send pending stuckAfterMs past its deadline: the thread is terminated, what was pending rejects (retryable), the next send starts a new thread', async () => {
    let spawned = 0;
    // (startTimeoutMs stays 10 s: a loaded machine may take longer than 100 ms to start a thread)
    const thread = new TransportThread({ spawn: () => (spawned++ === 0 ? mute(true)() : new Worker(`process.exit(0)`, { eval: true })), stuckAfterMs: 100 });
    const troubles: Array<[string, number]> = [];
    thread.onTrouble = (why, n) => troubles.push([why, n]);
    const t = createThreadTransport({ destination: { connections: 2, timeoutMs: 50 }, thread });
    transports.push(t);
    await thread.ready();
    const first = thread.current!;
    let exited = false;
    first.once('exit', () => (exited = true));
    const errors = await Promise.all(
      [1, 2].map(() =>
        t.send(post('http://127.0.0.1:9/')).then(
          () => undefined,
          (e: unknown) => e,
        ),
      ),
    );
    for (const e of errors) {
      expect(e).toBeInstanceOf(DeliveryError);
      expect((e as DeliveryError).code).toBe('ERR_HTTP_CONNECTION');
      expect((e as DeliveryError).retryable).toBe(true);
      expect((e as DeliveryError).message).toBe('transport thread stuck (no answer within 150 ms)');
    }
    expect(thread.inFlight).toBe(0);
    expect(troubles).toEqual([['stuck (no answer within 150 ms)', 2]]);
    await until(() => exited); // terminated, not left running
    expect(thread.troubles).toEqual({ exited: 0, failed: 0, stuck: 1 }); // its exit is not a second one
    void t.send(post('http://127.0.0.1:9/')).catch(() => undefined);
    expect(thread.started).toBe(2);
  });

  it('a thread that never announces itself: ready() resolves after startTimeoutMs and the thread is terminated', async () => {
    const thread = new TransportThread({ spawn: mute(false), startTimeoutMs: 100 });
    const started = performance.now();
    const readyP = thread.ready();
    const w = thread.current!;
    let exited = false;
    w.once('exit', () => (exited = true));
    await readyP;
    expect(performance.now() - started).toBeGreaterThanOrEqual(100);
    expect(thread.current).toBeUndefined();
    await until(() => exited);
    expect(thread.troubles.stuck).toBe(1);
  });
});

describe('thread transport: lifecycle', () => {
  it('ready() starts the thread and resolves once it takes requests; it also resolves (never hangs) when the thread dies first', async () => {
    const thread = new TransportThread();
    await thread.ready();
    expect(thread.started).toBe(1);
    const w = thread.current!;
    const s = await server((_req, res) => res.writeHead(200).end());
    expect((await transport(thread).send(post(s.url))).statusCode).toBe(200);
    expect(thread.started).toBe(1); // the send used the thread ready() started
    await w.terminate();

    const dying = new TransportThread({ spawn: () => new Worker('process.exit(3)', { eval: true }) });
    await dying.ready();
    expect(dying.current).toBeUndefined();
  });


  it('close() closes the dispatcher after its requests in flight, then stops the thread once the last transport is closed', async () => {
    const s = await server((_req, res) => setTimeout(() => res.writeHead(200).end(), 100));
    const thread = new TransportThread();
    const a = createThreadTransport({ destination: { connections: 2, timeoutMs: 5_000 }, thread });
    const b = createThreadTransport({ destination: { connections: 2, timeoutMs: 5_000 }, thread });
    const sent = a.send(post(s.url));
    await until(() => s.received() === 1);
    await a.close();
    // the request in flight was answered before the close completed
    expect((await sent).statusCode).toBe(200);
    expect(thread.current).toBeDefined(); // b is still open
    const exited = new Promise((r) => thread.current!.once('exit', r));
    await b.close();
    expect(thread.current).toBeUndefined();
    await exited;
    await a.close(); // idempotent
    const late = await a.send(post(s.url)).then(
      () => undefined,
      (e: unknown) => e as DeliveryError,
    );
    expect(late?.message).toBe('transport closed');
  });

  // A child process: it exits by itself only if the thread holds no handle once nothing is pending.
  async function child(mode: 'close' | 'no-close', url: string): Promise<{ code: number | null; out: string }> {
    const src = new URL('../../src/sinks/http/thread-transport.ts', import.meta.url).href;
    const code = `
      const { createThreadTransport } = await import(${JSON.stringify(src)});
      const t = createThreadTransport({ destination: { connections: 1, timeoutMs: 5000 } });
      const res = await t.send({ url: ${JSON.stringify(url)}, method: 'POST', headers: {}, body: '{}' });
      console.log('status', res.statusCode);
      if (${JSON.stringify(mode)} === 'close') await t.close();
    `;
    return new Promise((resolve) => {
      const p = execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: process.cwd(), timeout: 45_000 }, (_err, stdout, stderr) =>
        resolve({ code: p.exitCode, out: `${stdout}${stderr}` }),
      );
    });
  }

  it.each(['close', 'no-close'] as const)('a process exits by itself once its answer is in (%s)', async (mode) => {
    // The answer takes a while: the thread must hold the process while the request is pending.
    const s = await server((_req, res) => setTimeout(() => res.writeHead(200).end(), 300));
    const r = await child(mode, s.url);
    expect(r.out).toContain('status 200');
    expect(r.code).toBe(0);
  });
});

describe('thread transport: the main-side dispatcher (a same-origin token endpoint)', () => {
  let pki: TestPki;
  let mtls: HttpsServer;
  let url: string;
  beforeAll(async () => {
    pki = await generatePki();
    mtls = createHttpsServer({ cert: pki.server.cert, key: pki.server.key, ca: pki.ca.cert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      const cn = (req.socket as TLSSocket).getPeerCertificate()?.subject?.CN;
      req.resume();
      req.on('end', () => res.writeHead(200).end(String(cn)));
    });
    await new Promise<void>((r) => mtls.listen(0, '127.0.0.1', r));
    url = `https://127.0.0.1:${(mtls.address() as AddressInfo).port}/token`;
  });
  afterAll(async () => {
    mtls?.closeAllConnections();
    await new Promise((r) => mtls?.close(r));
    await pki?.cleanup();
  });

  it('has the destination TLS settings (client certificate, CA) on the main thread', async () => {
    const thread = new TransportThread();
    const tls = { cert: Buffer.from(pki.client.cert), key: Buffer.from(pki.client.key), ca: Buffer.from(pki.ca.cert), rejectUnauthorized: true };
    const t = createThreadTransport({ destination: { connections: 1, timeoutMs: 5_000, tls }, thread });
    transports.push(t);
    const res = await request(url, { method: 'POST', body: 'grant_type=client_credentials', dispatcher: t.dispatcher });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe('test-client');
    expect(thread.started).toBe(0); // the token request did not need the thread
  });
});

describe('worker.httpThread: openSinks', () => {
  const noFailures: FailedRequestStore = { put: async () => undefined, list: async () => [], remove: async () => undefined, close: async () => undefined };

  it.each([
    [undefined, true], // one host (the local store, the default): the thread
    [true, true],
    [false, false],
  ] as const)('httpThread %s: sends through the transport thread: %s', async (httpThread, onThread) => {
    const s = await server((_req, res) => res.writeHead(200).end());
    const config = resolveConfig(
      {
        source: { kind: 'file', path: 'events.jsonl' },
        audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
        destinations: [{ id: 'dest-1', endpoint: s.url }],
        dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
        ...(httpThread === undefined ? {} : { worker: { httpThread } }),
      },
      { env: {}, baseDir: '/' },
    );
    const sinks = openSinks(config, { failed: noFailures, logger: createLogger({ level: 'silent' }), storeFailures: false });
    const before = sharedTransportThread().posted;
    try {
      const out = await firstValueFrom(
        sinks.get('flow-1')!.send({ dataflowId: 'flow-1', destinationId: 'dest-1', profileId: 'p-1', idempotencyKey: 'k-1', payload: { a: 1 } }),
      );
      expect(out.status).toBe('delivered');
    } finally {
      await sinks.close();
    }
    expect(s.received()).toBe(1);
    expect(sharedTransportThread().posted > before).toBe(onThread);
  });
});

describe('openSinks counts stale permits in the metrics', () => {
  it('a permit already expired at the socket: each stale answer counted for its dataflow, nothing sent', async () => {
    const s = await server((_req, res) => res.writeHead(200).end());
    const config = resolveConfig(
      {
        source: { kind: 'file', path: 'events.jsonl' },
        audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
        destinations: [{ id: 'dest-1', endpoint: s.url, retry: { minDelayMs: 1, maxDelayMs: 2 } }],
        dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
        worker: { httpThread: false },
      },
      { env: {}, baseDir: '/' },
    );
    const metrics = new Metrics();
    const noFailures: FailedRequestStore = { put: async () => undefined, list: async () => [], remove: async () => undefined, close: async () => undefined };
    // (-1: every permit's deadline is already past when it is set, whatever the clock's resolution)
    const slots: RateLimiter = { acquire: () => of(undefined), tryAcquire: () => true, maxPermitAgeMs: -1 };
    const sinks = openSinks(config, { failed: noFailures, logger: createLogger({ level: 'silent' }), storeFailures: false, limiterFor: () => slots, metrics });
    try {
      const job = { dataflowId: 'flow-1', destinationId: 'dest-1', profileId: 'p-1', idempotencyKey: 'k-1', payload: {} };
      // every send finds its permit expired: the attempt ends after its stale resends
      await expect(sinks.get('flow-1')!.attempt(job, new AttemptHandle())).rejects.toMatchObject({ code: 'ERR_PERMIT_STALE' });
    } finally {
      await sinks.close();
    }
    expect(s.received()).toBe(0);
    expect(metrics.flow('flow-1').stalePermits).toBe(HTTP_SINK_DEFAULTS.maxStaleResends + 1);
  });
});

describe('worker.httpThread: openSinks warns of the thread\'s troubles', () => {
  it('a thread that dies is a warning naming why and how many requests failed', async () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', destination: { write: (l: string) => (lines.push(l), true) } as unknown as NodeJS.WritableStream });
    const config = resolveConfig(
      {
        source: { kind: 'file', path: 'events.jsonl' },
        audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
        destinations: [{ id: 'dest-1', endpoint: 'http://127.0.0.1:9/' }],
        dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
      },
      { env: {}, baseDir: '/' },
    );
    const shared = sharedTransportThread();
    const before = shared.onTrouble;
    shared.onTrouble = undefined;
    const noFailures: FailedRequestStore = { put: async () => undefined, list: async () => [], remove: async () => undefined, close: async () => undefined };
    const sinks = openSinks(config, { failed: noFailures, logger, storeFailures: false });
    try {
      expect(shared.onTrouble).toBeTypeOf('function');
      shared.onTrouble!('exited (code 7)', 3);
      const warn = lines.map((l) => JSON.parse(l) as { level: number; msg: string; pending: number }).find((l) => l.msg.startsWith('transport thread'));
      expect(warn).toMatchObject({ level: 40, pending: 3, msg: 'transport thread exited (code 7): its 3 pending request(s) fail (retryable) and the next send starts a new thread' });
    } finally {
      await sinks.close();
      shared.onTrouble = before;
    }
  });
});

describe('createSinks: each dataflow passes its rate limit to the transport (SendOptions.pace)', () => {
  it('pace is { key: dataflow id, perSecond: rateLimit } on every send', async () => {
    const config = resolveConfig(
      {
        source: { kind: 'file', path: 'events.jsonl' },
        audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
        destinations: [{ id: 'dest-1', endpoint: 'http://127.0.0.1:9/x' }],
        dataflows: [
          { id: 'flow-a', destination: 'dest-1', audiences: ['aud-1'], rateLimit: 25 },
          { id: 'flow-b', destination: 'dest-1', audiences: ['aud-1'], rateLimit: 400 },
        ],
      },
      { env: {}, baseDir: '/' },
    );
    const seen: unknown[] = [];
    const stub: HttpTransport = {
      send: (_req, opts) => {
        seen.push(opts?.pace);
        return Promise.resolve({ statusCode: 200, headers: {} });
      },
      get dispatcher(): never {
        throw new Error('not used');
      },
      close: () => Promise.resolve(),
    };
    const noFailures: FailedRequestStore = { put: async () => undefined, list: async () => [], remove: async () => undefined, close: async () => undefined };
    const sinks = createSinks(config, { failedStore: noFailures, transportFor: () => stub, storeFailures: false });
    try {
      for (const id of ['flow-a', 'flow-b']) {
        const out = await firstValueFrom(sinks.get(id)!.send({ dataflowId: id, destinationId: 'dest-1', profileId: 'p-1', idempotencyKey: `${id}:k`, payload: {} }));
        expect(out.status).toBe('delivered');
      }
    } finally {
      await sinks.close();
    }
    expect(seen).toEqual([
      { key: 'flow-a', perSecond: 25 },
      { key: 'flow-b', perSecond: 400 },
    ]);
  });
  it('onStale is told the dataflow of each stale-permit answer (the stale-permits metric)', async () => {
    const config = resolveConfig(
      {
        source: { kind: 'file', path: 'events.jsonl' },
        audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
        destinations: [{ id: 'dest-1', endpoint: 'http://127.0.0.1:9/x' }],
        dataflows: [{ id: 'flow-s', destination: 'dest-1', audiences: ['aud-1'], rateLimit: 100 }],
      },
      { env: {}, baseDir: '/' },
    );
    let sends = 0;
    const stub: HttpTransport = {
      // the first send finds its permit expired at the socket; the resend goes through
      send: () => (++sends === 1 ? Promise.reject(stalePermit()) : Promise.resolve({ statusCode: 200, headers: {} })),
      get dispatcher(): never {
        throw new Error('not used');
      },
      close: () => Promise.resolve(),
    };
    const slots: RateLimiter = { acquire: () => of(undefined), tryAcquire: () => true, maxPermitAgeMs: 50 };
    const noFailures: FailedRequestStore = { put: async () => undefined, list: async () => [], remove: async () => undefined, close: async () => undefined };
    const stale: string[] = [];
    const sinks = createSinks(config, { failedStore: noFailures, transportFor: () => stub, limiterFor: () => slots, storeFailures: false, onStale: (id) => stale.push(id) });
    try {
      const out = await firstValueFrom(sinks.get('flow-s')!.send({ dataflowId: 'flow-s', destinationId: 'dest-1', profileId: 'p-1', idempotencyKey: 'k', payload: {} }));
      expect(out).toMatchObject({ status: 'delivered', attempts: 1 });
    } finally {
      await sinks.close();
    }
    expect(sends).toBe(2);
    expect(stale).toEqual(['flow-s']);
  });
});
