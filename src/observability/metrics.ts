/**
 * Process metrics: counters and a latency histogram, exposed in the Prometheus text format
 * (`/metrics`) and summarised at the end of `run --once`. Labels carry ids only, never
 * secrets or payload data.
 */

/** Latency buckets in seconds (event timestamp → delivered). */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600];

class Histogram {
  readonly counts = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0);
  sum = 0;
  count = 0;
  observe(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
    this.count++;
  }
  /** Approximate quantile (upper bound of the bucket holding it). */
  quantile(q: number): number | undefined {
    if (this.count === 0) return undefined;
    const rank = q * this.count;
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return i < LATENCY_BUCKETS.length ? LATENCY_BUCKETS[i] : Infinity;
    }
    return Infinity;
  }
}

export interface DataflowCounters {
  /** Valid updates that reached this dataflow's decision (SPEC §10 "received"). */
  received: number;
  /** Updates decided not to be exported to this dataflow (SPEC §10 "excluded"). */
  excluded: number;
  delivered: number;
  failed: number;
  attempts: number;
  latency: Histogram;
}

/**
 * The metrics of one worker process.
 *
 * @example metrics.exportSettled('flow-1', 'delivered', 1, 0.012)
 */
export class Metrics {
  eventsRead = 0;
  eventsRejected = 0;
  storeErrors = 0;
  /** Backfill items processed (profiles considered for a newly mapped audience). */
  backfillItems = 0;
  inFlight = 0;
  readonly startedAt = Date.now();
  private readonly flows = new Map<string, DataflowCounters>();

  flow(id: string): DataflowCounters {
    let c = this.flows.get(id);
    if (!c) this.flows.set(id, (c = { received: 0, excluded: 0, delivered: 0, failed: 0, attempts: 0, latency: new Histogram() }));
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

  exportSettled(dataflowId: string, result: 'delivered' | 'failed', attempts: number, latencySeconds?: number): void {
    const c = this.flow(dataflowId);
    c[result]++;
    c.attempts += attempts;
    if (result === 'delivered' && latencySeconds !== undefined && latencySeconds >= 0) c.latency.observe(latencySeconds);
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
  render(): string {
    const lines: string[] = [];
    const esc = (s: string): string => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
    lines.push('# HELP http_destination_events_total Input events read, by result.');
    lines.push('# TYPE http_destination_events_total counter');
    lines.push(`http_destination_events_total{result="accepted"} ${this.eventsRead - this.eventsRejected}`);
    lines.push(`http_destination_events_total{result="rejected"} ${this.eventsRejected}`);
    lines.push('# HELP http_destination_store_errors_total Updates whose snapshot step failed (redelivered).');
    lines.push('# TYPE http_destination_store_errors_total counter');
    lines.push(`http_destination_store_errors_total ${this.storeErrors}`);
    lines.push('# HELP http_destination_backfill_items_total Profiles considered by backfills of newly mapped audiences.');
    lines.push('# TYPE http_destination_backfill_items_total counter');
    lines.push(`http_destination_backfill_items_total ${this.backfillItems}`);
    lines.push('# HELP http_destination_in_flight_messages Source messages being processed.');
    lines.push('# TYPE http_destination_in_flight_messages gauge');
    lines.push(`http_destination_in_flight_messages ${this.inFlight}`);
    lines.push('# HELP http_destination_exports_total Exports by dataflow and result (failed = stored as failed request).');
    lines.push('# TYPE http_destination_exports_total counter');
    for (const [id, c] of this.flows) {
      lines.push(`http_destination_exports_total{dataflow="${esc(id)}",result="delivered"} ${c.delivered}`);
      lines.push(`http_destination_exports_total{dataflow="${esc(id)}",result="failed"} ${c.failed}`);
    }
    lines.push('# HELP http_destination_export_attempts_total HTTP attempts made by settled exports.');
    lines.push('# TYPE http_destination_export_attempts_total counter');
    for (const [id, c] of this.flows) lines.push(`http_destination_export_attempts_total{dataflow="${esc(id)}"} ${c.attempts}`);
    lines.push('# HELP http_destination_export_latency_seconds Event timestamp to delivery.');
    lines.push('# TYPE http_destination_export_latency_seconds histogram');
    for (const [id, c] of this.flows) {
      let cum = 0;
      LATENCY_BUCKETS.forEach((b, i) => {
        cum += c.latency.counts[i];
        lines.push(`http_destination_export_latency_seconds_bucket{dataflow="${esc(id)}",le="${b}"} ${cum}`);
      });
      cum += c.latency.counts[LATENCY_BUCKETS.length];
      lines.push(`http_destination_export_latency_seconds_bucket{dataflow="${esc(id)}",le="+Inf"} ${cum}`);
      lines.push(`http_destination_export_latency_seconds_sum{dataflow="${esc(id)}"} ${c.latency.sum}`);
      lines.push(`http_destination_export_latency_seconds_count{dataflow="${esc(id)}"} ${c.latency.count}`);
    }
    return lines.join('\n') + '\n';
  }
}
