/**
 * The console's live charts (SPEC §13): a ring of per-second samples of this worker's
 * per-dataflow counts, kept in memory for the last hour. Every second `sample()` reads the
 * in-process counts of `Metrics` (plain fields: nothing is added to the per-message path) and
 * keeps, per dataflow, the exports and failures per second, the HTTP requests per second (what
 * the rate limit bounds) and the p50/p95 latency of the exports delivered in that second.
 *
 * The samples are this worker's: in a pool every worker keeps its own (the figures of
 * `/api/dataflows` are the pool's). Nothing here is a secret: dataflow ids and numbers.
 */
import { latencyQuantileMs } from '../observability/figures.js';
import type { DataflowCounters, Metrics } from '../observability/metrics.js';

export const SERIES_DEFAULTS = {
  /** Time between two samples. */
  intervalMs: 1_000,
  /** Samples kept per dataflow: one hour of seconds. */
  capacity: 3_600,
} as const;

/** One dataflow's samples, oldest first, as columns (compact JSON). */
export interface FlowSeries {
  dataflowId: string;
  /** Sample times, ms since the epoch (end of the interval sampled). */
  t: number[];
  /** Exports delivered per second. */
  exported: number[];
  /** Exports stored as failed per second. */
  failed: number[];
  /** HTTP requests (attempts) per second: what `rateLimit` bounds. */
  requests: number[];
  /** p50 / p95 latency (event time → delivered, ms) of the exports delivered in the interval; null when none. */
  p50: Array<number | null>;
  p95: Array<number | null>;
}

export interface SeriesAnswer {
  intervalMs: number;
  /** How long samples are kept, ms. */
  spanMs: number;
  /** When this answer was made, ms since the epoch. */
  now: number;
  dataflows: FlowSeries[];
}

const round = (v: number): number => Math.round(v * 1000) / 1000;

interface Last {
  delivered: number;
  failed: number;
  attempts: number;
  latency: number[];
}

/** A fixed-size ring of one dataflow's samples (values as 32-bit floats: ~100 KB an hour). */
class FlowRing {
  readonly t: Float64Array;
  readonly exported: Float32Array;
  readonly failed: Float32Array;
  readonly requests: Float32Array;
  readonly p50: Float32Array;
  readonly p95: Float32Array;
  /** Next slot to write. */
  private head = 0;
  size = 0;

  constructor(readonly capacity: number) {
    this.t = new Float64Array(capacity);
    this.exported = new Float32Array(capacity);
    this.failed = new Float32Array(capacity);
    this.requests = new Float32Array(capacity);
    this.p50 = new Float32Array(capacity);
    this.p95 = new Float32Array(capacity);
  }

  push(t: number, exported: number, failed: number, requests: number, p50: number, p95: number): void {
    const i = this.head;
    this.t[i] = t;
    this.exported[i] = exported;
    this.failed[i] = failed;
    this.requests[i] = requests;
    this.p50[i] = p50;
    this.p95[i] = p95;
    this.head = (i + 1) % this.capacity;
    this.size = Math.min(this.size + 1, this.capacity);
  }

  /** The samples with `t > since`, oldest first. */
  read(dataflowId: string, since: number): FlowSeries {
    const out: FlowSeries = { dataflowId, t: [], exported: [], failed: [], requests: [], p50: [], p95: [] };
    const start = (this.head - this.size + this.capacity) % this.capacity;
    const nullable = (v: number): number | null => (Number.isNaN(v) ? null : round(v));
    for (let k = 0; k < this.size; k++) {
      const i = (start + k) % this.capacity;
      if (this.t[i] <= since) continue;
      out.t.push(this.t[i]);
      out.exported.push(round(this.exported[i]));
      out.failed.push(round(this.failed[i]));
      out.requests.push(round(this.requests[i]));
      out.p50.push(nullable(this.p50[i]));
      out.p95.push(nullable(this.p95[i]));
    }
    return out;
  }
}

/**
 * Per-second samples of the dataflows' activity in this worker.
 *
 * @example
 * const series = new SeriesRing({ metrics, dataflowIds: ['flow-1'] });
 * series.start();                 // samples every second (the timer does not hold the process)
 * series.read({ since: Date.now() - 60_000 });   // the last minute
 * series.stop();
 */
export class SeriesRing {
  private readonly rings = new Map<string, FlowRing>();
  private readonly last = new Map<string, Last>();
  private lastAt: number;
  private timer?: NodeJS.Timeout;
  private readonly capacity: number;
  private readonly intervalMs: number;
  private readonly now: () => number;

  /**
   * @param o.dataflowIds dataflows shown even before their first message (others appear when they count)
   * @param o.capacity samples kept per dataflow @default 3600
   * @param o.intervalMs @default 1000
   * @param o.now @default Date.now
   */
  constructor(private readonly o: { metrics: Pick<Metrics, 'dataflows'>; dataflowIds?: readonly string[]; capacity?: number; intervalMs?: number; now?: () => number }) {
    this.capacity = Math.max(1, o.capacity ?? SERIES_DEFAULTS.capacity);
    this.intervalMs = o.intervalMs ?? SERIES_DEFAULTS.intervalMs;
    this.now = o.now ?? Date.now;
    this.lastAt = this.now();
    for (const id of o.dataflowIds ?? []) this.rings.set(id, new FlowRing(this.capacity));
    for (const [id, c] of o.metrics.dataflows()) this.last.set(id, snapshot(c));
  }

  /** Takes one sample of every dataflow: what changed since the previous sample, per second. */
  sample(at: number = this.now()): void {
    const seconds = Math.max(1e-3, (at - this.lastAt) / 1000);
    this.lastAt = at;
    const seen = new Set<string>();
    for (const [id, c] of this.o.metrics.dataflows()) {
      seen.add(id);
      const prev = this.last.get(id) ?? { delivered: 0, failed: 0, attempts: 0, latency: [] };
      const latency: Record<number, number> = {};
      for (let b = 0; b < c.figureLatency.length; b++) {
        const d = c.figureLatency[b] - (prev.latency[b] ?? 0);
        if (d > 0) latency[b] = d;
      }
      this.last.set(id, snapshot(c));
      let ring = this.rings.get(id);
      if (!ring) this.rings.set(id, (ring = new FlowRing(this.capacity)));
      ring.push(
        at,
        round((c.delivered - prev.delivered) / seconds),
        round((c.failed - prev.failed) / seconds),
        round((c.attempts - prev.attempts) / seconds),
        latencyQuantileMs(latency, 0.5) ?? Number.NaN,
        latencyQuantileMs(latency, 0.95) ?? Number.NaN,
      );
    }
    // Dataflows known but without counts yet: a zero sample, so their chart moves with time.
    for (const [id, ring] of this.rings) if (!seen.has(id)) ring.push(at, 0, 0, 0, Number.NaN, Number.NaN);
  }

  /** The samples after `since` (ms since the epoch; default: all kept), of one dataflow or all. */
  read(q: { dataflowId?: string; since?: number } = {}): SeriesAnswer {
    const since = q.since ?? 0;
    const dataflows: FlowSeries[] = [];
    for (const [id, ring] of this.rings) if (q.dataflowId === undefined || q.dataflowId === id) dataflows.push(ring.read(id, since));
    return { intervalMs: this.intervalMs, spanMs: this.capacity * this.intervalMs, now: this.now(), dataflows };
  }

  /** Samples every `intervalMs` until `stop()` (the timer does not keep the process alive). */
  start(): void {
    if (this.timer) return;
    this.lastAt = this.now();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

function snapshot(c: DataflowCounters): Last {
  return { delivered: c.delivered, failed: c.failed, attempts: c.attempts, latency: c.figureLatency.slice() };
}
