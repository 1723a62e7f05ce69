/**
 * The console's per-second ring (`series.ts`) and the failed-request search of
 * `/api/failed/search` (`console-api.ts`): pure logic, with an injected clock.
 */
import { describe, expect, it } from 'vitest';
import { searchFailed, statusMatches } from '../../src/admin/console-api.js';
import { SeriesRing } from '../../src/admin/series.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { FailedRequest } from '../../src/sinks/types.js';

describe('SeriesRing', () => {
  it('keeps per-second rates, requests and the p50/p95 of each second, per dataflow', () => {
    let now = 1_000_000;
    const metrics = new Metrics();
    const ring = new SeriesRing({ metrics, dataflowIds: ['a', 'quiet'], now: () => now });
    for (let i = 0; i < 10; i++) metrics.exportSettled('a', 'delivered', 1, 0.01 * (i + 1)); // 10 … 100 ms
    metrics.exportSettled('a', 'failed', 3);
    now += 2_000; // two seconds: rates are per second
    ring.sample();
    now += 1_000;
    ring.sample();
    const r = ring.read();
    expect(r.dataflows.map((d) => d.dataflowId).sort()).toEqual(['a', 'quiet']);
    const a = r.dataflows.find((d) => d.dataflowId === 'a')!;
    expect(a.t).toEqual([1_002_000, 1_003_000]);
    expect(a.exported).toEqual([5, 0]);
    expect(a.failed).toEqual([0.5, 0]);
    expect(a.requests).toEqual([6.5, 0]);
    // bucket upper bounds: at most 12.5 % above the truth
    expect(a.p50[0]).toBeGreaterThanOrEqual(50);
    expect(a.p50[0]).toBeLessThanOrEqual(50 * 1.125);
    expect(a.p95[0]).toBeGreaterThanOrEqual(100);
    expect(a.p95[0]).toBeLessThanOrEqual(100 * 1.125);
    expect([a.p50[1], a.p95[1]]).toEqual([null, null]);
    const quiet = r.dataflows.find((d) => d.dataflowId === 'quiet')!;
    expect(quiet.exported).toEqual([0, 0]);
  });

  it('answers only what is newer than `since`, and forgets what is older than its capacity', () => {
    let now = 0;
    const metrics = new Metrics();
    const ring = new SeriesRing({ metrics, dataflowIds: ['a'], capacity: 3, now: () => now });
    for (let i = 1; i <= 5; i++) {
      metrics.exportSettled('a', 'delivered', 1, 0.001);
      now = i * 1_000;
      ring.sample();
    }
    expect(ring.read().dataflows[0].t).toEqual([3_000, 4_000, 5_000]);
    expect(ring.read({ since: 4_000 }).dataflows[0].t).toEqual([5_000]);
    expect(ring.read({ dataflowId: 'other' }).dataflows).toEqual([]);
    expect(ring.read().spanMs).toBe(3_000);
  });
});

const rec = (over: Partial<FailedRequest>): FailedRequest => ({
  id: over.id ?? 'x',
  dataflowId: 'f1',
  destinationId: 'd',
  profileId: 'p',
  idempotencyKey: over.id ?? 'x',
  payload: {} as FailedRequest['payload'],
  attempts: 3,
  lastErrorCode: 'ERR_HTTP_STATUS',
  lastError: 'HTTP 500',
  failedAt: '2026-12-05T10:00:00.000Z',
  ...over,
});

describe('failed-request search', () => {
  const all = [
    rec({ id: '1', lastStatus: 500, failedAt: '2026-12-05T10:00:00.000Z' }),
    rec({ id: '2', lastStatus: 400, dataflowId: 'f2', failedAt: '2026-12-05T11:00:00.000Z' }),
    rec({ id: '3', lastErrorCode: 'ERR_HTTP_TIMEOUT', lastError: 'timeout', failedAt: '2026-12-05T12:00:00.000Z', profileId: 'q' }),
  ];
  const ids = (q: Parameters<typeof searchFailed>[1]): string[] => searchFailed(all, q).items.map((r) => r.id);
  const page = { offset: 0, limit: 10 };

  it('filters by status code, class, no answer, error code', () => {
    expect(ids({ ...page, status: '500' })).toEqual(['1']);
    expect(ids({ ...page, status: '4xx' })).toEqual(['2']);
    expect(ids({ ...page, status: 'error' })).toEqual(['3']);
    expect(ids({ ...page, status: 'ERR_HTTP_TIMEOUT' })).toEqual(['3']);
    expect(statusMatches({ lastStatus: 503, lastErrorCode: 'ERR_HTTP_STATUS' }, '5XX')).toBe(true);
  });

  it('filters by dataflow, profile and time, newest first, paged', () => {
    expect(ids(page)).toEqual(['3', '2', '1']);
    expect(ids({ ...page, dataflowId: 'f2' })).toEqual(['2']);
    expect(ids({ ...page, profileId: 'q' })).toEqual(['3']);
    expect(ids({ ...page, since: Date.parse('2026-12-05T11:00:00Z') })).toEqual(['3', '2']);
    expect(ids({ ...page, until: Date.parse('2026-12-05T11:00:00Z') })).toEqual(['1']);
    const r = searchFailed(all, { offset: 1, limit: 1 });
    expect([r.total, r.items.map((x) => x.id)]).toEqual([3, ['2']]);
  });
});
