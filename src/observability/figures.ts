/**
 * Dataflow monitoring (SPEC §10): per dataflow received / exported / excluded / failed, and
 * rejected input events, per one-hour run (`runStart` on the hour, UTC) and in total, with
 * the last delivery time and the p50/p95 latency (event time → delivered) of the current run.
 *
 * The worker counts in process (`Metrics`: plain field increments, nothing per message here);
 * `startFiguresFlush` adds what changed since its last flush to a `FiguresStore` about every
 * second, and once more when the worker stops. In a pool every worker adds to the same Redis
 * store, so the figures are the pool's; on the embedded default they are in the local store's
 * folder (`figures-local.ts`), durable across runs. Latency is kept as counts per fine bucket (`Metrics`'
 * figure buckets), which add up across workers; a quantile is its bucket's upper bound.
 * Deltas are attributed to the run (and the 10-second slot) of the flush that carries them.
 */
import { FIGURE_BUCKETS, figureBucketUpperMs, type Metrics } from './metrics.js';
import { openByStoreKind, type StoreKindConfig } from '../stores/store-kind.js';

/** The four per-dataflow counts of SPEC §10, and the superseded exports (SPEC §6). */
export interface FigureCounts {
  received: number;
  exported: number;
  excluded: number;
  failed: number;
  /**
   * Exports not sent because a newer state of their (dataflow, profile) was delivered or
   * queued (SPEC §6). Present only when not zero (stores written before it existed lack it).
   */
  superseded?: number;
}

/** One flush of one worker: what changed since its previous flush. */
export interface FiguresDelta {
  rejected: number;
  flows: Array<{
    dataflowId: string;
    counts: FigureCounts;
    /** Sparse: figure bucket → deliveries. */
    latency: Record<number, number>;
    /** ms since the epoch; 0 when nothing was delivered since the last flush. */
    lastDeliveredAt: number;
  }>;
}

/** What a store holds for one dataflow. */
export interface StoredFlow {
  run: FigureCounts;
  total: FigureCounts;
  /** Latency bucket counts of the run. */
  runLatency: Record<number, number>;
  lastDeliveredAt?: number;
}

export interface StoredFigures {
  rejected: { run: number; total: number };
  flows: Record<string, StoredFlow>;
}

/** Exported / failed and latency over a time window (alerts). */
export interface WindowFigures {
  exported: number;
  failed: number;
  latency: Record<number, number>;
}

/**
 * Where the figures live: in memory (one worker), Redis (the pool), or the local store.
 * Implementations add deltas atomically; `read` and `window` may run in another process.
 */
export interface FiguresStore {
  /** Adds a worker's delta, counted in the run of `at` (hour, UTC) and its 10 s slot. */
  add(delta: FiguresDelta, at: number): Promise<void>;
  /** The figures of the run starting at `runStart` and the totals. */
  read(dataflowIds: readonly string[], runStart: number): Promise<StoredFigures>;
  /** Per dataflow, the sums of the 10 s slots in [from, to). */
  window(dataflowIds: readonly string[], from: number, to: number): Promise<Record<string, WindowFigures>>;
  close(): Promise<void>;
}

export const FIGURES_DEFAULTS = {
  /** Flush interval of the in-process counts to the store. */
  flushMs: 1_000,
  /** Slot size of the windowed figures. */
  slotMs: 10_000,
  /** How long slots are kept (longest alert window). */
  slotRetentionMs: 2 * 3_600_000,
  /** How long a run's figures are kept. */
  runRetentionMs: 8 * 24 * 3_600_000,
} as const;

const HOUR = 3_600_000;
/** The start of the one-hour run holding `t` (on the hour, UTC). */
export const runStartOf = (t: number): number => Math.floor(t / HOUR) * HOUR;
export const slotOf = (t: number): number => Math.floor(t / FIGURES_DEFAULTS.slotMs) * FIGURES_DEFAULTS.slotMs;

export const zeroCounts = (): FigureCounts => ({ received: 0, exported: 0, excluded: 0, failed: 0 });

/** The quantile `q` (0–1) of latency bucket counts, in ms; undefined when empty. */
export function latencyQuantileMs(buckets: Record<number, number>, q: number): number | undefined {
  const entries = Object.entries(buckets)
    .map(([b, n]) => [Number(b), n] as const)
    .filter(([, n]) => n > 0)
    .sort((a, b) => a[0] - b[0]);
  const total = entries.reduce((s, [, n]) => s + n, 0);
  if (total === 0) return undefined;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const [b, n] of entries) {
    seen += n;
    if (seen >= rank) return Math.round(figureBucketUpperMs(b) * 1000) / 1000;
  }
  return undefined;
}

/** The figures `status --json` prints and `/api/dataflows` answers (stable field names). */
export interface FiguresReport {
  generatedAt: string;
  runStart: string;
  /** Rejected input events (not per dataflow). */
  rejected: { run: number; total: number };
  dataflows: Array<{
    id: string;
    run: FigureCounts;
    total: FigureCounts;
    lastDeliveryAt: string | null;
    /** Of the current run, event time → delivered, ms (bucket upper bound, ≤ 12.5% high). */
    latencyMs: { p50: number | null; p95: number | null };
    /** Exports superseded by a newer state (SPEC §6): not sent. */
    superseded: { run: number; total: number };
    alerts: unknown[];
  }>;
  alerts: unknown[];
}

/** Builds the report from stored figures. `alerts` are the active ones (`dataflowId` per alert). */
export function figuresReport(
  stored: StoredFigures,
  options: { dataflowIds: readonly string[]; runStart: number; now: number; alerts?: Array<{ dataflowId?: string }> },
): FiguresReport {
  const alerts = options.alerts ?? [];
  return {
    generatedAt: new Date(options.now).toISOString(),
    runStart: new Date(options.runStart).toISOString(),
    rejected: stored.rejected,
    dataflows: options.dataflowIds.map((id) => {
      const f = stored.flows[id] ?? { run: zeroCounts(), total: zeroCounts(), runLatency: {} };
      return {
        id,
        run: f.run,
        total: f.total,
        lastDeliveryAt: f.lastDeliveredAt ? new Date(f.lastDeliveredAt).toISOString() : null,
        latencyMs: { p50: latencyQuantileMs(f.runLatency, 0.5) ?? null, p95: latencyQuantileMs(f.runLatency, 0.95) ?? null },
        superseded: { run: f.run.superseded ?? 0, total: f.total.superseded ?? 0 },
        alerts: alerts.filter((a) => a.dataflowId === id),
      };
    }),
    alerts,
  };
}

/** The figures in this process only (one worker; tests). */
export class MemoryFiguresStore implements FiguresStore {
  private rejectedTotal = 0;
  private readonly rejectedRuns = new Map<number, number>();
  private readonly totals = new Map<string, FigureCounts>();
  private readonly runs = new Map<string, { counts: FigureCounts; latency: Record<number, number> }>();
  private readonly slots = new Map<string, WindowFigures>();
  private readonly last = new Map<string, number>();

  async add(delta: FiguresDelta, at: number): Promise<void> {
    const run = runStartOf(at);
    const slot = slotOf(at);
    this.rejectedTotal += delta.rejected;
    this.rejectedRuns.set(run, (this.rejectedRuns.get(run) ?? 0) + delta.rejected);
    for (const f of delta.flows) {
      const total = this.totals.get(f.dataflowId) ?? zeroCounts();
      addCounts(total, f.counts);
      this.totals.set(f.dataflowId, total);
      const rk = `${f.dataflowId}\n${run}`;
      const r = this.runs.get(rk) ?? { counts: zeroCounts(), latency: {} };
      addCounts(r.counts, f.counts);
      addBuckets(r.latency, f.latency);
      this.runs.set(rk, r);
      const sk = `${f.dataflowId}\n${slot}`;
      const s = this.slots.get(sk) ?? { exported: 0, failed: 0, latency: {} };
      s.exported += f.counts.exported;
      s.failed += f.counts.failed;
      addBuckets(s.latency, f.latency);
      this.slots.set(sk, s);
      if (f.lastDeliveredAt > (this.last.get(f.dataflowId) ?? 0)) this.last.set(f.dataflowId, f.lastDeliveredAt);
    }
  }

  async read(dataflowIds: readonly string[], runStart: number): Promise<StoredFigures> {
    const flows: Record<string, StoredFlow> = {};
    for (const id of dataflowIds) {
      const r = this.runs.get(`${id}\n${runStart}`);
      flows[id] = {
        run: { ...(r?.counts ?? zeroCounts()) },
        total: { ...(this.totals.get(id) ?? zeroCounts()) },
        runLatency: { ...(r?.latency ?? {}) },
        lastDeliveredAt: this.last.get(id),
      };
    }
    return { rejected: { run: this.rejectedRuns.get(runStart) ?? 0, total: this.rejectedTotal }, flows };
  }

  async window(dataflowIds: readonly string[], from: number, to: number): Promise<Record<string, WindowFigures>> {
    const out: Record<string, WindowFigures> = {};
    for (const id of dataflowIds) {
      const w: WindowFigures = { exported: 0, failed: 0, latency: {} };
      for (let slot = slotOf(from); slot < to; slot += FIGURES_DEFAULTS.slotMs) {
        const s = this.slots.get(`${id}\n${slot}`);
        if (!s) continue;
        w.exported += s.exported;
        w.failed += s.failed;
        addBuckets(w.latency, s.latency);
      }
      out[id] = w;
    }
    return out;
  }

  async close(): Promise<void> {}
}

export function addCounts(into: FigureCounts, add: FigureCounts): void {
  into.received += add.received;
  into.exported += add.exported;
  into.excluded += add.excluded;
  into.failed += add.failed;
  if (add.superseded) {
    const n = (into.superseded ?? 0) + add.superseded;
    if (n === 0) delete into.superseded;
    else into.superseded = n;
  }
}

function addBuckets(into: Record<number, number>, add: Record<number, number>): void {
  for (const [b, n] of Object.entries(add)) into[Number(b)] = (into[Number(b)] ?? 0) + n;
}

/** What the in-process counts were at the last flush, per dataflow. */
interface Flushed {
  received: number;
  excluded: number;
  delivered: number;
  failed: number;
  superseded: number;
  latency: number[];
}

export interface FiguresFlush {
  /** Adds what changed since the last flush now (also called by the timer). */
  flush(): Promise<void>;
  /** Stops the timer and flushes a last time. */
  close(): Promise<void>;
}

/**
 * Flushes the worker's in-process counts (`metrics`) to `store` every `intervalMs`, as deltas.
 * A failed flush is retried at the next one (the delta is kept), so nothing is counted twice
 * or lost while the store is away; `onError` hears of it.
 *
 * @example
 * const flush = startFiguresFlush({ metrics, store, onError: (err) => log.warn({ err }, 'figures') });
 * // … at stop:
 * await flush.close();
 */
export function startFiguresFlush(options: {
  metrics: Metrics;
  store: FiguresStore;
  /** @default 1000 */
  intervalMs?: number;
  now?: () => number;
  onError?: (err: unknown) => void;
}): FiguresFlush {
  const { metrics, store } = options;
  const now = options.now ?? Date.now;
  const flushed = new Map<string, Flushed>();
  let rejectedFlushed = 0;
  let running: Promise<void> | undefined;
  let closed = false;

  const once = async (): Promise<void> => {
    const at = now();
    metrics.stamp(at);
    const delta: FiguresDelta = { rejected: metrics.eventsRejected - rejectedFlushed, flows: [] };
    const next = new Map<string, Flushed>();
    for (const [id, c] of metrics.dataflows()) {
      const prev = flushed.get(id) ?? { received: 0, excluded: 0, delivered: 0, failed: 0, superseded: 0, latency: [] };
      const counts: FigureCounts = {
        received: c.received - prev.received,
        excluded: c.excluded - prev.excluded,
        exported: c.delivered - prev.delivered,
        failed: c.failed - prev.failed,
      };
      if (c.superseded !== prev.superseded) counts.superseded = c.superseded - prev.superseded;
      const latency: Record<number, number> = {};
      for (let b = 0; b < FIGURE_BUCKETS; b++) {
        const d = c.figureLatency[b] - (prev.latency[b] ?? 0);
        if (d > 0) latency[b] = d;
      }
      next.set(id, { received: c.received, excluded: c.excluded, delivered: c.delivered, failed: c.failed, superseded: c.superseded, latency: c.figureLatency.slice() });
      if (counts.received || counts.excluded || counts.exported || counts.failed || counts.superseded) {
        delta.flows.push({ dataflowId: id, counts, latency, lastDeliveredAt: counts.exported > 0 ? c.lastDeliveredAt : 0 });
      }
    }
    if (delta.rejected === 0 && delta.flows.length === 0) return;
    await store.add(delta, at);
    rejectedFlushed += delta.rejected;
    for (const [id, f] of next) flushed.set(id, f);
  };

  const flush = (): Promise<void> => {
    running ??= once()
      .catch((err: unknown) => options.onError?.(err))
      .finally(() => {
        running = undefined;
      });
    return running;
  };

  const timer = setInterval(() => {
    if (!closed) void flush();
  }, options.intervalMs ?? FIGURES_DEFAULTS.flushMs);
  timer.unref();

  return {
    flush: async () => {
      await running;
      await flush();
    },
    async close() {
      closed = true;
      clearInterval(timer);
      await running;
      await flush();
    },
  };
}

/**
 * The figures store of a config: the pool's in Redis (`store.kind: redis`; the pool's name is
 * the JetStream durable), the host's in the local store's folder (`store.kind: local`, durable
 * across runs), otherwise one in this process (`store.kind: memory`).
 */
export function openFiguresStore(config: StoreKindConfig): Promise<FiguresStore> {
  return openByStoreKind<FiguresStore>(config, {
    redis: async (o) => new (await import('./figures-redis.js')).RedisFiguresStore(o),
    local: async (o) => new (await import('./figures-local.js')).LocalFiguresStore(o),
    memory: async () => new MemoryFiguresStore(),
  });
}
