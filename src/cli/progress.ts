/**
 * Progress of long commands (`publish`, `audiences import`, `failed replay`) on stderr
 * (SPEC §12): a line at least every 2 s while stderr is a terminal or `--progress` is given.
 * The figures are read from the command's own counters at each tick, so reporting costs
 * nothing per item. Time goes through an RxJS scheduler, so tests run in virtual time.
 */
import { asyncScheduler, interval, type SchedulerLike } from 'rxjs';

/** Defaults of {@link startProgress}, named in one place. */
export const PROGRESS_DEFAULTS = {
  /** One line this often. */
  everyMs: 2_000,
} as const;

/** What a command has done so far. */
export interface ProgressFigures {
  /** Items handled so far (lines, rows, records). */
  done: number;
  /** Items to handle in all, when known. */
  total?: number;
  /** The counts so far, e.g. `published 1,200, duplicates 3, skipped 0`. */
  detail?: string;
}

export interface ProgressOptions {
  /** What is being done, e.g. `publish`. */
  label: string;
  /** Reads the figures at each tick. */
  read: () => ProgressFigures;
  /** Where a line goes. @default writes the line and a newline to stderr */
  write?: (line: string) => void;
  /** @default 2000 */
  everyMs?: number;
  /** @default asyncScheduler */
  scheduler?: SchedulerLike;
}

export interface ProgressReporter {
  /** Stops reporting (call it before printing the summary). Idempotent. */
  stop(): void;
}

/** Whether to report progress: `--progress` given, or stderr is a terminal. */
export function wantsProgress(flag: boolean | undefined, stream: { isTTY?: boolean } = process.stderr): boolean {
  return flag === true || stream.isTTY === true;
}

/** `12,345` */
export function count(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** One progress line, e.g. `publish: 12,000 of 20,000 (60%), 3,000/s, 4 s: published 11,990, duplicates 3`. */
export function formatProgress(label: string, f: ProgressFigures, perSecond: number, elapsedMs: number): string {
  const of = f.total !== undefined ? ` of ${count(f.total)}${f.total > 0 ? ` (${Math.floor((f.done / f.total) * 100)}%)` : ''}` : '';
  return `${label}: ${count(f.done)}${of}, ${count(perSecond)}/s, ${Math.round(elapsedMs / 1000)} s${f.detail ? `: ${f.detail}` : ''}`;
}

/**
 * Writes a progress line every `everyMs` until stopped: items done (of the total when
 * known), the rate since the previous line, the time elapsed and the command's counts.
 *
 * @example
 * const progress = wantsProgress(o.progress) ? startProgress({ label: 'publish', read: () => ({ done: stats.lines }) }) : undefined;
 * try { await work(); } finally { progress?.stop(); }
 */
export function startProgress(options: ProgressOptions): ProgressReporter {
  const scheduler = options.scheduler ?? asyncScheduler;
  const write = options.write ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const started = scheduler.now();
  let lastDone = 0;
  let lastAt = started;
  const sub = interval(options.everyMs ?? PROGRESS_DEFAULTS.everyMs, scheduler).subscribe(() => {
    const now = scheduler.now();
    const figures = options.read();
    const rate = now > lastAt ? ((figures.done - lastDone) * 1000) / (now - lastAt) : 0;
    lastDone = figures.done;
    lastAt = now;
    write(formatProgress(options.label, figures, rate, now - started));
  });
  return { stop: () => sub.unsubscribe() };
}
