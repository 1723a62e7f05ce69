/**
 * Proxies (issue 14 item 7, README "Proxies"), through a real local proxy (test/support/proxy.ts):
 * plain HTTP forwarded, HTTPS with mTLS through a CONNECT tunnel (TLS end to end with the
 * endpoint), proxy credentials from `${ENV}`, `NO_PROXY`, the destination's `proxy` over the
 * environment, and OAuth2 token requests through the proxy too.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig, type DestinationConfig } from '../../src/config/load.js';
import { createAuthProvider } from '../../src/sinks/http/auth/index.js';
import { authDepsFor } from '../../src/sinks/http/auth/index.js';
import type { HttpRequest } from '../../src/sinks/http/request.js';
import { createThreadTransport } from '../../src/sinks/http/thread-transport.js';
import { createTransport, type HttpTransport } from '../../src/sinks/http/transport.js';
import { generatePki, type TestPki } from '../support/pki.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { startTokenServer, type TokenServer } from '../support/token-server.js';

let pki: TestPki;
/** https, requires a client certificate signed by the test CA; records the client CN. */
let mtls: HttpsServer;
let mtlsUrl: string;
/** Plain http; records the headers it got. */
let plain: HttpServer;
let plainUrl: string;
const seenCn: string[] = [];
const plainHeaders: Array<IncomingMessage['headers']> = [];
let proxy: TestProxy;
let otherProxy: TestProxy;
let authProxy: TestProxy;
const PROXY_PASSWORD = 'Proxy-Pw:9z!';
const open: HttpTransport[] = [];

beforeAll(async () => {
  pki = await generatePki();
  mtls = createHttpsServer({ cert: pki.server.cert, key: pki.server.key, ca: pki.ca.cert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    const cn = (req.socket as TLSSocket).getPeerCertificate()?.subject?.CN;
    seenCn.push(Array.isArray(cn) ? cn.join(',') : (cn ?? '(none)'));
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
  });
  await new Promise<void>((r) => mtls.listen(0, '127.0.0.1', r));
  mtlsUrl = `https://127.0.0.1:${(mtls.address() as AddressInfo).port}/profiles`;
  plain = createHttpServer((req, res) => {
    plainHeaders.push(req.headers);
    req.resume();
    req.on('end', () => res.writeHead(200).end('{}'));
  });
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
  plainUrl = `http://127.0.0.1:${(plain.address() as AddressInfo).port}/profiles`;
  proxy = await startProxy();
  otherProxy = await startProxy();
  authProxy = await startProxy({ auth: { user: 'alice', password: PROXY_PASSWORD } });
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((t) => t.close()));
});

afterAll(async () => {
  for (const s of [mtls, plain]) {
    s?.closeAllConnections();
    await new Promise((r) => s?.close(r));
  }
  await Promise.all([proxy?.close(), otherProxy?.close(), authProxy?.close()]);
  await pki?.cleanup();
});

/** The destination `resolveConfig` makes of `destination` with environment `env`. */
function destinationOf(destination: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): DestinationConfig {
  const cfg = resolveConfig(
    {
      source: { kind: 'file', path: 'events.jsonl' },
      audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
      destinations: [{ id: 'dest-1', timeoutMs: 5_000, ...destination }],
      dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
    },
    { env, baseDir: '/' },
  );
  return cfg.destinations[0];
}

/** Both transports: undici on the main thread, or on the transport thread (the proxy settings cross to it). */
function transportOf(kind: 'inline' | 'thread', dest: DestinationConfig): HttpTransport {
  const t = kind === 'inline' ? createTransport({ destination: dest }) : createThreadTransport({ destination: dest });
  open.push(t);
  return t;
}

const request = (url: string, headers: Record<string, string> = {}): HttpRequest => ({
  url,
  method: 'POST',
  headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1', ...headers },
  body: '{"a":1}',
});

const mtlsSettings = () => ({ cert: pki.client.certPath, key: pki.client.keyPath, ca: pki.ca.certPath });

describe.each(['inline', 'thread'] as const)('%s transport', (kind) => {
  describe('through a real proxy', () => {
    const transportFor = (dest: DestinationConfig): HttpTransport => transportOf(kind, dest);

    it('plain HTTP: forwarded by the proxy (absolute form), answered by the endpoint', async () => {
      const before = { forwarded: proxy.forwarded, tunnels: proxy.tunnels, seen: plainHeaders.length };
      const dest = destinationOf({ endpoint: plainUrl, proxy: proxy.url });
      const res = await transportFor(dest).send(request(dest.url));
      expect(res.statusCode).toBe(200);
      expect(proxy.forwarded - before.forwarded).toBe(1);
      expect(proxy.tunnels - before.tunnels).toBe(0);
      expect(proxy.log.at(-1)).toMatchObject({ kind: 'forward', target: plainUrl });
      expect(plainHeaders.length - before.seen).toBe(1);
    });

    it('HTTPS with mTLS: one CONNECT tunnel, TLS end to end (the endpoint sees the client certificate)', async () => {
      const before = { tunnels: proxy.tunnels, cn: seenCn.length };
      const dest = destinationOf({ endpoint: mtlsUrl, proxy: proxy.url, tls: mtlsSettings() });
      const t = transportFor(dest);
      for (let i = 0; i < 3; i++) expect((await t.send(request(dest.url))).statusCode).toBe(200);
      expect(proxy.tunnels - before.tunnels).toBeGreaterThanOrEqual(1);
      expect(proxy.tunnels - before.tunnels).toBeLessThanOrEqual(3);
      expect(proxy.log.at(-1)).toMatchObject({ kind: 'connect', target: new URL(mtlsUrl).host });
      // The endpoint itself checked the client certificate (the proxy only passed bytes along).
      const cns = seenCn.slice(before.cn);
      expect(cns).toHaveLength(3);
      expect(new Set(cns).size).toBe(1);
      expect(cns[0]).not.toBe('(none)');
    });

    it('HTTPS through a proxy without the client certificate: the endpoint refuses (mTLS is not the proxy’s)', async () => {
      const dest = destinationOf({ endpoint: mtlsUrl, proxy: proxy.url, tls: { ca: pki.ca.certPath } });
      const err = await transportFor(dest).send(request(dest.url)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeDefined();
    });

    it('proxy credentials from ${ENV}: sent to the proxy as Proxy-Authorization, never to the endpoint; 407 without them', async () => {
      const env = { HD_T_PROXY_PW: encodeURIComponent(PROXY_PASSWORD) };
      const proxyUrl = `http://alice:\${HD_T_PROXY_PW}@127.0.0.1:${authProxy.port}`;
      const basic = `Basic ${Buffer.from(`alice:${PROXY_PASSWORD}`).toString('base64')}`;

      const https = destinationOf({ endpoint: mtlsUrl, proxy: { url: proxyUrl }, tls: mtlsSettings() }, env);
      expect((await transportFor(https).send(request(https.url))).statusCode).toBe(200);
      expect(authProxy.log.at(-1)).toMatchObject({ kind: 'connect', proxyAuthorization: basic, refused: false });

      const seen = plainHeaders.length;
      const http = destinationOf({ endpoint: plainUrl, proxy: { url: proxyUrl } }, env);
      expect((await transportFor(http).send(request(http.url))).statusCode).toBe(200);
      expect(authProxy.log.at(-1)).toMatchObject({ kind: 'forward', proxyAuthorization: basic, refused: false });
      expect(plainHeaders[seen]?.['proxy-authorization']).toBeUndefined();

      const without = destinationOf({ endpoint: mtlsUrl, proxy: `http://127.0.0.1:${authProxy.port}`, tls: mtlsSettings() });
      const err = await transportFor(without).send(request(without.url)).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      // The transport reports it as a failed request; the proxy refused the tunnel with 407.
      expect(err).toBeInstanceOf(Error);
      expect(authProxy.log.at(-1)).toMatchObject({ kind: 'connect', refused: true });
    });

    it('HTTPS_PROXY from the environment; NO_PROXY bypasses it', async () => {
      const before = proxy.tunnels;
      const viaEnv = destinationOf({ endpoint: mtlsUrl, tls: mtlsSettings() }, { HTTPS_PROXY: proxy.url });
      expect((await transportFor(viaEnv).send(request(viaEnv.url))).statusCode).toBe(200);
      expect(proxy.tunnels - before).toBe(1);

      const bypassed = destinationOf({ endpoint: mtlsUrl, tls: mtlsSettings() }, { HTTPS_PROXY: proxy.url, NO_PROXY: 'localhost,127.0.0.1' });
      expect((await transportFor(bypassed).send(request(bypassed.url))).statusCode).toBe(200);
      expect(proxy.tunnels - before).toBe(1);

      // The destination's own noProxy bypasses its own proxy the same way.
      const own = destinationOf({ endpoint: plainUrl, proxy: { url: proxy.url, noProxy: ['127.0.0.1'] } });
      const forwarded = proxy.forwarded;
      expect((await transportFor(own).send(request(own.url))).statusCode).toBe(200);
      expect(proxy.forwarded).toBe(forwarded);
    });

    it('the destination proxy wins over HTTPS_PROXY', async () => {
      const before = { mine: proxy.tunnels, env: otherProxy.tunnels };
      const dest = destinationOf({ endpoint: mtlsUrl, proxy: proxy.url, tls: mtlsSettings() }, { HTTPS_PROXY: otherProxy.url, https_proxy: otherProxy.url });
      expect((await transportFor(dest).send(request(dest.url))).statusCode).toBe(200);
      expect(proxy.tunnels - before.mine).toBe(1);
      expect(otherProxy.tunnels - before.env).toBe(0);
    });

    it('OAuth2 token requests to another origin go through the destination proxy too', async () => {
      let tokens: TokenServer | undefined;
      try {
        tokens = await startTokenServer({ clientId: 'client-1', clientSecret: 'client-secret-1' });
        const dest = destinationOf({
          endpoint: plainUrl,
          proxy: proxy.url,
          auth: { type: 'oauth2-client-credentials', accessTokenUrl: tokens.url, clientId: 'client-1', clientSecret: 'client-secret-1' },
        });
        const transport = transportFor(dest);
        const auth = createAuthProvider(dest.auth, authDepsFor(dest, transport));
        try {
          const headers = await auth.authorize();
          expect(headers.authorization).toMatch(/^Bearer /);
          expect(tokens.requests).toHaveLength(1);
          expect(proxy.log.at(-1)).toMatchObject({ kind: 'forward', target: tokens.url });
        } finally {
          await auth.close?.();
        }
      } finally {
        await tokens?.close();
      }
    });
  });
});
