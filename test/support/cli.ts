/**
 * Runs the built `http-destination` command (`node dist/cli/main.js …`) as a child process,
 * the way a user runs it: real argv, real exit code, real stdout/stderr, real signals.
 *
 * Why the built command and not `tsx src/cli/main.ts`: it is what the package installs (the
 * `bin`), and it starts in well under half the time of tsx (no on-the-fly compile on every
 * one of the few dozen invocations). To keep it from running stale code, `ensureBuilt()`
 * (call it in `beforeAll`) compares the newest file under `src/` (and the tsconfigs, the
 * package.json) with `dist/cli/main.js`; only when the build is older does it run
 * `tsc -p tsconfig.build.json`, once per test process, behind an exclusive lock folder in the
 * temp dir, so two vitest workers never compile into `dist/` at the same time. The usual
 * flow (`npm run build && vitest`) finds the build fresh and compiles nothing.
 *
 * Children get a small, explicit environment (PATH, HOME, TMPDIR, LANG + what the test
 * passes), never the test runner's own, so `${ENV}` in configs sees only what a test set.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The built command. */
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');

export interface CliResult {
  /** Exit code; null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface CliOptions {
  /** Extra environment variables (added to PATH, HOME, TMPDIR, LANG). */
  env?: Record<string, string>;
  /** @default ROOT */
  cwd?: string;
  /** Kill (SIGKILL) and fail after this long. @default 30_000 */
  timeoutMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function newestMtime(path: string): number {
  let st;
  try {
    st = statSync(path);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const name of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, name)));
  return newest;
}

/** Whether dist/cli/main.js is missing or older than any source it is built from. */
export function buildIsStale(): boolean {
  if (!existsSync(CLI)) return true;
  const built = statSync(CLI).mtimeMs;
  const inputs = ['src', 'package.json', 'tsconfig.json', 'tsconfig.build.json'].map((p) => newestMtime(join(ROOT, p)));
  return Math.max(...inputs) > built;
}

let building: Promise<void> | undefined;

/** Builds dist/ when it is stale (at most once per test process; see the file's comment). */
export function ensureBuilt(): Promise<void> {
  building ??= build();
  return building;
}

async function build(): Promise<void> {
  if (!buildIsStale()) return;
  const lock = join(tmpdir(), `http-destination-e2e-build-${createHash('sha256').update(ROOT).digest('hex').slice(0, 12)}.lock`);
  const deadline = Date.now() + 240_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A lock left by a killed process: take it over after a generous build time.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 180_000) rmSync(lock, { recursive: true, force: true });
      } catch {
        // removed meanwhile
      }
      if (Date.now() > deadline) throw new Error(`e2e: timed out waiting for the build lock ${lock}`);
      await sleep(250);
      if (!buildIsStale()) return; // the other process built it
    }
  }
  try {
    if (!buildIsStale()) return;
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = await runProcess(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, timeoutMs: 180_000, env: {} });
    if (!existsSync(CLI) || buildIsStale()) {
      throw new Error(`e2e: the build did not produce a fresh ${CLI} (exit ${r.code}):\n${r.stdout}${r.stderr}`);
    }
    // tsc emits even with type errors; type errors are the type-check's business, not ours.
    if (r.code !== 0) process.stderr.write(`e2e: tsc reported errors but emitted dist/:\n${r.stdout.slice(0, 2000)}\n`);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function childEnv(extra: Record<string, string> | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'SYSTEMROOT']) if (process.env[k] !== undefined) env[k] = process.env[k];
  return { ...env, ...extra };
}

/** Children started by this module and not yet exited, so a failing test can stop them. */
const running = new Set<ChildProcess>();

function runProcess(cmd: string, args: string[], opts: CliOptions): Promise<CliResult> {
  const started = Date.now();
  const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: childEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise<CliResult>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`timed out after ${timeoutMs} ms: ${args.join(' ')}\n--- stdout\n${stdout}\n--- stderr\n${stderr.slice(-4000)}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      running.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolvePromise({ code, signal, stdout, stderr, durationMs: Date.now() - started });
    });
  });
}

/**
 * Runs `http-destination <args>` to completion.
 *
 * @example
 * const r = await runCli(['run', '--config', cfg, '--once'], { env: { TOKEN: 't' } });
 * expect(r.code).toBe(0);
 */
export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return runProcess(process.execPath, [CLI, ...args], opts);
}

/** A command running in the background. */
export interface RunningCli {
  readonly pid: number;
  /** Output so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves when the process has exited (it never rejects). */
  readonly exited: Promise<CliResult>;
  /** Sends a signal (e.g. SIGTERM) to this process. */
  signal(sig: NodeJS.Signals): void;
  /** Resolves once stdout+stderr match `pattern`. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

/**
 * Starts `http-destination <args>` in the background (e.g. `run` without `--once`).
 * Call `stopAll()` in `afterEach`/`afterAll` so a failing test leaves nothing running.
 */
export function startCli(args: string[], opts: CliOptions = {}): RunningCli {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? ROOT, env: childEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const out = { stdout: '', stderr: '' };
  const watchers = new Set<() => void>();
  const notify = (): void => {
    for (const w of [...watchers]) w();
  };
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    out.stdout += s;
    notify();
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    out.stderr += s;
    notify();
  });
  let done = false;
  const exited = new Promise<CliResult>((resolvePromise) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (done) return;
      done = true;
      running.delete(child);
      notify();
      resolvePromise({ code, signal, stdout: out.stdout, stderr: out.stderr, durationMs: Date.now() - started });
    };
    child.on('close', finish);
    child.on('error', () => finish(null, null));
  });
  return {
    get pid() {
      return child.pid ?? -1;
    },
    get stdout() {
      return out.stdout;
    },
    get stderr() {
      return out.stderr;
    },
    exited,
    signal: (sig) => {
      if (!done) child.kill(sig);
    },
    waitForOutput(pattern, timeoutMs = 15_000) {
      return new Promise<void>((resolvePromise, reject) => {
        const check = (): void => {
          if (pattern.test(out.stdout + out.stderr)) {
            watchers.delete(check);
            clearTimeout(timer);
            resolvePromise();
          } else if (done) {
            watchers.delete(check);
            clearTimeout(timer);
            reject(new Error(`process exited before output matched ${pattern}\n--- stdout\n${out.stdout}\n--- stderr\n${out.stderr.slice(-4000)}`));
          }
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(new Error(`output did not match ${pattern} within ${timeoutMs} ms\n--- stderr\n${out.stderr.slice(-4000)}`));
        }, timeoutMs);
        watchers.add(check);
        check();
      });
    },
  };
}

/** SIGKILLs every child this module started that is still running (by its own pid). */
export function stopAll(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}

/** The JSON log lines (pino) of a stderr text; other lines are skipped. */
export function logLines(stderr: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not a log line
    }
  }
  return out;
}

/** The JSON objects of a `--json` output: one per non-empty line. */
export function jsonLines<T = Record<string, unknown>>(stdout: string): T[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as T);
}

const tempDirs = new Set<string>();

/** A fresh temp folder; `removeTempDirs()` deletes every one made so far. */
export function tempDir(prefix = 'hd-e2e-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

/** Writes `config` as YAML to `<dir>/<name>` and returns the path. */
export function writeConfig(dir: string, config: unknown, name = 'config.yaml'): string {
  const path = join(dir, name);
  writeFileSync(path, name.endsWith('.json') ? JSON.stringify(config, null, 2) : toYaml(config));
  return path;
}

/** Writes events (objects, or raw strings for broken lines) as JSON Lines and returns the path. */
export function writeEvents(dir: string, events: Array<unknown>, name = 'events.jsonl'): string {
  const path = join(dir, name);
  writeFileSync(path, events.map((e) => (typeof e === 'string' ? e : JSON.stringify(e))).join('\n') + (events.length ? '\n' : ''));
  return path;
}
