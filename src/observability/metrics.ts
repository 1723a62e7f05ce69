/**
 * Process metrics on prom-client, one `Registry` per worker: counters and histograms exposed
 * in the Prometheus text format (`/metrics`), the default Node metrics (process, heap, GC,
 * event-loop lag) when asked for, and the raw per-dataflow counts the dataflow figures
 * (SPEC §10, `figures.ts`) are flushed from. Labels carry ids only, never secrets or payload data.
 *
 * The per-message path is plain field increments on a per-dataflow record cached in a Map (no
 * label hashing, no prom-client call): the prom-client metrics read those records when they are
 * scraped (`collect` callbacks, and histograms whose `get()` reads the record's buckets).
 * Measured (tsx, best of 8 runs of 2M calls on a shared 2-core VM): `exportSettled` 58–80 ns
 * (the hand-written metrics before: 44–50 ns; the difference is the figures' latency bucket);
 * a prom-client labelled child's `observe()` alone costs ~210 ns, `Date.now()` ~200 ns here.
 */
import { collectDefaultMetrics, Counter, type MetricType, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client';

/** Latency buckets in seconds (event timestamp → delivered). */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600];
/** Rate-limiter wait buckets in seconds. */
export const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Fine latency buckets for the dataflow figures' p50/p95 (mergeable across workers: the
 * figures store adds bucket counts). Bucket `i` holds latencies in (B^(i-1), B^i] ms, bucket 0
 * those ≤ 1 ms; a quantile is reported as its bucket's upper bound (≤ 12.5% above the truth).
 */
export const FIGURE_BUCKET_BASE = 1.125;
export const FIGURE_BUCKETS = 180; // 1.125^179 ms ≈ 4.6e9 ms: anything above lands in the last one

/** Upper bounds (ms) of the figure buckets, for a binary search (cheaper than a logarithm here). */
const FIGURE_BOUNDS = Float64Array.from({ length: FIGURE_BUCKETS }, (_, i) => (i === 0 ? 1 : Math.pow(FIGURE_BUCKET_BASE, i)));

/** The figure bucket of a latency in milliseconds. */
export function figureBucket(ms: number): number {
  if (!(ms > 1)) return 0;
  let lo = 1;
  let hi = FIGURE_BUCKETS - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ms > FIGURE_BOUNDS[mid]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Upper bound (ms) of a figure bucket. */
export function figureBucketUpperMs(i: number): number {
  return i === 0 ? 1 : Math.pow(FIGURE_BUCKET_BASE, i);
}

/** A histogram's raw state: counts per bucket (the last one is +Inf), sum and count. */
export class BucketCounts {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }
  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
  }
  /** Approximate quantile (upper bound of the bucket holding it); undefined when empty. */
  quantile(q: number): number | undefined {
    if (this.count === 0) return undefined;
    const rank = q * this.count;
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return i < this.bounds.length ? this.bounds[i] : Infinity;
    }
    return Infinity;
  }
}

/** HTTP response classes of `http_destination_http_responses_total`. */
export const HTTP_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'error'] as const;
export type HttpClass = (typeof HTTP_CLASSES)[number];

export interface DataflowCounters {
  /** Valid updates that reached this dataflow's decision (SPEC §10 "received"). */
  received: number;
  /** Updates decided not to be exported to this dataflow (SPEC §10 "excluded"). */
  excluded: number;
  delivered: number;
  failed: number;
  attempts: number;
  /** Event time → delivered, in seconds (Prometheus buckets). */
  latency: BucketCounts;
  /** Event time → delivered, counts per figure bucket (`figureBucket`), for p50/p95. */
  figureLatency: number[];
  /** When the last delivery settled (ms since the epoch, to the `stamp()` interval), 0 before any. */
  lastDeliveredAt: number;
  /** `delivered` at the last `stamp()`. */
  stampedDelivered: number;
  /** HTTP responses by class, indexed like `HTTP_CLASSES`. */
  responses: number[];
  /** Time spent waiting for the rate limiter, in seconds. */
  rateLimitWait: BucketCounts;
  /** Exports handed to the dataflow's retry queue (their message acked; the queue finishes them). */
  queued: number;
  /** Sends dropped because a newer state of their (dataflow, profile) was delivered (SPEC §6). */
  superseded: number;
  /** Send permits that expired before their request reached the socket (the request took a new one). */
  stalePermits: number;
}

/** A source-lag measurement as the gauges read it (`SourceLag` of `source-lag.ts`). */
export interface SourceLagSample {
  source: string;
  /** When measured, ms since the epoch. */
  at: number;
  partitions: ReadonlyArray<{ partition?: number; pending: number; ackPending: number; oldestAt?: number }>;
}

export interface MetricsOptions {
  /** Also export prom-client's default metrics (process, heap, GC, event-loop lag). @default false */
  defaultMetrics?: boolean;
  /** Clock of `stamp()`. @default Date.now */
  now?: () => number;
}

/** A prom-client histogram whose values are read, at scrape time, from `BucketCounts` records. */
class RecordHistogram extends Histogram<'dataflow'> {
  constructor(
    private readonly metricName: string,
    private readonly helpText: string,
    registry: Registry,
    private readonly read: () => Iterable<[string, BucketCounts]>,
  ) {
    super({ name: metricName, help: helpText, labelNames: ['dataflow'], buckets: [1], registers: [registry] });
  }
  private snapshot(): MetricObjectWithValues<MetricValueWithName<string>> {
    const name = this.metricName;
    const values: Array<MetricValueWithName<string>> = [];
    for (const [dataflow, h] of this.read()) {
      let cum = 0;
      h.bounds.forEach((le, i) => {
        cum += h.counts[i];
        values.push({ metricName: `${name}_bucket`, labels: { dataflow, le }, value: cum });
      });
      values.push({ metricName: `${name}_bucket`, labels: { dataflow, le: '+Inf' }, value: h.count });
      values.push({ metricName: `${name}_sum`, labels: { dataflow }, value: h.sum });
      values.push({ metricName: `${name}_count`, labels: { dataflow }, value: h.count });
    }
    // prom-client types `type` as a numeric enum that does not exist at run time; the
    // registry prints the string, as for its own histograms.
    const type = 'histogram' as unknown as MetricType;
    return { name, help: this.helpText, type, values, aggregator: 'sum', collect: () => undefined };
  }
  // prom-client's Histogram typing says MetricObjectWithValues<MetricValue<'dataflow'>>; ours
  // carries `le` too, like the one it builds itself.
  override async get(): Promise<never> {
    return this.snapshot() as never;
  }
  async getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    return this.snapshot();
  }
}

/**
 * The metrics of one worker process.
 *
 * @example
 * const metrics = new Metrics({ defaultMetrics: true });
 * metrics.exportSettled('flow-1', 'delivered', 1, 0.012);
 * res.end(await metrics.render());
 */
export class Metrics {
  eventsRead = 0;
  eventsRejected = 0;
  storeErrors = 0;
  /** Backfill items processed (profiles considered for a newly mapped audience). */
  backfillItems = 0;
  inFlight = 0;
  readonly startedAt = Date.now();
  /** This worker's registry (not prom-client's global one). */
  readonly registry = new Registry();
  private readonly flows = new Map<string, DataflowCounters>();
  private readonly now: () => number;
  private sourceLag?: SourceLagSample;
  private activeAlerts = 0;
  /** The retry queues' depth by dataflow, read at each scrape (set by the worker). */
  queueDepth?: () => Iterable<[string, number]>;
  /**
   * The HTTP transport thread's deaths and stalls by kind (`TransportThread.troubles`), read at
   * each scrape; set by the worker when undici runs on the thread (`worker.httpThread`).
   */
  transportThreadTroubles?: () => Iterable<[string, number]>;

  constructor(options: MetricsOptions = {}) {
    this.now = options.now ?? Date.now;
    const registers = [this.registry];
    // Counters and gauges read the plain fields when scraped: the hot path never calls prom-client.
    // eslint-style note: `collect` runs with `this` = the metric; `self` is this Metrics.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    new Counter({
      name: 'http_destination_events_total',
      help: 'Input events read, by result.',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        this.inc({ result: 'accepted' }, Math.max(0, self.eventsRead - self.eventsRejected));
        this.inc({ result: 'rejected' }, self.eventsRejected);
      },
    });
    new Counter({
      name: 'http_destination_store_errors_total',
      help: 'Updates whose snapshot step failed (redelivered).',
      registers,
      collect() {
        this.reset();
        this.inc(self.storeErrors);
      },
    });
    new Counter({
      name: 'http_destination_backfill_items_total',
      help: 'Profiles considered by backfills of newly mapped audiences.',
      registers,
      collect() {
        this.reset();
        this.inc(self.backfillItems);
      },
    });
    new Gauge({
      name: 'http_destination_in_flight_messages',
      help: 'Source messages being processed.',
      registers,
      collect() {
        this.set(self.inFlight);
      },
    });
    new Counter({
      name: 'http_destination_exports_total',
      help: 'Exports by dataflow and result (failed = stored as failed request).',
      labelNames: ['dataflow', 'result'],
      registers,
      collect() {
        this.reset();
        for (const [dataflow, c] of self.flows) {
          this.inc({ dataflow, result: 'delivered' }, c.delivered);
          this.inc({ dataflow, result: 'failed' }, c.failed);
        }
      },
    });
    new Counter({
      name: 'http_destination_exports_queued_total',
      help: 'Exports put in their dataflow\'s retry queue (a failed first attempt, or behind a queued export of the same profile).',
      labelNames: ['dataflow'],
      registers,
      collect() {
        this.reset();
        for (const [dataflow, c] of self.flows) this.inc({ dataflow }, c.queued);
      },
    });
    new Counter({
      name: 'http_destination_exports_superseded_total',
      help: 'Sends dropped because a newer state of the same (dataflow, profile) was delivered (retry queue, replay).',
      labelNames: ['dataflow'],
      registers,
      collect() {
        this.reset();
        for (const [dataflow, c] of self.flows) this.inc({ dataflow }, c.superseded);
      },
    });
    new Gauge({
      name: 'http_destination_retry_queue_exports',
      help: 'Exports waiting in the retry queues of this worker, by dataflow.',
      labelNames: ['dataflow'],
      registers,
      collect() {
        this.reset();
        const depth = self.queueDepth;
        if (depth) for (const [dataflow, n] of depth()) this.set({ dataflow }, n);
      },
    });
    new Counter({
      name: 'http_destination_transport_thread_troubles_total',
      help: 'Deaths and stalls of the HTTP transport thread, by kind (exited, failed, stuck): each failed its pending requests (retryable) and the next send started a new thread.',
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        const troubles = self.transportThreadTroubles;
        if (troubles) for (const [kind, n] of troubles()) this.inc({ kind }, n);
      },
    });
    new Counter({
      name: 'http_destination_export_attempts_total',
      help: 'HTTP attempts made by settled exports.',
      labelNames: ['dataflow'],
      registers,
      collect() {
        this.reset();
        for (const [dataflow, c] of self.flows) this.inc({ dataflow }, c.attempts);
      },
    });
    new Counter({
      name: 'http_destination_decisions_total',
      help: 'Valid updates that reached a dataflow\'s export decision, by outcome (SPEC §10 received = exported + excluded).',
      labelNames: ['dataflow', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const [dataflow, c] of self.flows) {
          this.inc({ dataflow, outcome: 'export' }, c.received - c.excluded);
          this.inc({ dataflow, outcome: 'excluded' }, c.excluded);
        }
      },
    });
    new Counter({
      name: 'http_destination_http_responses_total',
      help: 'HTTP attempts by dataflow and response class (error = no response: connection, TLS, timeout).',
      labelNames: ['dataflow', 'class'],
      registers,
      collect() {
        this.reset();
        for (const [dataflow, c] of self.flows) {
          c.responses.forEach((n, i) => {
            if (n > 0 || i === 1 || i >= 3) this.inc({ dataflow, class: HTTP_CLASSES[i] }, n);
          });
        }
      },
    });
    new Counter({
      name: 'http_destination_stale_permits_total',
      help: 'Send permits (pool send slots) that expired before their request reached the socket: nothing was sent, the request took a new permit and went again (no attempt counted).',
      labelNames: ['dataflow'],
      registers,
      collect() {
        this.reset();
        for (const [dataflow, c] of self.flows) this.inc({ dataflow }, c.stalePermits);
      },
    });
    new RecordHistogram('http_destination_export_latency_seconds', 'Event timestamp to delivery.', this.registry, () =>
      [...this.flows].map(([id, c]) => [id, c.latency] as [string, BucketCounts]),
    );
    new RecordHistogram(
      'http_destination_rate_limit_wait_seconds',
      'Time an export waited for its dataflow\'s rate limiter before being sent.',
      this.registry,
      () => [...this.flows].map(([id, c]) => [id, c.rateLimitWait] as [string, BucketCounts]),
    );
    // The source lag, as last measured (`source-lag.ts`, every 5 s); absent while unknown.
    const lagLabels = (p: { partition?: number }): { source: string; partition: string } => ({ source: self.sourceLag!.source, partition: p.partition === undefined ? 'all' : String(p.partition) });
    new Gauge({
      name: 'http_destination_source_pending_messages',
      help: 'Messages of the source not yet delivered to a worker (JetStream: the consumer\'s num_pending; file: lines not yet read), per partition (all: the source read as a whole).',
      labelNames: ['source', 'partition'],
      registers,
      collect() {
        this.reset();
        for (const p of self.sourceLag?.partitions ?? []) this.set(lagLabels(p), p.pending);
      },
    });
    new Gauge({
      name: 'http_destination_source_unacked_messages',
      help: 'Messages of the source delivered (read) and not yet acknowledged, per partition.',
      labelNames: ['source', 'partition'],
      registers,
      collect() {
        this.reset();
        for (const p of self.sourceLag?.partitions ?? []) this.set(lagLabels(p), p.ackPending);
      },
    });
    new Gauge({
      name: 'http_destination_source_oldest_waiting_seconds',
      help: 'Age of the oldest message of the source waiting (unacknowledged or not yet read) at the last measurement; 0 when none waits.',
      labelNames: ['source'],
      registers,
      collect() {
        this.reset();
        const lag = self.sourceLag;
        if (!lag) return;
        let oldest = Infinity;
        for (const p of lag.partitions) if (p.oldestAt !== undefined && p.oldestAt < oldest) oldest = p.oldestAt;
        this.set({ source: lag.source }, oldest === Infinity ? 0 : Math.max(0, lag.at - oldest) / 1000);
      },
    });
    new Gauge({
      name: 'http_destination_alerts_active',
      help: 'Alerts raised and not yet cleared (SPEC §10).',
      registers,
      collect() {
        this.set(self.activeAlerts);
      },
    });
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  flow(id: string): DataflowCounters {
    let c = this.flows.get(id);
    if (!c) {
      c = {
        received: 0,
        excluded: 0,
        delivered: 0,
        failed: 0,
        attempts: 0,
        latency: new BucketCounts(LATENCY_BUCKETS),
        figureLatency: new Array<number>(FIGURE_BUCKETS).fill(0),
        lastDeliveredAt: 0,
        stampedDelivered: 0,
        responses: new Array<number>(HTTP_CLASSES.length).fill(0),
        rateLimitWait: new BucketCounts(WAIT_BUCKETS),
        queued: 0,
        superseded: 0,
        stalePermits: 0,
      };
      this.flows.set(id, c);
    }
    return c;
  }

  /**
   * A valid update reached the dataflow's decision: `exported` when it causes an export,
   * otherwise it counts as excluded (SPEC §10). Called once per (update, dataflow).
   */
  decided(dataflowId: string, exported: boolean): void {
    const c = this.flow(dataflowId);
    c.received++;
    if (!exported) c.excluded++;
  }

  /** An export ended: delivered (2xx) or stored as failed, after `attempts` HTTP attempts. */
  exportSettled(dataflowId: string, result: 'delivered' | 'failed', attempts: number, latencySeconds?: number): void {
    const c = this.flow(dataflowId);
    c[result]++;
    c.attempts += attempts;
    if (result === 'delivered' && latencySeconds !== undefined && latencySeconds >= 0) {
      c.latency.observe(latencySeconds);
      c.figureLatency[figureBucket(latencySeconds * 1000)]++;
    }
  }

  /** An export went to its dataflow's retry queue (its message may be acked). */
  exportQueued(dataflowId: string): void {
    this.flow(dataflowId).queued++;
  }

  /** A send was dropped: a newer state of its (dataflow, profile) was delivered or queued (`n`: a correction may be -1). */
  exportSuperseded(dataflowId: string, n = 1): void {
    this.flow(dataflowId).superseded += n;
  }

  /**
   * Stamps `lastDeliveredAt` of every dataflow that delivered since the last call with `now`
   * (reading the clock per delivery costs ~200 ns on some VMs; the figures flush calls this
   * every second, so the time is exact to that interval).
   */
  stamp(now: number = this.now()): void {
    for (const c of this.flows.values()) {
      if (c.delivered !== c.stampedDelivered) {
        c.stampedDelivered = c.delivered;
        c.lastDeliveredAt = now;
      }
    }
  }

  /**
   * One HTTP attempt of an export ended: `status` is the response's status code, or
   * undefined when there was no response (connection refused, TLS, timeout). For the sink,
   * once per attempt.
   */
  httpResponse(dataflowId: string, status: number | undefined): void {
    const c = this.flow(dataflowId);
    const i = status === undefined || status < 100 || status > 599 ? 5 : Math.floor(status / 100) - 1;
    c.responses[i]++;
  }

  /** A send permit of the dataflow expired before its request reached the socket (`HttpSinkOptions.onStale`). */
  permitStale(dataflowId: string): void {
    this.flow(dataflowId).stalePermits++;
  }

  /** An export waited `seconds` for its dataflow's rate limiter (0 when it went at once). */
  rateLimitWaited(dataflowId: string, seconds: number): void {
    if (seconds >= 0) this.flow(dataflowId).rateLimitWait.observe(seconds);
  }

  /** The source lag's last measurement (`source-lag.ts`); undefined: unknown, the gauges are left out. */
  setSourceLag(lag: SourceLagSample | undefined): void {
    this.sourceLag = lag;
  }

  /** The alert engine's count of alerts raised and not cleared. */
  setAlertsActive(n: number): void {
    this.activeAlerts = n;
  }

  totals(): { delivered: number; failed: number } {
    let delivered = 0;
    let failed = 0;
    for (const c of this.flows.values()) {
      delivered += c.delivered;
      failed += c.failed;
    }
    return { delivered, failed };
  }

  dataflows(): Array<[string, DataflowCounters]> {
    return [...this.flows.entries()];
  }

  /** The Prometheus text exposition. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** Content type of `render()`. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
