/**
 * A recording HTTP receiver for backbone tests: records every request (answered or not), can
 * fail or go down, and waits for conditions over what it got.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { sleep } from './servers.js';

export interface Recorded {
  /** 0-based arrival order. */
  index: number;
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  key: string;
  raw: string;
  body: unknown;
  /** Arrival time (ms since epoch). */
  at: number;
  /** Status answered; 0 while not answered (or never: connection gone). */
  status: number;
}

export interface RecordingReceiver {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Every request, in arrival order (answered or not). */
  readonly requests: Recorded[];
  /** Requests answered 2xx (a request not answered yet has status 0). */
  delivered(path?: string): Recorded[];
  /**
   * Status to answer a request with (a promise holds the answer back until it resolves; the
   * request is recorded at arrival, its `status` set when answered). @default 200
   */
  respond: (r: { path: string; key: string; body: unknown }) => number | Promise<number>;
  /** Closes the listening socket and every open connection: new requests get ECONNREFUSED. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  /** Polls `pred` every 20 ms until true; throws after `timeoutMs` with `what`. */
  waitFor(pred: () => boolean, timeoutMs: number, what?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startRecordingReceiver(): Promise<RecordingReceiver> {
  const requests: Recorded[] = [];
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const rx: RecordingReceiver = {
    url: '',
    port: 0,
    requests,
    delivered: (path) => requests.filter((r) => r.status >= 200 && r.status < 300 && (path === undefined || r.path === path)),
    respond: () => 200,
    async down() {
      const s = server;
      server = undefined;
      if (!s) return;
      const closed = new Promise<void>((r) => s.close(() => r()));
      for (const sock of sockets) sock.destroy();
      s.closeAllConnections();
      await closed;
    },
    async up() {
      if (server) return;
      await listen();
    },
    async waitFor(pred, timeoutMs, what = 'condition') {
      const deadline = Date.now() + timeoutMs;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`receiver: timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(20);
      }
    },
    close: () => rx.down(),
  };

  async function listen(): Promise<void> {
    const s = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(raw);
        } catch {
          body = undefined;
        }
        const path = (req.url ?? '/').split('?')[0];
        const key = String(req.headers['idempotency-key'] ?? '');
        const rec: Recorded = { index: requests.length, method: req.method ?? '', path, headers: req.headers, key, raw, body, at: Date.now(), status: 0 };
        requests.push(rec);
        const answer = (status: number): void => {
          if (res.destroyed || res.writableEnded) return;
          rec.status = status;
          res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
        };
        try {
          const status = rx.respond({ path, key, body });
          if (typeof status === 'number') answer(status);
          else status.then(answer, () => answer(500));
        } catch {
          answer(500);
        }
      });
    });
    s.on('connection', (sock: Socket) => {
      sockets.add(sock);
      sock.once('close', () => sockets.delete(sock));
    });
    await new Promise<void>((res, rej) => {
      s.once('error', rej);
      s.listen(port, '127.0.0.1', () => res());
    });
    port = (s.address() as AddressInfo).port;
    server = s;
    rx.port = port;
    rx.url = `http://127.0.0.1:${port}`;
  }

  await listen();
  return rx;
}
