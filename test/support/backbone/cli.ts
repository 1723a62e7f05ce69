/**
 * The CLI (`node dist/cli/main.js …`, built by `npm run build`) as a child process of a backbone
 * test: one-shot runs, long-running workers, `run --once` summaries, `publish`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { type Backbone, CLI, REPO } from './servers.js';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/cli/main.js …args` to its end (killed after `timeoutMs`). */
export function runCli(args: string[], options: { timeoutMs?: number } = {}): Promise<CliResult> {
  const p = spawnCli(args);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
  return p.exited.finally(() => clearTimeout(timer));
}

export interface CliProcess {
  child: ChildProcess;
  /** Output so far. */
  readonly stdout: string;
  readonly stderr: string;
  exited: Promise<CliResult>;
  readonly running: boolean;
  kill(signal?: NodeJS.Signals): void;
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** SIGKILLs every CLI process still running (for afterAll) and waits for them. */
export async function killAllCli(): Promise<void> {
  const running = [...children];
  await Promise.all(
    running.map(
      (c) =>
        new Promise<void>((r) => {
          if (c.exitCode !== null || c.signalCode !== null) return r();
          c.once('close', () => r());
          c.kill('SIGKILL');
        }),
    ),
  );
}

/** Starts `node dist/cli/main.js …args` and returns at once. */
export function spawnCli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-200_000)));
  let running = true;
  const exited = new Promise<CliResult>((res) => {
    child.once('error', (err) => {
      running = false;
      children.delete(child);
      res({ code: null, signal: null, stdout, stderr: `${stderr}\nspawn error: ${err.message}` });
    });
    child.once('close', (code, signal) => {
      running = false;
      children.delete(child);
      res({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    get running() {
      return running;
    },
    exited,
    kill: (signal = 'SIGTERM') => {
      if (running) child.kill(signal);
    },
  };
}

/** `run --config cfg --once --json`: resolves with the parsed summary (throws with output otherwise). */
export async function runOnce(cfg: string, timeoutMs = 90_000): Promise<RunSummaryJson> {
  const r = await runCli(['run', '--config', cfg, '--once', '--json'], { timeoutMs });
  if (r.code !== 0) throw new Error(`run --once exited ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr.slice(-4_000)}`);
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as RunSummaryJson;
  } catch {
    throw new Error(`run --once printed no JSON summary:\n${r.stdout}\n${r.stderr.slice(-4_000)}`);
  }
}

export interface RunSummaryJson {
  eventsRead: number;
  rejected: number;
  backfilled: number;
  delivered: number;
  failed: number;
  dataflows: Record<string, { delivered: number; failed: number }>;
  abandoned: number;
  durationMs: number;
}

/** `publish --config cfg file` for these events; returns the CLI result (asserting exit 0). */
export async function publish(bb: Backbone, cfg: string, name: string, lines: Array<object | string>): Promise<CliResult> {
  const file = bb.writeJsonl(name, lines);
  const r = await runCli(['publish', '--config', cfg, file]);
  if (r.code !== 0) throw new Error(`publish exited ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
  return r;
}
