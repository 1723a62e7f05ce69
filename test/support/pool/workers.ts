/**
 * Pool worker processes: each knows its pool id and parses its own logs; stopping them
 * gracefully, their stop summary, and the redis-server's pid (to stall it).
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { CliProcess } from '../backbone.js';

/** One JSON log line of a worker (pino). */
export interface LogLine {
  level: number;
  time: number;
  msg: string;
  [field: string]: unknown;
}

export interface PoolWorker extends CliProcess {
  /** Label for messages (`w1`, `w2`, …). */
  name: string;
  pid: number;
  /** Does a pool worker id (`<host>-<pid>-<random>`) belong to this process? */
  owns(workerId: string | undefined): boolean;
  /** Its log lines so far (JSON lines of stderr; other lines are skipped). */
  logs(): LogLine[];
}

export function asPoolWorker(p: CliProcess, name: string): PoolWorker {
  const pid = p.child.pid ?? -1;
  const marker = `-${pid}-`;
  return Object.assign(p, {
    name,
    pid,
    owns: (id: string | undefined) => id !== undefined && id.includes(marker),
    logs: () => parseLogs(p.stderr),
  });
}

export function parseLogs(stderr: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut by the 200 kB tail, or not ours
    }
  }
  return out;
}

/** The pool-related and warning lines of each worker's log (the last ones), for failure messages. */
export function poolLogs(workers: readonly PoolWorker[], last = 12): string {
  return workers
    .map((w) => {
      const lines = w
        .logs()
        .filter((l) => l.level >= 40 || l.msg.startsWith('pool:') || l.msg === 'worker started')
        .slice(-last)
        .map((l) => `  ${new Date(l.time).toISOString().slice(17, 23)} ${l.msg}${l.partition !== undefined ? ` p${String(l.partition)}` : ''}${l.code ? ` ${String(l.code)}` : ''}`);
      const other = w.stderr
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('{'))
        .slice(-4)
        .map((l) => `  ${l.slice(0, 300)}`);
      const exit = w.running ? '' : `, exited ${w.child.exitCode ?? w.child.signalCode}`;
      return `\n${w.name} (pid ${w.pid}${exit}):\n${[...lines, ...other].join('\n')}`;
    })
    .join('');
}

/** The worker a pool worker id belongs to, by pid. */
export function workerOf(workers: readonly PoolWorker[], id: string | undefined): PoolWorker | undefined {
  return workers.find((w) => w.owns(id));
}

/**
 * The pid of the redis-server listening on `port`, from /proc (its command line, or the
 * process title redis-server sets, `redis-server 127.0.0.1:<port>`), to stall it with
 * SIGSTOP / SIGCONT.
 */
export function redisServerPid(port: number): number {
  const names = new RegExp(`redis-server.*(--port ${port}|:${port})(\\s|$)`);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
    } catch {
      continue;
    }
    if (names.test(cmdline)) return Number(entry);
  }
  throw new Error(`no redis-server process listening on port ${port}`);
}

/** SIGTERMs a worker and waits for its exit; returns the exit code (or the signal). */
export async function stopGracefully(w: PoolWorker, timeoutMs = 20_000): Promise<number | string> {
  w.kill('SIGTERM');
  const timer = setTimeout(() => w.kill('SIGKILL'), timeoutMs);
  try {
    const r = await w.exited;
    return r.code ?? r.signal ?? 'unknown';
  } finally {
    clearTimeout(timer);
  }
}

/** The summary a worker logs when it stops (`worker stopped`, info). */
export function stoppedSummary(
  w: PoolWorker,
): { delivered: number; eventsRead: number; dataflows?: Record<string, { delivered: number; failed: number }> } | undefined {
  const line = w.logs().find((l) => l.msg === 'worker stopped');
  return line?.summary as { delivered: number; eventsRead: number; dataflows?: Record<string, { delivered: number; failed: number }> } | undefined;
}
