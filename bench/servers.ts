/**
 * Bench servers: a nats-server with JetStream and a redis-server (AOF on, as in production),
 * each on a free loopback port with its own temporary data folder. Not the test helpers: the
 * bench keeps its own, smaller copy of the idea and exposes the pids (for CPU accounting).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const NATS_BIN =
  process.env.NATS_SERVER_BIN ?? ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find(existsSync) ?? 'nats-server';
export const REDIS_BIN =
  process.env.REDIS_SERVER_BIN ?? ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find(existsSync) ?? 'redis-server';

export interface BenchServer {
  url: string;
  port: number;
  pid: number;
  dataDir: string;
  stop(): Promise<void>;
}

/** A port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

/** Resolves once something accepts TCP connections on the port and `probe` says ready. */
async function waitReady(child: ChildProcess, what: string, probe: () => Promise<boolean>, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}:\n${log()}`);
    if (await probe()) return;
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`${what} not ready in 15 s:\n${log()}`);
}

/** Sends `line`, resolves true when the reply starts with `expect`. */
function tcpProbe(port: number, line: string, expect: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1_000, () => done(false));
    s.once('error', () => done(false));
    s.on('connect', () => {
      if (line) s.write(line);
    });
    s.on('data', (b) => {
      got += b.toString('latin1');
      if (got.includes('\r\n')) done(got.startsWith(expect));
    });
  });
}

function launch(bin: string, args: string[], dataDir: string, port: number, what: string) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const keep = (b: Buffer) => {
    log = (log + b.toString()).slice(-8_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.once('error', (e) => (log += `\nspawn error: ${e.message}`));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  return { child, stop, log: () => log, what, port };
}

/** nats-server -js on a free port, data in a fresh temp folder. */
export async function startNats(): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hd-bench-nats-'));
  const port = await freePort();
  const l = launch(NATS_BIN, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dataDir], dataDir, port, 'nats-server');
  // The INFO line arrives at once; JetStream is ready soon after (the bench's first JetStream
  // call retries anyway through jetstreamManager).
  await waitReady(l.child, 'nats-server', () => tcpProbe(port, '', 'INFO'), l.log);
  return { url: `nats://127.0.0.1:${port}`, port, pid: l.child.pid ?? 0, dataDir, stop: l.stop };
}

/** redis-server on a free port, AOF on (appendfsync everysec), no RDB snapshots. */
export async function startRedis(): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hd-bench-redis-'));
  const port = await freePort();
  const l = launch(
    REDIS_BIN,
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir, '--appendonly', 'yes', '--save', ''],
    dataDir,
    port,
    'redis-server',
  );
  await waitReady(l.child, 'redis-server', () => tcpProbe(port, 'PING\r\n', '+PONG'), l.log);
  return { url: `redis://127.0.0.1:${port}`, port, pid: l.child.pid ?? 0, dataDir, stop: l.stop };
}
