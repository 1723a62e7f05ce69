// The Dataflows page: per dataflow the SPEC §10 figures (this run and in total), live charts of
// exports/s, failures/s and p50/p95 latency over the last hour, the rate limit and how close
// the flow runs to it, the last delivery, the active alerts; the pool's partitions when the
// worker runs in a pool.
import { lineChart, usageBar } from './chart.js';
import { ago, ApiError, el, fmtInt, fmtMs, fmtRate, getJson } from './dom.js';

const COUNTS = ['received', 'exported', 'excluded', 'failed'];

/** Per-second samples kept in the page (the worker answers only what is new). */
const series = { last: 0, spanMs: 3_600_000, flows: new Map() };

async function refreshSeries() {
  const a = await getJson(`/api/series${series.last ? `?since=${series.last}` : ''}`);
  series.spanMs = a.spanMs;
  for (const f of a.dataflows) {
    let s = series.flows.get(f.dataflowId);
    if (!s) series.flows.set(f.dataflowId, (s = { t: [], exported: [], failed: [], requests: [], p50: [], p95: [] }));
    for (const k of Object.keys(s)) s[k].push(...f[k]);
    const keepFrom = s.t.findIndex((t) => t > a.now - a.spanMs);
    if (keepFrom > 0) for (const k of Object.keys(s)) s[k].splice(0, keepFrom);
    if (f.t.length) series.last = Math.max(series.last, f.t[f.t.length - 1]);
  }
  return a.now;
}

/** The mean of the last `n` values. */
const meanLast = (xs, n) => (xs.length ? xs.slice(-n).reduce((a, v) => a + v, 0) / Math.min(n, xs.length) : 0);

function figuresTable(d) {
  const cell = (scope, k) => el('td', { class: 'num', 'data-figure': `${scope}.${k}`, 'data-value': d[scope][k] }, fmtInt(d[scope][k]));
  return el(
    'table',
    { class: 'figures' },
    el('thead', {}, el('tr', {}, el('th', {}, ''), ...COUNTS.map((k) => el('th', { class: 'num' }, k)))),
    el('tbody', {}, el('tr', {}, el('th', {}, 'this run'), ...COUNTS.map((k) => cell('run', k))), el('tr', {}, el('th', {}, 'total'), ...COUNTS.map((k) => cell('total', k)))),
  );
}

function alertList(alerts) {
  if (!alerts.length) return el('p', { class: 'muted', 'data-alerts': 0 }, 'No active alert.');
  return el(
    'ul',
    { class: 'alerts', 'data-alerts': alerts.length },
    alerts.map((a) => el('li', { 'data-alert': a.alertId ?? '' }, el('strong', {}, a.rule ?? a.alertId ?? 'alert'), ` since ${a.since ?? a.at ?? '?'} (${ago(a.since ?? a.at)}): `, a.message ?? '')),
  );
}

/**
 * The time axis: the last hour, or less while the worker is young (5-minute steps), so a fresh
 * worker's first minutes are not squeezed against the right edge.
 */
function axisSpan(now) {
  let oldest = now;
  for (const s of series.flows.values()) if (s.t.length) oldest = Math.min(oldest, s.t[0]);
  const step = 300_000;
  return Math.min(series.spanMs, Math.max(step, Math.ceil((now - oldest) / step) * step));
}

function flowCard(d, setting, s, now) {
  const spanMs = axisSpan(now);
  const limit = setting?.rateLimit;
  const recent = s ? meanLast(s.requests, 10) : 0;
  const peak = s ? Math.max(0, ...s.requests.slice(-60)) : 0;
  const rate = limit
    ? el(
        'div',
        { class: 'rate' },
        el('span', {}, 'rate limit ', el('strong', { 'data-rate-limit': limit }, `${fmtInt(limit)}/s`), ' · this worker: '),
        el('span', { 'data-rate-now': recent.toFixed(3) }, `${fmtRate(recent)}/s (last 10 s)`),
        usageBar(recent, limit),
        el('span', { 'data-rate-share': (recent / limit).toFixed(4) }, `${((recent / limit) * 100).toFixed(1)} %`),
        el('span', { class: 'muted' }, ` · peak 1-s ${fmtRate(peak)}/s in the last minute`),
      )
    : null;
  const t = s?.t ?? [];
  const charts = el(
    'div',
    { class: 'charts' },
    lineChart({
      id: `${d.id}:rate`,
      title: 'exports/s and failures/s',
      t,
      now,
      spanMs,
      unit: 'per second',
      format: fmtRate,
      series: [
        { name: 'exported', values: s?.exported ?? [], cls: 'ok' },
        { name: 'failed', values: s?.failed ?? [], cls: 'bad' },
      ],
    }),
    lineChart({
      id: `${d.id}:latency`,
      title: 'latency p50 / p95 (event → delivered)',
      t,
      now,
      spanMs,
      unit: 'ms',
      format: fmtMs,
      log: true,
      series: [
        { name: 'p50', values: s?.p50 ?? [], cls: 'p50' },
        { name: 'p95', values: s?.p95 ?? [], cls: 'p95' },
      ],
    }),
  );
  return el(
    'section',
    { class: 'card', 'data-flow': d.id },
    el('h2', {}, d.id, setting ? el('span', { class: 'muted' }, ` → ${setting.destinationId}`) : null),
    el(
      'div',
      { class: 'facts' },
      el('span', {}, 'last delivery ', el('strong', { 'data-last-delivery': d.lastDeliveryAt ?? '' }, d.lastDeliveryAt ?? 'never'), d.lastDeliveryAt ? ` (${ago(d.lastDeliveryAt)})` : ''),
      el('span', {}, 'p50 ', el('strong', { 'data-latency': 'p50', 'data-value': d.latencyMs.p50 ?? '' }, fmtMs(d.latencyMs.p50))),
      el('span', {}, 'p95 ', el('strong', { 'data-latency': 'p95', 'data-value': d.latencyMs.p95 ?? '' }, fmtMs(d.latencyMs.p95))),
      el('span', { class: 'muted' }, '(this run)'),
    ),
    figuresTable(d),
    rate,
    charts,
    el('h3', {}, 'Active alerts'),
    alertList(d.alerts ?? []),
  );
}

/** A table of an array of plain objects (the pool's partitions, workers, lag: whatever the API gives). */
function objectTable(name, rows) {
  const cols = [...new Set(rows.flatMap((r) => (r && typeof r === 'object' ? Object.keys(r) : [])))];
  const show = (v) => (v === null || v === undefined ? '–' : Array.isArray(v) ? v.join(', ') : typeof v === 'object' ? JSON.stringify(v) : String(v));
  return el(
    'div',
    {},
    el('h3', {}, name),
    el(
      'table',
      { class: 'plain', 'data-pool-table': name },
      el('thead', {}, el('tr', {}, cols.map((c) => el('th', {}, c)))),
      el('tbody', {}, rows.map((r) => el('tr', {}, cols.map((c) => el('td', {}, show(r?.[c])))))),
    ),
  );
}

/** One worker (no pool): the source's lag from `/api/partitions` (`mode: "single"`). */
function singleSection(body) {
  const box = el('section', { class: 'card', id: 'pool', 'data-pool': 'single' }, el('h2', {}, `Source: ${body.source} (one worker, no pool)`));
  const lag = body.lag;
  if (!lag) box.append(el('p', { class: 'muted' }, 'Source lag not measured yet.'));
  else {
    const age = lag.oldestWaitingMs === null ? '–' : `${(lag.oldestWaitingMs / 1000).toFixed(1)} s`;
    box.append(
      el('p', {}, [
        el('span', { class: 'kv', 'data-lag': 'pending' }, 'waiting to be read: ', el('strong', {}, String(lag.pending))),
        el('span', { class: 'kv', 'data-lag': 'ackPending' }, 'read, not settled: ', el('strong', {}, String(lag.ackPending))),
        el('span', { class: 'kv', 'data-lag': 'oldest' }, 'oldest waiting: ', el('strong', {}, age)),
      ]),
    );
  }
  return box;
}

function poolSection(partitions) {
  if (partitions.state === 'ok' && partitions.body?.mode === 'single') return singleSection(partitions.body);
  const state = { na: 'not-available', error: 'error', ok: 'available' }[partitions.state];
  const box = el('section', { class: 'card', id: 'pool', 'data-pool': state }, el('h2', {}, 'Pool: partitions, owners, lag'));
  if (partitions.state === 'na') box.append(el('p', { class: 'muted' }, 'Not available (not a pool, or this worker does not serve /api/partitions).'));
  else if (partitions.state === 'error') box.append(el('p', { class: 'error' }, partitions.error));
  else {
    const p = partitions.body;
    const scalars = Object.entries(p ?? {}).filter(([, v]) => v === null || typeof v !== 'object');
    if (scalars.length) box.append(el('p', {}, scalars.map(([k, v]) => el('span', { class: 'kv' }, `${k}: `, el('strong', {}, String(v))))));
    for (const [k, v] of Object.entries(p ?? {})) if (Array.isArray(v)) box.append(objectTable(k, v));
    if (Array.isArray(p)) box.append(objectTable('partitions', p));
  }
  return box;
}

let settings;

async function readPartitions() {
  try {
    return { state: 'ok', body: await getJson('/api/partitions') };
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return { state: 'na' };
    return { state: 'error', error: `partitions: ${err.message}` };
  }
}

/** Renders the page into `main`; called again every refresh. */
export async function renderDataflows(main) {
  settings ??= await getJson('/api/console').catch(() => ({ dataflows: [] }));
  const [report, now, partitions] = await Promise.all([getJson('/api/dataflows'), refreshSeries(), readPartitions()]);
  const byId = new Map(settings.dataflows.map((d) => [d.id, d]));
  const page = el(
    'div',
    { id: 'dataflows', 'data-generated-at': report.generatedAt },
    el(
      'p',
      { class: 'summary' },
      `Run since ${report.runStart} (one-hour runs, UTC) · rejected input events: `,
      el('strong', { 'data-rejected': 'run', 'data-value': report.rejected.run }, fmtInt(report.rejected.run)),
      ' this run, ',
      el('strong', { 'data-rejected': 'total', 'data-value': report.rejected.total }, fmtInt(report.rejected.total)),
      ' in total · ',
      el('span', { 'data-active-alerts': report.alerts.length }, report.alerts.length ? `${report.alerts.length} active alert(s)` : 'no active alert'),
    ),
    el('p', { class: 'muted' }, 'Figures are the pool\'s (or the host\'s with the local store); charts and rate are this worker\'s, one sample a second, up to the last hour.'),
    report.dataflows.map((d) => flowCard(d, byId.get(d.id), series.flows.get(d.id), now)),
    poolSection(partitions),
  );
  main.replaceChildren(page);
}
