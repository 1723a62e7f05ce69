import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import type { DestinationConfig, ResolvedTls } from '../../src/config/load.js';
import { DeliveryError } from '../../src/errors.js';
import type { HttpRequest } from '../../src/sinks/http/request.js';
import { sharedClock } from '../../src/sinks/http/shared-clock.js';
import { createThreadTransport } from '../../src/sinks/http/thread-transport.js';
import { Cancellation, createTransport, parseRetryAfter, type HttpTransport } from '../../src/sinks/http/transport.js';

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
  socketPort: number;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

interface TestServer {
  url: string;
  port: number;
  received: Received[];
  connections: number;
  close(): Promise<void>;
}

function listen(server: Server, handler: Handler): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const state: TestServer = {
    url: '',
    port: 0,
    received: [],
    connections: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  server.on('connection', (s: Socket) => {
    state.connections += 1;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('secureConnection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      state.received.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body,
        socketPort: req.socket.remotePort ?? 0,
      });
      handler(req, res, body);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      state.port = (server.address() as AddressInfo).port;
      resolve(state);
    });
  });
}

async function startServer(handler: Handler, https?: ServerOptions): Promise<TestServer> {
  const server = https ? createHttpsServer(https) : createServer();
  const s = await listen(server, handler);
  s.url = `${https ? 'https' : 'http'}://127.0.0.1:${s.port}`;
  return s;
}

function dest(over: Partial<DestinationConfig> = {}): Pick<DestinationConfig, 'connections' | 'timeoutMs' | 'tls'> {
  return { connections: 4, timeoutMs: 2_000, ...over };
}

function post(url: string, headers: Record<string, string> = {}, body = '{"a":1}'): HttpRequest {
  return { url, method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body };
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

const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  while (open.length) await open.pop()!.close();
});

async function server(handler: Handler, https?: ServerOptions): Promise<TestServer> {
  const s = await startServer(handler, https);
  open.push(s);
  return s;
}
type Kind = 'inline' | 'thread';
type Dest = Pick<DestinationConfig, 'connections' | 'timeoutMs' | 'tls'>;
/** The two transports with one contract: undici on the main thread, or on the transport thread. */
const make: Record<Kind, (d: Dest) => HttpTransport> = {
  inline: (d) => createTransport({ destination: d }),
  thread: (d) => createThreadTransport({ destination: d }),
};

describe.each(['inline', 'thread'] as const)('%s transport', (kind) => {
  function transport(d: Dest): HttpTransport {
    const t = make[kind](d);
    open.push(t);
    return t;
  }
  // One transport open for the whole file: the shared thread stays up between tests.
  let keep: HttpTransport;
  beforeAll(() => {
    keep = make[kind](dest());
  });
  afterAll(() => keep.close());

  describe('over HTTP', () => {
    it('POSTs method, path with query, headers and body, and resolves on 2xx', async () => {
      const s = await server((_req, res) => {
        res.writeHead(201, { 'x-answer': 'yes' }).end('created');
      });
      const t = transport(dest());
      const res = await t.send(post(`${s.url}/profiles?source=aep&v=2`, { 'idempotency-key': 'k-1', 'x-tenant': 'acme' }));
      expect(res.statusCode).toBe(201);
      expect(res.headers['x-answer']).toBe('yes');
      expect(s.received).toHaveLength(1);
      const r = s.received[0]!;
      expect(r.method).toBe('POST');
      expect(r.url).toBe('/profiles?source=aep&v=2');
      expect(r.headers['idempotency-key']).toBe('k-1');
      expect(r.headers['x-tenant']).toBe('acme');
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.body).toBe('{"a":1}');
    });

    it('reuses one keep-alive connection across requests, error answers included', async () => {
      let n = 0;
      const s = await server((_req, res) => {
        n += 1;
        if (n % 2 === 0) res.writeHead(500).end('x'.repeat(100_000));
        else res.writeHead(200).end('ok');
      });
      // one socket allowed: a body left unread would block the next request until the timeout
      const t = transport(dest({ connections: 1 }));
      for (let i = 0; i < 6; i++) await t.send(post(`${s.url}/`)).catch(() => undefined);
      expect(s.received).toHaveLength(6);
      expect(s.connections).toBe(1);
      expect(new Set(s.received.map((r) => r.socketPort)).size).toBe(1);
    });

    it('opens at most `connections` sockets', async () => {
      const s = await server((_req, res) => setTimeout(() => res.writeHead(200).end(), 30));
      const t = transport(dest({ connections: 2 }));
      await Promise.all(Array.from({ length: 8 }, () => t.send(post(`${s.url}/`))));
      expect(s.received).toHaveLength(8);
      expect(s.connections).toBe(2);
    });

    it('classifies 5xx as retryable ERR_HTTP_STATUS with a short excerpt of the body', async () => {
      const s = await server((_req, res) => res.writeHead(502).end(`bad gateway\n${'y'.repeat(5_000)}`));
      const err = await failure(transport(dest()).send(post(`${s.url}/`)));
      expect(err.code).toBe('ERR_HTTP_STATUS');
      expect(err.statusCode).toBe(502);
      expect(err.retryable).toBe(true);
      expect(err.message.startsWith('HTTP 502: bad gateway y')).toBe(true);
      expect(err.message.length).toBeLessThan(300);
      expect(err.message).not.toContain('\n');
    });

    it('classifies 408, 425, 429 as retryable and other 4xx as permanent', async () => {
      const s = await server((req, res) => res.writeHead(Number(req.url!.slice(1))).end());
      const t = transport(dest({ connections: 1 }));
      for (const status of [408, 425, 429, 500, 503, 504]) {
        const err = await failure(t.send(post(`${s.url}/${status}`)));
        expect([err.statusCode, err.retryable]).toEqual([status, true]);
      }
      for (const status of [400, 401, 403, 404, 409, 413, 422]) {
        const err = await failure(t.send(post(`${s.url}/${status}`)));
        expect([err.statusCode, err.retryable]).toEqual([status, false]);
      }
      expect(s.connections).toBe(1);
    });

    it('does not follow a redirect: a 3xx is a permanent failure', async () => {
      const s = await server((req, res) => {
        if (req.url === '/moved') res.writeHead(307, { location: '/elsewhere' }).end();
        else res.writeHead(200).end();
      });
      const err = await failure(transport(dest()).send(post(`${s.url}/moved`)));
      expect(err.code).toBe('ERR_HTTP_STATUS');
      expect(err.statusCode).toBe(307);
      expect(err.retryable).toBe(false);
      expect(s.received.map((r) => r.url)).toEqual(['/moved']);
    });

    it('reads Retry-After (seconds or HTTP-date) on 429 and 503 only', async () => {
      const date = new Date(Date.now() + 5_000).toUTCString();
      const s = await server((req, res) => {
        if (req.url === '/429') res.writeHead(429, { 'retry-after': '3' }).end();
        else if (req.url === '/503') res.writeHead(503, { 'retry-after': date }).end();
        else res.writeHead(500, { 'retry-after': '3' }).end();
      });
      const t = transport(dest());
      expect((await failure(t.send(post(`${s.url}/429`)))).retryAfterMs).toBe(3_000);
      const ms = (await failure(t.send(post(`${s.url}/503`)))).retryAfterMs!;
      expect(ms).toBeGreaterThan(2_500);
      expect(ms).toBeLessThanOrEqual(5_000);
      expect((await failure(t.send(post(`${s.url}/500`)))).retryAfterMs).toBeUndefined();
    });

    it('times out a server that never answers (retryable ERR_HTTP_TIMEOUT)', async () => {
      const s = await server(() => undefined);
      const started = Date.now();
      const err = await failure(transport(dest({ timeoutMs: 200 })).send(post(`${s.url}/`)));
      expect(err.code).toBe('ERR_HTTP_TIMEOUT');
      expect(err.retryable).toBe(true);
      expect(err.message).toContain('200 ms');
      expect(Date.now() - started).toBeLessThan(2_000);
    });

    it('times out a body that stalls after the headers', async () => {
      const s = await server((_req, res) => {
        res.writeHead(200, { 'content-length': '100' });
        res.write('partial');
      });
      const err = await failure(transport(dest({ timeoutMs: 200 })).send(post(`${s.url}/`)));
      expect(err.code).toBe('ERR_HTTP_TIMEOUT');
      expect(err.retryable).toBe(true);
    });

    it('the overall deadline covers a body that keeps trickling and a request queued behind it for a socket', async () => {
      const timers: NodeJS.Timeout[] = [];
      const s = await server((req, res) => {
        res.writeHead(200);
        // a byte every 50 ms, forever: undici's body timeout (idle time) never fires
        timers.push(setInterval(() => res.write('x'), 50));
        req.socket.on('close', () => timers.forEach(clearInterval));
      });
      const t = transport(dest({ connections: 1, timeoutMs: 300 }));
      const trickling = failure(t.send(post(`${s.url}/trickle`)));
      const queued = failure(t.send(post(`${s.url}/queued`)));
      const [a, b] = await Promise.all([trickling, queued]);
      timers.forEach(clearInterval);
      expect(a.code).toBe('ERR_HTTP_TIMEOUT');
      expect(a.message).toBe('no complete answer within 300 ms');
      expect(b.code).toBe('ERR_HTTP_TIMEOUT');
      expect(b.message).toBe('no complete answer within 300 ms');
    });

    it('reports a refused connection with its address (retryable ERR_HTTP_CONNECTION)', async () => {
      const s = await startServer(() => undefined);
      const port = s.port;
      await s.close();
      const err = await failure(
        transport(dest()).send(post(`http://127.0.0.1:${port}/`, { authorization: 'Bearer very-secret-token' })),
      );
      expect(err.code).toBe('ERR_HTTP_CONNECTION');
      expect(err.retryable).toBe(true);
      expect(err.message).toBe(`connect ECONNREFUSED 127.0.0.1:${port}`);
      expect(err.message).not.toContain('very-secret-token');
    });

    it('reports a connection the server drops', async () => {
      const s = await server((req) => req.socket.destroy());
      const err = await failure(transport(dest()).send(post(`${s.url}/`)));
      expect(err.code).toBe('ERR_HTTP_CONNECTION');
      expect(err.retryable).toBe(true);
    });

    it('cancels a request when its signal aborts', async () => {
      const s = await server(() => undefined);
      const ac = new AbortController();
      const p = transport(dest()).send(post(`${s.url}/`), { signal: ac.signal });
      setTimeout(() => ac.abort(), 50);
      const err = await failure(p);
      expect(err.message).toBe('request cancelled');
    });

    it('cancels a request in flight through a Cancellation: socket closed, "request cancelled"', async () => {
      let closedEarly = 0;
      const s = await server((_req, res) => {
        res.on('close', () => {
          if (!res.writableFinished) closedEarly += 1;
        });
      });
      const c = new Cancellation();
      const p = transport(dest({ timeoutMs: 5_000 })).send(post(`${s.url}/`), { cancellation: c });
      while (s.received.length === 0) await new Promise((r) => setTimeout(r, 5));
      c.cancel();
      const err = await failure(p);
      expect(err.code).toBe('ERR_HTTP_CONNECTION');
      expect(err.message).toBe('request cancelled');
      for (let i = 0; i < 100 && closedEarly === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(closedEarly).toBe(1);
      c.cancel(); // idempotent
    });

    it('sends nothing when the Cancellation (or the signal) was cancelled before send', async () => {
      const s = await server((_req, res) => res.writeHead(200).end());
      const t = transport(dest());
      const c = new Cancellation();
      c.cancel();
      expect(c.cancelled).toBe(true);
      expect((await failure(t.send(post(`${s.url}/`), { cancellation: c }))).message).toBe('request cancelled');
      const ac = new AbortController();
      ac.abort();
      expect((await failure(t.send(post(`${s.url}/`), { signal: ac.signal }))).message).toBe('request cancelled');
      await new Promise((r) => setTimeout(r, 50));
      expect(s.received).toHaveLength(0);
    });

    it('sends nothing past the permit deadline: a retryable ERR_PERMIT_STALE, and the server never sees it', async () => {
      const s = await server((_req, res) => res.writeHead(200).end());
      const t = transport(dest());
      const err = await failure(t.send(post(`${s.url}/stale`), { permitDeadline: sharedClock() - 1 }));
      expect(err).toMatchObject({ code: 'ERR_PERMIT_STALE', retryable: true, message: 'request not sent: its send permit expired before it reached the socket' });
      // a later request on the same transport is answered: the stale one was dropped, not delayed
      expect((await t.send(post(`${s.url}/after`))).statusCode).toBe(200);
      expect(s.received.map((r) => r.url)).toEqual(['/after']);
    });

    it('sends a request whose permit deadline is still ahead', async () => {
      const s = await server((_req, res) => res.writeHead(200).end());
      const t = transport(dest());
      expect((await t.send(post(`${s.url}/fresh`), { permitDeadline: sharedClock() + 60_000 })).statusCode).toBe(200);
      expect(s.received.map((r) => r.url)).toEqual(['/fresh']);
    });

    it('cancelling after the answer changes nothing and keeps the socket', async () => {
      const s = await server((_req, res) => res.writeHead(200).end('ok'));
      const t = transport(dest({ connections: 1 }));
      const c = new Cancellation();
      expect((await t.send(post(`${s.url}/`), { cancellation: c })).statusCode).toBe(200);
      c.cancel();
      expect((await t.send(post(`${s.url}/`))).statusCode).toBe(200);
      expect(s.connections).toBe(1);
    });

    it('cancels a request still queued for a socket without sending it', async () => {
      const s = await server((req, res) => {
        if (req.url === '/slow') setTimeout(() => res.writeHead(200).end(), 100);
        else res.writeHead(200).end();
      });
      const t = transport(dest({ connections: 1 }));
      const slow = t.send(post(`${s.url}/slow`));
      const c = new Cancellation();
      const queued = t.send(post(`${s.url}/queued`), { cancellation: c });
      c.cancel();
      expect((await failure(queued)).message).toBe('request cancelled');
      expect((await slow).statusCode).toBe(200);
      expect(s.received.map((r) => r.url)).toEqual(['/slow']);
    });

    it('ignores 1xx informational answers and resolves on the final one', async () => {
      const s = await server((_req, res) => {
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
        res.writeHead(202, { 'x-final': '1' }).end();
      });
      const res = await transport(dest()).send(post(`${s.url}/`));
      expect(res.statusCode).toBe(202);
      expect(res.headers['x-final']).toBe('1');
    });

    it('gives up reading an error body past maxDrainBytes: answers with the excerpt, closes the socket', async () => {
      let n = 0;
      const s = await server((_req, res) => {
        n += 1;
        if (n === 1) res.writeHead(500).end(`huge ${'z'.repeat(2 * 1_048_576)}`);
        else res.writeHead(200).end();
      });
      const t = transport(dest({ connections: 1 }));
      const err = await failure(t.send(post(`${s.url}/`)));
      expect(err.statusCode).toBe(500);
      expect(err.message.startsWith('HTTP 500: huge zzz')).toBe(true);
      expect(err.message.length).toBeLessThan(300);
      // the next request needs a new socket: the first one was closed, not drained
      // (how many sockets undici opens meanwhile depends on timing: one that connects while the
      // first is closing may be dropped unused)
      expect((await t.send(post(`${s.url}/`))).statusCode).toBe(200);
      expect(s.received).toHaveLength(2);
      expect(s.received[1]!.socketPort).not.toBe(s.received[0]!.socketPort);
    });

    it('close() is idempotent', async () => {
      const t = make[kind](dest());
      await t.close();
      await t.close();
    });
  });

  describe('over TLS', () => {
    let dir: string;
    let ca: Buffer;
    let serverOpts: ServerOptions;
    let chainServerOpts: ServerOptions;
    let selfSigned: ServerOptions;
    let client: ResolvedTls;

    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'hd-tls-'));
      const ssl = (...args: string[]): void => {
        execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
      };
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
      ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=hd-test-ca', '-days', '2',
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
      writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
      writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
      ssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
      ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext');
      ssl('req', ...ec, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=hd-client');
      ssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', '-days', '2', '-extfile', 'client.ext');
      ssl('pkey', '-in', 'client.key', '-aes256', '-passout', 'pass:key-passphrase', '-out', 'client-enc.key');
      ssl('req', '-x509', ...ec, '-keyout', 'self.key', '-out', 'self.crt', '-subj', '/CN=localhost', '-days', '2', '-addext', 'subjectAltName=IP:127.0.0.1');
      const f = (n: string): Buffer => readFileSync(join(dir, n));
      ca = f('ca.crt');
      serverOpts = { key: f('server.key'), cert: f('server.crt') };
      chainServerOpts = { key: f('server.key'), cert: Buffer.concat([f('server.crt'), ca]) };
      selfSigned = { key: f('self.key'), cert: f('self.crt') };
      client = { cert: f('client.crt'), key: f('client-enc.key'), passphrase: 'key-passphrase', ca, rejectUnauthorized: true };
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    const peers: string[] = [];
    const ok: Handler = (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate?.();
      peers.push(String(peer?.subject?.CN ?? 'anonymous'));
      res.writeHead(200).end();
    };

    it('trusts a private CA given in tls.ca', async () => {
      const s = await server(ok, serverOpts);
      const res = await transport(dest({ tls: { ca, rejectUnauthorized: true } })).send(post(`${s.url}/`));
      expect(res.statusCode).toBe(200);
    });

    it('rejects a server certificate it cannot verify, with a TLS reason', async () => {
      const s1 = await server(ok, selfSigned);
      const e1 = await failure(transport(dest()).send(post(`${s1.url}/`)));
      expect(e1.code).toBe('ERR_HTTP_CONNECTION');
      expect(e1.retryable).toBe(true);
      expect(e1.message).toBe('TLS: self-signed certificate');

      const s2 = await server(ok, chainServerOpts);
      const e2 = await failure(transport(dest()).send(post(`${s2.url}/`)));
      expect(e2.message).toBe('TLS: self-signed certificate in certificate chain');
      expect(s1.received.length + s2.received.length).toBe(0);
    });

    it('does not verify when rejectUnauthorized is false', async () => {
      const s = await server(ok, selfSigned);
      const res = await transport(dest({ tls: { rejectUnauthorized: false } })).send(post(`${s.url}/`));
      expect(res.statusCode).toBe(200);
    });

    it('presents the client certificate (encrypted key + passphrase) for mTLS', async () => {
      const s = await server(ok, { ...serverOpts, ca, requestCert: true, rejectUnauthorized: true });
      const res = await transport(dest({ tls: client })).send(post(`${s.url}/`));
      expect(res.statusCode).toBe(200);
      expect(s.received).toHaveLength(1);
      expect(peers.at(-1)).toBe('hd-client');
    });

    it('fails with ERR_HTTP_CONNECTION when mTLS is required and no client certificate is set', async () => {
      const s = await server(ok, { ...serverOpts, ca, requestCert: true, rejectUnauthorized: true });
      const err = await failure(transport(dest({ tls: { ca, rejectUnauthorized: true } })).send(post(`${s.url}/`)));
      expect(err.code).toBe('ERR_HTTP_CONNECTION');
      expect(err.retryable).toBe(true);
      // TLS 1.3: the server's alert may arrive as a TLS error or as the socket closing
      expect(err.message).toMatch(/^(TLS: |socket: )/);
      expect(s.received).toHaveLength(0);
    });
  });
});

describe('parseRetryAfter', () => {
  it('reads delta-seconds and HTTP-dates, never negative', () => {
    const now = Date.UTC(2026, 0, 1, 0, 0, 0);
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('-5', now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
  });
});
