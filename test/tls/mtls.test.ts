import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { ConfigErrors, DeliveryError } from '../../src/errors.js';
import { resolveConfig, type ResolvedTls } from '../../src/config/load.js';
import { createThreadTransport } from '../../src/sinks/http/thread-transport.js';
import { createTransport, type HttpTransport } from '../../src/sinks/http/transport.js';
import type { HttpRequest } from '../../src/sinks/http/request.js';
import { generatePki, type CertAndKey, type TestPki } from '../support/pki.js';

let pki: TestPki;
/** Requires a client certificate signed by our CA. */
let mtlsServer: Server;
let mtlsUrl: string;
/** Serves a certificate for the wrong host name (signed by our CA). */
let wrongHostServer: Server;
let wrongHostUrl: string;
/** Like mtlsServer, but TLS 1.2 only: the client certificate is checked inside the handshake. */
let tls12Server: Server;
let tls12Url: string;
/** Client certificate CNs of the requests the servers answered. */
const seen: string[] = [];

async function listen(opts: { cert: CertAndKey; requireClientCert: boolean; maxVersion?: 'TLSv1.2' }): Promise<{ server: Server; url: string }> {
  const server = createServer(
    {
      cert: opts.cert.cert,
      key: opts.cert.key,
      ca: pki.ca.cert,
      requestCert: opts.requireClientCert,
      rejectUnauthorized: opts.requireClientCert,
      maxVersion: opts.maxVersion,
    },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      req.resume();
      req.on('end', () => {
        const cn = peer?.subject?.CN;
        seen.push(Array.isArray(cn) ? cn.join(',') : (cn ?? '(none)'));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      });
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/profiles` };
}

async function stop(server: Server | undefined): Promise<void> {
  if (!server) return;
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
}

beforeAll(async () => {
  pki = await generatePki({ passphrase: 'Key-Passphrase-9f3b' });
  ({ server: mtlsServer, url: mtlsUrl } = await listen({ cert: pki.server, requireClientCert: true }));
  ({ server: wrongHostServer, url: wrongHostUrl } = await listen({ cert: pki.wrongHostServer, requireClientCert: false }));
  ({ server: tls12Server, url: tls12Url } = await listen({ cert: pki.server, requireClientCert: true, maxVersion: 'TLSv1.2' }));
});

afterAll(async () => {
  await stop(mtlsServer);
  await stop(wrongHostServer);
  await stop(tls12Server);
  await pki?.cleanup();
});

function request(url: string): HttpRequest {
  return {
    url,
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1' },
    body: '{"person":{"name":{"firstName":"John"}}}',
  };
}

type Kind = 'inline' | 'thread';
/** Both transports (undici on the main thread, or on the transport thread) pass every case. */
const KINDS: Kind[] = ['inline', 'thread'];
const make = (kind: Kind, destination: { connections: number; timeoutMs: number; tls?: ResolvedTls }): HttpTransport =>
  kind === 'inline' ? createTransport({ destination }) : createThreadTransport({ destination });

/** Sends one request through a fresh transport of this kind with these TLS settings. */
async function send(kind: Kind, tls: ResolvedTls | undefined, url = mtlsUrl) {
  const transport = make(kind, { connections: 1, timeoutMs: 5_000, tls });
  try {
    return await transport.send(request(url));
  } finally {
    await transport.close();
  }
}

/** The DeliveryError a send rejects with; checks the request never reached the handler. */
async function refused(kind: Kind, tls: ResolvedTls | undefined, url = mtlsUrl): Promise<DeliveryError> {
  const before = seen.length;
  const err = await send(kind, tls, url).then(
    () => {
      throw new Error('expected the request to be refused');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DeliveryError);
  const e = err as DeliveryError;
  expect(e.code).toBe('ERR_HTTP_CONNECTION');
  expect(seen.length).toBe(before);
  expect(e.message).not.toContain(pki.encryptedClient.passphrase);
  expect(e.message).not.toContain('PRIVATE KEY');
  return e;
}

const buf = (s: string): Buffer => Buffer.from(s, 'utf8');

describe.each(KINDS)('%s transport', (kind) => {
  describe('mTLS against a server that requires client certificates', () => {
    it('delivers with the right client certificate and tls.ca trusting our CA', async () => {
      const res = await send(kind, { cert: buf(pki.client.cert), key: buf(pki.client.key), ca: buf(pki.ca.cert), rejectUnauthorized: true });
      expect(res.statusCode).toBe(200);
      expect(seen.at(-1)).toBe('test-client');
    });

    it('is refused without a client certificate', async () => {
      const e = await refused(kind, { ca: buf(pki.ca.cert), rejectUnauthorized: true });
      // TLS 1.3: the server checks the certificate after the client's handshake is done, then hangs up.
      expect(e.message).toMatch(/certificate|closed|reset/i);
    });

    it('is refused with a client certificate from another CA', async () => {
      const e = await refused(kind, { cert: buf(pki.otherClient.cert), key: buf(pki.otherClient.key), ca: buf(pki.ca.cert), rejectUnauthorized: true });
      expect(e.message).toMatch(/certificate|unknown ca|closed|reset/i);
    });

    it('works with the encrypted key and the right passphrase', async () => {
      const res = await send(kind, {
        cert: buf(pki.encryptedClient.cert),
        key: buf(pki.encryptedClient.key),
        passphrase: pki.encryptedClient.passphrase,
        ca: buf(pki.ca.cert),
        rejectUnauthorized: true,
      });
      expect(res.statusCode).toBe(200);
      expect(seen.at(-1)).toBe('test-client');
    });

    it('fails with the encrypted key and a wrong passphrase, without printing either', async () => {
      const e = await refused(kind, {
        cert: buf(pki.encryptedClient.cert),
        key: buf(pki.encryptedClient.key),
        passphrase: 'not-the-passphrase',
        ca: buf(pki.ca.cert),
        rejectUnauthorized: true,
      });
      expect(e.message).toMatch(/decrypt|passphrase/i);
      expect(e.message).not.toContain('not-the-passphrase');
    });
  });

  describe('mTLS with TLS 1.2 (client certificate checked during the handshake)', () => {
    it('delivers with the right client certificate', async () => {
      const res = await send(kind, { cert: buf(pki.client.cert), key: buf(pki.client.key), ca: buf(pki.ca.cert), rejectUnauthorized: true }, tls12Url);
      expect(res.statusCode).toBe(200);
    });
    it('is refused without a client certificate', async () => {
      const e = await refused(kind, { ca: buf(pki.ca.cert), rejectUnauthorized: true }, tls12Url);
      expect(e.message).toMatch(/^TLS: .*handshake failure/);
    });
    it('is refused with a client certificate from another CA', async () => {
      const e = await refused(kind, { cert: buf(pki.otherClient.cert), key: buf(pki.otherClient.key), ca: buf(pki.ca.cert), rejectUnauthorized: true }, tls12Url);
      // A Node server verifies after the handshake and resets the connection without an alert.
      expect(e.message).toMatch(/certificate|unknown ca|ECONNRESET|closed/i);
    });
  });

  describe('verification of the server certificate', () => {
    const client = (): ResolvedTls => ({ cert: buf(pki.client.cert), key: buf(pki.client.key), rejectUnauthorized: true });

    it('rejects a server certificate from an unknown CA (no tls.ca)', async () => {
      const e = await refused(kind, client());
      expect(e.message).toMatch(/^TLS: .*certificate/);
    });

    it('rejects it with no tls settings at all (verification is on by default)', async () => {
      const e = await refused(kind, undefined, wrongHostUrl);
      expect(e.message).toMatch(/^TLS: .*certificate/);
    });

    it('rejects a certificate for another host name even when its CA is trusted', async () => {
      const e = await refused(kind, { ca: buf(pki.ca.cert), rejectUnauthorized: true }, wrongHostUrl);
      expect(e.message).toMatch(/^TLS: .*(altnames|Hostname)/);
    });

    it('accepts an unverified server only when rejectUnauthorized is false', async () => {
      const res = await send(kind, { ...client(), rejectUnauthorized: false });
      expect(res.statusCode).toBe(200);
    });
  });
});

describe('TLS files through resolveConfig', () => {
  const raw = (tls: Record<string, unknown>) => ({
    source: { kind: 'file', path: 'events.jsonl' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [{ id: 'dest-1', endpoint: mtlsUrl, tls }],
    dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
  });

  it.each(KINDS)('reads cert, key, ca and passphrase from files and delivers (%s)', async (kind) => {
    const cfg = resolveConfig(
      raw({ cert: 'client.crt', key: 'client-encrypted.key', ca: 'ca.crt', passphrase: pki.encryptedClient.passphrase }),
      { baseDir: pki.dir, env: {} },
    );
    const dest = cfg.destinations[0];
    expect(dest.tls?.cert?.toString()).toBe(pki.client.cert);
    expect(dest.tls?.rejectUnauthorized).toBe(true);
    const transport = make(kind, dest);
    try {
      expect((await transport.send(request(dest.url))).statusCode).toBe(200);
    } finally {
      await transport.close();
    }
    expect(seen.at(-1)).toBe('test-client');
  });

  it('a missing tls file is a config error naming destinations[0].tls.cert', () => {
    let err: unknown;
    try {
      resolveConfig(raw({ cert: join(pki.dir, 'nope.crt'), key: pki.client.keyPath }), { env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigErrors);
    const issues = (err as ConfigErrors).issues;
    expect(issues.map((i) => i.path)).toEqual(['destinations[0].tls.cert']);
    expect(issues[0].message).toMatch(/^destinations\[0\]\.tls\.cert: cannot read file .*nope\.crt: ENOENT/);
  });

  it('a cert without a key is a config error naming destinations[0].tls.key', () => {
    expect(() => resolveConfig(raw({ cert: pki.client.certPath }), { env: {} })).toThrow(/destinations\[0\]\.tls\.key/);
  });
});
