/**
 * A real HTTP (or HTTPS) receiver for end-to-end tests, on 127.0.0.1 and port 0. It records
 * every request (method, url, headers, raw and parsed body, arrival and answer times, the
 * client certificate's CN under mTLS) and answers as a script says, per request: any status,
 * headers (e.g. `Retry-After`), a body, a delay, or a dropped connection.
 *
 * @example
 * ```ts
 * const rx = await startReceiver({
 *   respond: (r) => (r.path === '/flaky' && r.attempt === 1 ? { status: 500 } : undefined),
 * });
 * // … point a destination at `${rx.url}/flaky`, run the CLI …
 * await rx.waitFor((reqs) => reqs.length >= 3);
 * await rx.close();
 * ```
 */
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface ReceivedRequest {
  /** 0-based arrival order over the whole receiver. */
  index: number;
  method: string;
  /** Path and query, as sent (`/full?tenant=acme&source=aep`). */
  url: string;
  /** The path alone (`/full`). */
  path: string;
  query: URLSearchParams;
  /** Lower-cased header names, as node gives them. */
  headers: IncomingHttpHeaders;
  /** The body exactly as received. */
  rawBody: string;
  /** The body parsed as JSON; `undefined` when it is not JSON. */
  body: unknown;
  /** The `idempotency-key` header, or '' when absent. */
  key: string;
  /** How many requests with this path and idempotency key arrived so far, this one included (1 = first attempt). */
  attempt: number;
  /** Arrival time (ms since epoch, sub-millisecond precision): when the whole body was read. */
  at: number;
  /** When the answer was written (set once answered). */
  answeredAt?: number;
  /** Status answered (set once answered); undefined for a dropped connection. */
  status?: number;
  /** CN of the client certificate presented (HTTPS only). */
  clientCertCN?: string;
}

export interface Reply {
  /** @default 200 */
  status?: number;
  headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON. @default '{"ok":true}' */
  body?: unknown;
  /** Wait this long before answering. @default 0 */
  delayMs?: number;
  /** Drop the connection instead of answering. */
  destroy?: boolean;
}

/** Decides the answer to a request; `undefined` means 200 `{"ok":true}` (after `defaultDelayMs`). */
export type Responder = (req: ReceivedRequest) => Reply | undefined;

export interface ReceiverOptions {
  respond?: Responder;
  /** Serve HTTPS with these PEMs; `requestCert` asks for (and with `ca`, verifies) a client certificate. */
  https?: { cert: string; key: string; ca?: string; requestCert?: boolean };
}

export interface Receiver {
  /** `http://127.0.0.1:<port>` (or https), no trailing slash. */
  readonly url: string;
  readonly port: number;
  /** Every request, in arrival order. */
  readonly requests: ReceivedRequest[];
  /** The current script; may be replaced at any time. */
  respond: Responder;
  /** Requests to one path (`/full`), in arrival order. */
  at(path: string): ReceivedRequest[];
  /** Resolves once `predicate(requests)` holds (checked on every arrival and answer). */
  waitFor(predicate: (requests: ReceivedRequest[]) => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Clock with sub-millisecond precision, comparable with Date.now(). */
export const now = (): number => performance.timeOrigin + performance.now();

/** Starts a receiver; stop it with `close()`. */
export async function startReceiver(options: ReceiverOptions = {}): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const attempts = new Map<string, number>();
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<Socket>();
  const watchers = new Set<() => void>();
  const notify = (): void => {
    for (const w of [...watchers]) w();
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = rawBody === '' ? undefined : JSON.parse(rawBody);
      } catch {
        body = undefined;
      }
      const url = req.url ?? '';
      const parsed = new URL(url, 'http://receiver.invalid');
      const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : '';
      const countKey = `${parsed.pathname}\u0000${key}`;
      const attempt = (attempts.get(countKey) ?? 0) + 1;
      attempts.set(countKey, attempt);
      let clientCertCN: string | undefined;
      const sock = req.socket as TLSSocket;
      if (typeof sock.getPeerCertificate === 'function') {
        const cn = sock.getPeerCertificate()?.subject?.CN;
        clientCertCN = Array.isArray(cn) ? cn.join(',') : cn;
      }
      const rec: ReceivedRequest = {
        index: requests.length,
        method: req.method ?? '',
        url,
        path: parsed.pathname,
        query: parsed.searchParams,
        headers: req.headers,
        rawBody,
        body,
        key,
        attempt,
        at: now(),
        clientCertCN,
      };
      requests.push(rec);
      let reply: Reply | undefined;
      try {
        reply = state.respond(rec);
      } catch (err) {
        reply = { status: 599, body: `responder threw: ${String(err)}` };
      }
      const r = reply ?? {};
      const send = (): void => {
        if (res.destroyed) {
          notify();
          return;
        }
        if (r.destroy) {
          req.socket.destroy();
          rec.answeredAt = now();
          notify();
          return;
        }
        const status = r.status ?? 200;
        const text = r.body === undefined ? '{"ok":true}' : typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
        res.writeHead(status, { 'content-type': 'application/json', ...r.headers });
        res.end(text, () => {
          rec.answeredAt = now();
          rec.status = status;
          notify();
        });
      };
      notify();
      if ((r.delayMs ?? 0) > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          send();
        }, r.delayMs);
        timers.add(t);
      } else send();
    });
  };

  const server: Server = options.https
    ? createHttpsServer(
        {
          cert: options.https.cert,
          key: options.https.key,
          ca: options.https.ca,
          requestCert: options.https.requestCert ?? false,
          rejectUnauthorized: options.https.requestCert ?? false,
        },
        handle,
      )
    : createHttpServer(handle);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const state: Receiver = {
    url: `${options.https ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    requests,
    respond: options.respond ?? (() => undefined),
    at: (path) => requests.filter((r) => r.path === path),
    waitFor(predicate, timeoutMs = 15_000) {
      return new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (predicate(requests)) {
            watchers.delete(check);
            clearTimeout(timer);
            resolve();
          }
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(new Error(`receiver: condition not met within ${timeoutMs} ms (${requests.length} requests so far)`));
        }, timeoutMs);
        watchers.add(check);
        check();
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  return state;
}

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago): connections are refused. */
export async function closedPort(): Promise<number> {
  const server = createHttpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * The largest number of arrivals in any window of `windowMs` (half-open `[t, t + windowMs)`,
 * starting at each arrival, which is where the maximum is reached).
 */
export function maxInWindow(times: readonly number[], windowMs = 1_000): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  let j = 0;
  for (let i = 0; i < t.length; i++) {
    if (j < i) j = i;
    while (j < t.length && t[j] < t[i] + windowMs) j++;
    best = Math.max(best, j - i);
  }
  return best;
}
