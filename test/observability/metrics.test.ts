import { describe, expect, it } from 'vitest';
import { figureBucket, figureBucketUpperMs, Metrics } from '../../src/observability/metrics.js';

/** The value of one sample line of a Prometheus text, or undefined when absent. */
function sample(text: string, line: string): number | undefined {
  const l = text.split('\n').find((x) => x.startsWith(`${line} `));
  return l === undefined ? undefined : Number(l.slice(line.length + 1));
}

describe('Metrics (prom-client)', () => {
  it('exposes the documented counters from the plain fields the pipeline increments', async () => {
    const m = new Metrics();
    m.eventsRead += 5;
    m.eventsRejected++;
    m.storeErrors += 2;
    m.backfillItems += 3;
    m.inFlight++;
    m.inFlight++;
    m.inFlight--;
    const text = await m.render();
    expect(sample(text, 'http_destination_events_total{result="accepted"}')).toBe(4);
    expect(sample(text, 'http_destination_events_total{result="rejected"}')).toBe(1);
    expect(sample(text, 'http_destination_store_errors_total')).toBe(2);
    expect(sample(text, 'http_destination_backfill_items_total')).toBe(3);
    expect(sample(text, 'http_destination_in_flight_messages')).toBe(1);
    // A second scrape does not double the counters (collect resets before it sets).
    m.eventsRead++;
    const again = await m.render();
    expect(sample(again, 'http_destination_events_total{result="accepted"}')).toBe(5);
  });

  it('counts exports, attempts, decisions and latency per dataflow', async () => {
    const m = new Metrics();
    m.decided('flow-1', true);
    m.decided('flow-1', false);
    m.decided('flow-1', true);
    m.exportSettled('flow-1', 'delivered', 1, 0.02);
    m.exportSettled('flow-1', 'delivered', 2, 3);
    m.exportSettled('flow-1', 'failed', 3);
    expect(m.flow('flow-1')).toMatchObject({ received: 3, excluded: 1, delivered: 2, failed: 1, attempts: 6 });
    expect(m.totals()).toEqual({ delivered: 2, failed: 1 });
    const text = await m.render();
    expect(sample(text, 'http_destination_exports_total{dataflow="flow-1",result="delivered"}')).toBe(2);
    expect(sample(text, 'http_destination_exports_total{dataflow="flow-1",result="failed"}')).toBe(1);
    expect(sample(text, 'http_destination_export_attempts_total{dataflow="flow-1"}')).toBe(6);
    expect(sample(text, 'http_destination_decisions_total{dataflow="flow-1",outcome="excluded"}')).toBe(1);
    expect(sample(text, 'http_destination_decisions_total{dataflow="flow-1",outcome="export"}')).toBe(2);
    expect(sample(text, 'http_destination_export_latency_seconds_bucket{dataflow="flow-1",le="0.025"}')).toBe(1);
    expect(sample(text, 'http_destination_export_latency_seconds_bucket{dataflow="flow-1",le="5"}')).toBe(2);
    expect(sample(text, 'http_destination_export_latency_seconds_bucket{dataflow="flow-1",le="+Inf"}')).toBe(2);
    expect(sample(text, 'http_destination_export_latency_seconds_count{dataflow="flow-1"}')).toBe(2);
    expect(sample(text, 'http_destination_export_latency_seconds_sum{dataflow="flow-1"}')).toBeCloseTo(3.02);
    expect(text).toContain('# TYPE http_destination_export_latency_seconds histogram');
  });

  it('counts HTTP responses by class and rate-limiter waits', async () => {
    const m = new Metrics();
    m.httpResponse('flow-1', 200);
    m.httpResponse('flow-1', 204);
    m.httpResponse('flow-1', 429);
    m.httpResponse('flow-1', 503);
    m.httpResponse('flow-1', undefined);
    m.rateLimitWaited('flow-1', 0);
    m.rateLimitWaited('flow-1', 0.2);
    m.permitStale('flow-1');
    m.permitStale('flow-1');
    m.flow('flow-2');
    const text = await m.render();
    expect(sample(text, 'http_destination_stale_permits_total{dataflow="flow-1"}')).toBe(2);
    expect(sample(text, 'http_destination_stale_permits_total{dataflow="flow-2"}')).toBe(0);
    expect(sample(text, 'http_destination_http_responses_total{dataflow="flow-1",class="2xx"}')).toBe(2);
    expect(sample(text, 'http_destination_http_responses_total{dataflow="flow-1",class="4xx"}')).toBe(1);
    expect(sample(text, 'http_destination_http_responses_total{dataflow="flow-1",class="5xx"}')).toBe(1);
    expect(sample(text, 'http_destination_http_responses_total{dataflow="flow-1",class="error"}')).toBe(1);
    expect(sample(text, 'http_destination_rate_limit_wait_seconds_bucket{dataflow="flow-1",le="0.001"}')).toBe(1);
    expect(sample(text, 'http_destination_rate_limit_wait_seconds_count{dataflow="flow-1"}')).toBe(2);
  });

  it('counts the transport thread\'s troubles by kind, read when scraped; absent without a thread', async () => {
    const m = new Metrics();
    expect(await m.render()).not.toContain('http_destination_transport_thread_troubles_total{');
    const troubles = { exited: 1, failed: 0, stuck: 2 };
    m.transportThreadTroubles = () => Object.entries(troubles);
    let text = await m.render();
    expect(sample(text, 'http_destination_transport_thread_troubles_total{kind="exited"}')).toBe(1);
    expect(sample(text, 'http_destination_transport_thread_troubles_total{kind="failed"}')).toBe(0);
    expect(sample(text, 'http_destination_transport_thread_troubles_total{kind="stuck"}')).toBe(2);
    troubles.stuck = 3;
    text = await m.render();
    expect(sample(text, 'http_destination_transport_thread_troubles_total{kind="stuck"}')).toBe(3);
  });

  it('shows the last source-lag measurement per partition, leaving it out when unknown', async () => {
    const m = new Metrics();
    const at = Date.UTC(2026, 11, 5, 10, 0, 0);
    m.setSourceLag({ source: 'jetstream', at, partitions: [{ partition: 0, pending: 42, ackPending: 3, oldestAt: at - 12_500 }, { partition: 1, pending: 0, ackPending: 0 }] });
    m.setAlertsActive(2);
    let text = await m.render();
    expect(sample(text, 'http_destination_source_pending_messages{source="jetstream",partition="0"}')).toBe(42);
    expect(sample(text, 'http_destination_source_pending_messages{source="jetstream",partition="1"}')).toBe(0);
    expect(sample(text, 'http_destination_source_unacked_messages{source="jetstream",partition="0"}')).toBe(3);
    expect(sample(text, 'http_destination_source_oldest_waiting_seconds{source="jetstream"}')).toBe(12.5);
    expect(sample(text, 'http_destination_alerts_active')).toBe(2);
    m.setSourceLag({ source: 'file', at, partitions: [{ pending: 0, ackPending: 0 }] });
    text = await m.render();
    expect(sample(text, 'http_destination_source_pending_messages{source="file",partition="all"}')).toBe(0);
    expect(sample(text, 'http_destination_source_oldest_waiting_seconds{source="file"}')).toBe(0);
    expect(text).not.toContain('source="jetstream"');
    m.setSourceLag(undefined);
    text = await m.render();
    expect(text).not.toMatch(/^http_destination_source_\w+\{/m);
  });

  it('adds the default Node metrics on request, in its own registry', async () => {
    const withDefaults = await new Metrics({ defaultMetrics: true }).render();
    expect(withDefaults).toMatch(/^nodejs_eventloop_lag_seconds /m);
    expect(withDefaults).toMatch(/^process_cpu_user_seconds_total /m);
    expect(withDefaults).toMatch(/^nodejs_heap_size_used_bytes /m);
    expect(withDefaults).toMatch(/nodejs_gc_duration_seconds/);
    expect(await new Metrics().render()).not.toMatch(/nodejs_eventloop_lag_seconds/);
  });

  it('stamps the last delivery time of the dataflows that delivered since the last stamp', () => {
    let now = 1_000;
    const m = new Metrics({ now: () => now });
    m.exportSettled('flow-1', 'delivered', 1, 0.1);
    m.exportSettled('flow-2', 'failed', 3);
    m.stamp();
    expect(m.flow('flow-1').lastDeliveredAt).toBe(1_000);
    expect(m.flow('flow-2').lastDeliveredAt).toBe(0);
    now = 2_000;
    m.stamp();
    expect(m.flow('flow-1').lastDeliveredAt).toBe(1_000);
  });

  it('puts latencies into fine, ordered figure buckets', () => {
    expect(figureBucket(0)).toBe(0);
    expect(figureBucket(1)).toBe(0);
    for (const ms of [2, 10, 99, 1000, 60_000, 3_600_000]) {
      const b = figureBucket(ms);
      expect(figureBucketUpperMs(b)).toBeGreaterThanOrEqual(ms);
      expect(figureBucketUpperMs(b - 1)).toBeLessThan(ms);
      expect(figureBucketUpperMs(b) / ms).toBeLessThanOrEqual(1.125 + 1e-9);
    }
  });
});
