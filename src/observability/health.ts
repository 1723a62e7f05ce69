/**
 * Health of a worker, as the admin server reports it: liveness (`/healthz`: the process works,
 * its event loop is not stuck) and readiness (`/readyz`: every dependency it needs answers).
 *
 * A check is synchronous and cheap: probes do their I/O on their own timer and keep the last
 * answer, so a readiness request never waits on a server that is gone.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

/** One check's answer. */
export interface CheckResult {
  /** e.g. `redis`, `nats`, `pool`, `source` */
  name: string;
  ok: boolean;
  /** Why it is not ok (never a secret: servers are shown without credentials). */
  reason?: string;
}

/** Something readiness depends on. */
export interface HealthCheck {
  readonly name: string;
  check(): CheckResult;
  /** Stops its timers and closes its connections. */
  close?(): Promise<void> | void;
}

/** What the admin server reads. */
export interface WorkerHealth {
  /** Liveness: ok unless the event loop is (or was just) stuck. */
  liveness(): CheckResult & { lagMs: number };
  /** Readiness: one result per dependency; ready when every one is ok. */
  readiness(): CheckResult[];
}

export const HEALTH_DEFAULTS = {
  /** Loop monitor tick. */
  loopIntervalMs: 100,
  /** A tick late by more than this is a stall. */
  stallMs: 1_000,
  /** After a stall, liveness fails for this long (a prober that could not get through sees it). */
  holdMs: 10_000,
  /** Probe interval of the dependency probes. */
  probeIntervalMs: 1_000,
} as const;

export interface LoopMonitorOptions {
  /** @default 100 */
  intervalMs?: number;
  /** @default 1000 */
  stallMs?: number;
  /** @default 10000 */
  holdMs?: number;
}

/**
 * Watches the event loop: a timer ticks every `intervalMs` and records by how much it was late.
 * Liveness fails while the loop is stuck (the last tick is older than `stallMs`) and for
 * `holdMs` after a stall was seen, so a request that waited behind the stall gets the truth.
 */
export function loopMonitor(options: LoopMonitorOptions = {}): { liveness(): CheckResult & { lagMs: number }; close(): void } {
  const intervalMs = options.intervalMs ?? HEALTH_DEFAULTS.loopIntervalMs;
  const stallMs = options.stallMs ?? HEALTH_DEFAULTS.stallMs;
  const holdMs = options.holdMs ?? HEALTH_DEFAULTS.holdMs;
  let last = performance.now();
  let stalledAt = -Infinity;
  let stalledFor = 0;
  const delay = monitorEventLoopDelay({ resolution: 20 });
  delay.enable();
  const timer = setInterval(() => {
    const now = performance.now();
    const late = now - last - intervalMs;
    last = now;
    if (late > stallMs) {
      stalledAt = now;
      stalledFor = late;
    }
  }, intervalMs);
  timer.unref();
  return {
    liveness() {
      const now = performance.now();
      const current = now - last - intervalMs;
      const lagMs = Math.max(0, Math.round(Math.max(current, delay.percentile(99) / 1e6)));
      if (current > stallMs) return { name: 'event-loop', ok: false, reason: `event loop stuck for ${Math.round(current)} ms`, lagMs };
      if (now - stalledAt < holdMs) {
        return { name: 'event-loop', ok: false, reason: `event loop was stuck for ${Math.round(stalledFor)} ms ${Math.round((now - stalledAt) / 1000)} s ago`, lagMs };
      }
      delay.reset();
      return { name: 'event-loop', ok: true, lagMs };
    },
    close() {
      clearInterval(timer);
      delay.disable();
    },
  };
}

/** A check with a fixed answer function (the file source, the memory store). */
export function staticCheck(name: string, check: () => { ok: boolean; reason?: string }): HealthCheck {
  return { name, check: () => ({ name, ...check() }) };
}

/**
 * The health of a worker: a loop monitor plus the readiness checks added as the worker opens
 * what it needs. Before `ready()` is called (still starting), readiness fails with "starting".
 */
export class Health implements WorkerHealth {
  private readonly checks: HealthCheck[] = [];
  private readonly loop: ReturnType<typeof loopMonitor>;
  private started = false;
  private stopping = false;

  constructor(options: LoopMonitorOptions = {}) {
    this.loop = loopMonitor(options);
  }

  add(check: HealthCheck): void {
    this.checks.push(check);
  }

  /** The worker has opened everything and runs. */
  ready(): void {
    this.started = true;
  }

  /** The worker is stopping: no longer ready (a load balancer stops sending it work). */
  stop(): void {
    this.stopping = true;
  }

  liveness(): CheckResult & { lagMs: number } {
    return this.loop.liveness();
  }

  readiness(): CheckResult[] {
    const out: CheckResult[] = [];
    if (!this.started) out.push({ name: 'worker', ok: false, reason: 'starting' });
    else if (this.stopping) out.push({ name: 'worker', ok: false, reason: 'stopping' });
    else out.push({ name: 'worker', ok: true });
    for (const c of this.checks) {
      try {
        out.push(c.check());
      } catch (err) {
        out.push({ name: c.name, ok: false, reason: err instanceof Error ? err.message : String(err) });
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.loop.close();
    await Promise.allSettled(this.checks.map((c) => c.close?.()));
  }
}

/**
 * A probe: runs `probe()` every `intervalMs` (never two at once, each bounded by `timeoutMs`)
 * and answers with the last result; ok only when the last success is recent.
 */
export function periodicCheck(
  name: string,
  probe: () => Promise<void>,
  options: { intervalMs?: number; timeoutMs?: number; onClose?: () => Promise<void> | void } = {},
): HealthCheck {
  const intervalMs = options.intervalMs ?? HEALTH_DEFAULTS.probeIntervalMs;
  const timeoutMs = options.timeoutMs ?? intervalMs;
  let lastOk = -Infinity;
  let reason = 'not checked yet';
  let running = false;
  let closed = false;
  const run = async (): Promise<void> => {
    if (running || closed) return;
    running = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        probe(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
          timer.unref();
        }),
      ]);
      lastOk = performance.now();
    } catch (err) {
      reason = err instanceof Error ? err.message : String(err);
    } finally {
      clearTimeout(timer);
      running = false;
    }
  };
  const timer = setInterval(() => void run(), intervalMs);
  timer.unref();
  void run();
  return {
    name,
    check: () => {
      const ok = performance.now() - lastOk <= intervalMs * 2 + timeoutMs;
      return ok ? { name, ok } : { name, ok: false, reason };
    },
    async close() {
      closed = true;
      clearInterval(timer);
      await options.onClose?.();
    },
  };
}
