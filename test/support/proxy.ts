/**
 * A small real HTTP proxy for tests, on 127.0.0.1 and a free port: CONNECT tunnels (for
 * https:// targets: the bytes pass through untouched, so TLS and mTLS run end to end) and
 * forwarded absolute-form requests (`POST http://host:port/path`, for http:// targets). It
 * counts both, records what it was asked for, and can require `Proxy-Authorization: Basic …`
 * (407 otherwise). It never passes `Proxy-Authorization` on to the target.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';

export interface ProxyLogEntry {
  kind: 'connect' | 'forward';
  /** `host:port` of a tunnel, the absolute URL of a forwarded request. */
  target: string;
  /** The `Proxy-Authorization` header the proxy got, if any. */
  proxyAuthorization?: string;
  /** Refused with 407. */
  refused: boolean;
}

export interface TestProxy {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Tunnels opened (CONNECT answered 200). */
  readonly tunnels: number;
  /** Requests forwarded (absolute form). */
  readonly forwarded: number;
  /** Everything asked of the proxy, in order. */
  log: ProxyLogEntry[];
  /** Headers of the forwarded requests as the target got them. */
  forwardedHeaders: Array<IncomingMessage['headers']>;
  close(): Promise<void>;
}

export interface TestProxyOptions {
  /** When set, only `Proxy-Authorization: Basic base64(user:password)` is let through (else 407). */
  auth?: { user: string; password: string };
}

/** Starts the proxy. */
export async function startProxy(options: TestProxyOptions = {}): Promise<TestProxy> {
  const expected = options.auth ? `Basic ${Buffer.from(`${options.auth.user}:${options.auth.password}`).toString('base64')}` : undefined;
  const sockets = new Set<Socket>();
  let tunnels = 0;
  let forwarded = 0;
  const log: ProxyLogEntry[] = [];
  const forwardedHeaders: Array<IncomingMessage['headers']> = [];
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const allowed = (req: IncomingMessage): boolean => expected === undefined || req.headers['proxy-authorization'] === expected;

  const server: Server = createServer((req, res) => {
    const target = req.url ?? '';
    const ok = allowed(req);
    log.push({ kind: 'forward', target, proxyAuthorization: req.headers['proxy-authorization'], refused: !ok });
    if (!/^http:\/\//.test(target)) {
      res.writeHead(400).end('absolute-form http:// requests only');
      return;
    }
    if (!ok) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="test"' }).end();
      return;
    }
    forwarded++;
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const up = httpRequest(target, { method: req.method, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    forwardedHeaders.push(headers);
    req.pipe(up);
  });
  server.on('connection', track);
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    track(client);
    const target = req.url ?? '';
    const ok = allowed(req);
    log.push({ kind: 'connect', target, proxyAuthorization: req.headers['proxy-authorization'], refused: !ok });
    if (!ok) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const at = target.lastIndexOf(':');
    const upstream = connect(Number(target.slice(at + 1)), target.slice(0, at).replace(/^\[|\]$/g, ''), () => {
      tunnels++;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    track(upstream);
    upstream.on('error', () => client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    get tunnels() {
      return tunnels;
    },
    get forwarded() {
      return forwarded;
    },
    log,
    forwardedHeaders,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
