/**
 * A throw-away PKI for TLS tests, made with the `openssl` command (Debian package `openssl`)
 * in a temp folder: a CA with a server certificate for 127.0.0.1 / localhost and a client
 * certificate, a second ("other") CA with its own client certificate, the client key again
 * encrypted with a passphrase, and a server certificate for a wrong host name. EC P-256 keys,
 * so generating all of it takes well under a second.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A certificate and its private key, as files and as PEM text. */
export interface CertAndKey {
  certPath: string;
  keyPath: string;
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  /** The CA that signs `server`, `client`, `encryptedClient` and `wrongHostServer`. */
  ca: CertAndKey;
  /** Server certificate, SAN `IP:127.0.0.1, DNS:localhost`, signed by `ca`. */
  server: CertAndKey;
  /** Client certificate (CN `test-client`, clientAuth), signed by `ca`. */
  client: CertAndKey;
  /** The `client` certificate with its key encrypted (AES-256) under `passphrase`. */
  encryptedClient: CertAndKey & { passphrase: string };
  /** A CA the server does not trust. */
  otherCa: CertAndKey;
  /** Client certificate (CN `other-client`) signed by `otherCa`. */
  otherClient: CertAndKey;
  /** Server certificate signed by `ca` but only for `DNS:wrong.example` (hostname check fails). */
  wrongHostServer: CertAndKey;
  /** Deletes the folder. */
  cleanup(): Promise<void>;
}

export interface PkiOptions {
  /** Passphrase of the encrypted client key. @default a random one */
  passphrase?: string;
  /** Validity of every certificate, in days. @default 2 */
  days?: number;
}

const OPENSSL_CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[wrong_host_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/**
 * Generates the PKI. Throws when `openssl` is missing (install the Debian package `openssl`).
 *
 * @example
 * ```ts
 * const pki = await generatePki();
 * https.createServer({ cert: pki.server.cert, key: pki.server.key, ca: pki.ca.cert, requestCert: true });
 * await pki.cleanup();
 * ```
 */
export async function generatePki(options: PkiOptions = {}): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'hd-pki-'));
  const days = String(options.days ?? 2);
  const passphrase = options.passphrase ?? `pp-${randomBytes(12).toString('hex')}`;
  const cnf = join(dir, 'openssl.cnf');
  await writeFile(cnf, OPENSSL_CONFIG);
  const p = (name: string): string => join(dir, name);
  const openssl = async (args: string[], env?: NodeJS.ProcessEnv): Promise<void> => {
    try {
      await run('openssl', args, { cwd: dir, env: { ...process.env, ...env } });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw new Error('the openssl command is missing (Debian package "openssl")');
      throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? e.message}`);
    }
  };
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

  const makeCa = async (name: string, cn: string): Promise<void> => {
    await openssl(['req', '-config', cnf, '-x509', ...ecKey, '-keyout', p(`${name}.key`), '-out', p(`${name}.crt`),
      '-days', days, '-subj', `/CN=${cn}`, '-extensions', 'ca_ext']);
  };
  const makeLeaf = async (name: string, cn: string, ca: string, ext: string): Promise<void> => {
    await openssl(['req', '-config', cnf, '-new', ...ecKey, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`]);
    await openssl(['x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${ca}.crt`), '-CAkey', p(`${ca}.key`),
      '-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', days, '-out', p(`${name}.crt`),
      '-extfile', cnf, '-extensions', ext]);
  };

  await Promise.all([makeCa('ca', 'http-destination test CA'), makeCa('other-ca', 'some other CA')]);
  await Promise.all([
    makeLeaf('server', '127.0.0.1', 'ca', 'server_ext'),
    makeLeaf('client', 'test-client', 'ca', 'client_ext'),
    makeLeaf('other-client', 'other-client', 'other-ca', 'client_ext'),
    makeLeaf('wrong-host', 'wrong.example', 'ca', 'wrong_host_ext'),
  ]);
  // The passphrase goes through the environment, not argv.
  await openssl(['pkey', '-in', p('client.key'), '-aes256', '-passout', 'env:HD_PKI_PASS', '-out', p('client-encrypted.key')], {
    HD_PKI_PASS: passphrase,
  });

  const load = async (cert: string, key: string): Promise<CertAndKey> => ({
    certPath: p(cert),
    keyPath: p(key),
    cert: await readFile(p(cert), 'utf8'),
    key: await readFile(p(key), 'utf8'),
  });
  const [ca, server, client, encrypted, otherCa, otherClient, wrongHostServer] = await Promise.all([
    load('ca.crt', 'ca.key'),
    load('server.crt', 'server.key'),
    load('client.crt', 'client.key'),
    load('client.crt', 'client-encrypted.key'),
    load('other-ca.crt', 'other-ca.key'),
    load('other-client.crt', 'other-client.key'),
    load('wrong-host.crt', 'wrong-host.key'),
  ]);
  return {
    dir,
    ca,
    server,
    client,
    encryptedClient: { ...encrypted, passphrase },
    otherCa,
    otherClient,
    wrongHostServer,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
