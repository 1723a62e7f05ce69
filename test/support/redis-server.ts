/**
 * Starts a real `redis-server` for a test: on 127.0.0.1, on a free port, with its data in a
 * temporary folder (append-only file on, RDB snapshots off), and waits until it answers PING.
 *
 * @example
 * const redis = await startRedisServer();
 * const store = new RedisSnapshotStore({ url: redis.url });
 * // …
 * await redis.restart({ downMs: 500 }); // same port, same data folder
 * await redis.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface RedisServerOptions {
  /** Data folder; kept on stop when given. @default a fresh temporary folder, removed on stop */
  dataDir?: string;
  /** Port to listen on. @default a free port */
  port?: number;
  /** Path of the server binary. @default '/usr/bin/redis-server' */
  binary?: string;
  /** How long to wait for the first PONG. @default 10000 */
  startTimeoutMs?: number;
}

export interface RestartOptions {
  /** How long the server stays down between stop and start. @default 0 */
  downMs?: number;
}

export interface RedisServer {
  /** `redis://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** The data folder (append-only file lives here). */
  dataDir: string;
  /** Stops the server (SIGTERM, SIGKILL after 5 s); removes the data folder when it was ours. */
  stop(): Promise<void>;
  /** Stops the server and starts it again on the same port with the same data folder. */
  restart(options?: RestartOptions): Promise<void>;
}

const DEFAULTS = {
  binary: '/usr/bin/redis-server',
  startTimeoutMs: 10_000,
  stopTimeoutMs: 5_000,
  pingIntervalMs: 25,
  /** Bytes of server output kept to explain a failed start. */
  outputTail: 8_192,
} as const;

/** A port that was free a moment ago (bind port 0, read it, close). */
export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not read a free port'))));
    });
  });
}

/** One PING over a raw socket; resolves true on `+PONG`. */
function ping(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const binary = options.binary ?? DEFAULTS.binary;
  const startTimeoutMs = options.startTimeoutMs ?? DEFAULTS.startTimeoutMs;
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'hd-redis-')));
  let port = options.port ?? (await freePort());

  let child: ChildProcess | undefined;
  let output = '';
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.once('exit', killOnExit);

  async function launch(): Promise<void> {
    output = '';
    const proc = spawn(
      binary,
      ['--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir, '--appendonly', 'yes', '--save', ''],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = proc;
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-DEFAULTS.outputTail);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    let exited = false;
    let spawnError: Error | undefined;
    proc.once('exit', () => {
      exited = true;
    });
    proc.once('error', (err) => {
      spawnError = err;
      exited = true;
    });
    const deadline = Date.now() + startTimeoutMs;
    while (Date.now() < deadline) {
      if (exited) {
        throw new Error(`redis-server exited during start${spawnError ? `: ${spawnError.message}` : ''}\n${output}`);
      }
      if (await ping(port)) return;
      await sleep(DEFAULTS.pingIntervalMs);
    }
    proc.kill('SIGKILL');
    throw new Error(`redis-server did not answer PING on port ${port} within ${startTimeoutMs} ms\n${output}`);
  }

  async function halt(): Promise<void> {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGTERM');
    const timedOut = await Promise.race([
      exited.then(() => false),
      sleep(DEFAULTS.stopTimeoutMs).then(() => true),
    ]);
    if (timedOut) {
      proc.kill('SIGKILL');
      await exited;
    }
  }

  // A port found free a moment ago can be taken by another process before redis-server binds
  // it (tests run two files at once): on the first start, take another port and try again.
  for (let tries = 1; ; tries++) {
    try {
      await launch();
      break;
    } catch (err) {
      const inUse = err instanceof Error && /already in use/i.test(err.message);
      if (!inUse || tries >= 5 || options.port !== undefined) throw err;
      port = await freePort();
    }
  }

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dataDir,
    async stop(): Promise<void> {
      await halt();
      process.removeListener('exit', killOnExit);
      if (ownDir) await rm(dataDir, { recursive: true, force: true });
    },
    async restart(restartOptions: RestartOptions = {}): Promise<void> {
      await halt();
      if (restartOptions.downMs) await sleep(restartOptions.downMs);
      await launch();
    },
  };
}
