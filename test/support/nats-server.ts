/**
 * Test support: a real `nats-server` with JetStream on 127.0.0.1, on a free port, with its
 * own data folder; stopped (and its folder removed) by `stop()`.
 *
 * @example
 * const server = await startNatsServer();
 * afterAll(() => server.stop());
 * // … connect to server.url …
 * await server.restart(); // same port, same data folder
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';

/** `$NATS_SERVER_BIN`, else Debian's `/usr/sbin/nats-server`, else `/usr/bin/…`, else from PATH. */
export const NATS_SERVER_BIN =
  process.env.NATS_SERVER_BIN ??
  ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((p) => existsSync(p)) ??
  'nats-server';

/** Defaults of {@link startNatsServer}. */
const DEFAULTS = {
  /** How long a start may take until JetStream answers. */
  readyTimeoutMs: 15_000,
  /** How long a graceful stop may take before SIGKILL. */
  stopTimeoutMs: 5_000,
} as const;

export interface NatsServerOptions {
  /** @default a new temporary folder, removed by `stop()` */
  dataDir?: string;
  /** @default a free port */
  port?: number;
}

export interface NatsServer {
  url: string;
  port: number;
  dataDir: string;
  /** HTTP monitoring endpoint (`/connz`, `/jsz`, …), e.g. `http://127.0.0.1:8222`. */
  monitorUrl: string;
  /** Stops the server (SIGTERM, then SIGKILL) and removes the data folder when it made it. */
  stop(): Promise<void>;
  /** SIGKILL, no cleanup: `restart()` brings it back on the same port and data folder. */
  kill(): void;
  /** Stops (if running) and starts again on the same port with the same data folder. */
  restart(): Promise<void>;
}

/** A port that was free a moment ago (bind port 0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts a nats-server with JetStream; resolves when JetStream answers. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'hd-nats-'));
  let port = options.port ?? (await freePort());
  let url = `nats://127.0.0.1:${port}`;
  let monitorPort = await freePort();
  let child: ChildProcess | undefined;
  let log = '';

  const onExit = () => child?.kill('SIGKILL');
  process.once('exit', onExit);

  const exited = (c: ChildProcess) =>
    c.exitCode !== null || c.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((r) => c.once('exit', () => r()));

  async function start(): Promise<void> {
    log = '';
    const c = spawn(NATS_SERVER_BIN, [
      '-js',
      '-a',
      '127.0.0.1',
      '-p',
      String(port),
      '-m',
      String(monitorPort),
      '-sd',
      dataDir,
    ], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = c;
    const keep = (b: Buffer) => {
      log = (log + b.toString()).slice(-8_000);
    };
    c.stdout?.on('data', keep);
    c.stderr?.on('data', keep);
    let spawnError: Error | undefined;
    c.once('error', (e) => (spawnError = e));

    const deadline = Date.now() + DEFAULTS.readyTimeoutMs;
    for (;;) {
      if (spawnError) throw new Error(`cannot start ${NATS_SERVER_BIN}: ${spawnError.message}`);
      if (c.exitCode !== null) throw new Error(`nats-server exited with ${c.exitCode}:\n${log}`);
      if (Date.now() > deadline) {
        c.kill('SIGKILL');
        throw new Error(`nats-server on port ${port} not ready in time:\n${log}`);
      }
      try {
        const nc = await connect({ servers: url, timeout: 1_000, reconnect: false });
        try {
          const jsm = await jetstreamManager(nc, { timeout: 1_000 });
          await jsm.getAccountInfo();
          return;
        } finally {
          await nc.close();
        }
      } catch {
        await sleep(50);
      }
    }
  }

  async function halt(): Promise<void> {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const done = exited(c);
    c.kill('SIGTERM');
    const inTime = await Promise.race([done.then(() => true), sleep(DEFAULTS.stopTimeoutMs).then(() => false)]);
    if (!inTime) {
      c.kill('SIGKILL');
      await done;
    }
  }

  // A port found free a moment ago can be taken by another process before nats-server binds
  // it (tests run two files at once): on the first start, take other ports and try again.
  for (let tries = 1; ; tries++) {
    try {
      await start();
      break;
    } catch (err) {
      const inUse = err instanceof Error && /address already in use/.test(err.message);
      if (!inUse || tries >= 5) throw err;
      if (options.port === undefined) {
        port = await freePort();
        url = `nats://127.0.0.1:${port}`;
      }
      monitorPort = await freePort();
    }
  }

  return {
    url,
    port,
    dataDir,
    monitorUrl: `http://127.0.0.1:${monitorPort}`,
    async stop() {
      await halt();
      process.removeListener('exit', onExit);
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
    kill() {
      child?.kill('SIGKILL');
    },
    async restart() {
      // After kill() too: halt() waits for the exit, so the port is free again.
      await halt();
      await start();
    },
  };
}
