/**
 * Linux /proc readings for the bench: CPU time and memory of a process, sampled over time.
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';

/** Clock ticks per second of /proc/<pid>/stat (CLK_TCK; 100 on Linux everywhere in practice). */
const CLK_TCK = 100;

/** utime + stime of a process in ms, or undefined when it is gone. */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) in parentheses.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** VmRSS and VmHWM (peak) of a process in MB, or undefined when it is gone. */
export function memMb(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
    return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

export interface Sample {
  t: number;
  cpu: Record<string, number | undefined>;
  rss: Record<string, number | undefined>;
}

/**
 * Samples CPU and RSS of named processes every `intervalMs`. `cpuBetween(name, a, b)` gives
 * the CPU ms a process used between two wall times (linear interpolation between samples).
 */
export class ProcSampler {
  readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | undefined;
  constructor(
    private readonly pids: Record<string, number>,
    private readonly intervalMs = 200,
  ) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }

  stop(): void {
    this.sample();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  add(name: string, pid: number): void {
    this.pids[name] = pid;
  }

  /** Stops sampling `name` (its samples stay): a pid of an exited process may be reused. */
  remove(name: string): void {
    delete this.pids[name];
  }

  private sample(): void {
    const s: Sample = { t: Date.now(), cpu: {}, rss: {} };
    for (const [name, pid] of Object.entries(this.pids)) {
      const c = cpuMs(pid);
      if (c === undefined) continue;
      s.cpu[name] = c;
      s.rss[name] = memMb(pid)?.rss;
    }
    this.samples.push(s);
  }

  /** CPU value of `name` at wall time `t` (interpolated), from the samples. */
  private cpuAt(name: string, t: number): number | undefined {
    const pts = this.samples.filter((s) => s.cpu[name] !== undefined);
    if (pts.length === 0) return undefined;
    if (t <= pts[0].t) return pts[0].cpu[name];
    for (let i = 1; i < pts.length; i++) {
      if (pts[i].t >= t) {
        const a = pts[i - 1];
        const b = pts[i];
        const f = (t - a.t) / Math.max(1, b.t - a.t);
        return a.cpu[name]! + f * (b.cpu[name]! - a.cpu[name]!);
      }
    }
    return pts[pts.length - 1].cpu[name];
  }

  /** CPU ms used by `name` between wall times `a` and `b`. */
  cpuBetween(name: string, a: number, b: number): number | undefined {
    const x = this.cpuAt(name, a);
    const y = this.cpuAt(name, b);
    return x === undefined || y === undefined ? undefined : y - x;
  }

  /** Highest sampled RSS of `name`, MB. */
  maxRss(name: string): number | undefined {
    let m: number | undefined;
    for (const s of this.samples) {
      const v = s.rss[name];
      if (v !== undefined && (m === undefined || v > m)) m = v;
    }
    return m;
  }

  /** RSS of `name` over time: [ms since `from`, MB] every `everyMs`. */
  rssTimeline(name: string, from: number, to: number, everyMs: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let next = from;
    for (const s of this.samples) {
      if (s.t < next || s.t > to) continue;
      const v = s.rss[name];
      if (v === undefined) continue;
      out.push([s.t - from, v]);
      next = s.t + everyMs;
    }
    return out;
  }
}

/** The 1, 5 and 15 minute load averages, rounded. */
export function load(): [number, number, number] {
  const [a, b, c] = loadavg();
  return [round2(a), round2(b), round2(c)];
}

export function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
