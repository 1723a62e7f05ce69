// Line charts in plain SVG: a time axis over the last `spanMs`, one polyline per series,
// gaps where a value is null. No library, nothing fetched from elsewhere.
const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A round upper bound for the y axis (1, 2, 5 × 10^n). */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/**
 * @param o.title chart title
 * @param o.t sample times (ms)
 * @param o.series [{ name, values, cls }]
 * @param o.now right edge (ms); o.spanMs width of the time axis
 * @param o.unit shown after "now"
 * @param o.log logarithmic y axis (from 1)
 * @param o.format formats the y maximum
 */
export function lineChart(o) {
  const W = 460;
  const H = 150;
  const L = 50;
  const R = 8;
  const T = 22;
  const B = 20;
  const from = o.now - o.spanMs;
  const values = o.series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  // Linear from 0, or (o.log) logarithmic from 1 to a power of 10: latencies span ms to days.
  const max = o.log ? 10 ** Math.max(1, Math.ceil(Math.log10(Math.max(1, ...values)))) : niceMax(Math.max(0, ...values));
  const x = (t) => L + ((t - from) / o.spanMs) * (W - L - R);
  const y = o.log
    ? (v) => T + (1 - Math.log10(Math.max(1, v)) / Math.log10(max)) * (H - T - B)
    : (v) => T + (1 - v / max) * (H - T - B);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': o.title, 'data-chart': o.id, 'data-points': o.t.length });
  for (const s of o.series) root.setAttribute(`data-sum-${s.name.replace(/[^a-z0-9]/gi, '').toLowerCase()}`, String(s.values.reduce((a, v) => a + (v ?? 0), 0)));
  root.append(svg('text', { x: L, y: 14, class: 'chart-title' }, o.title));
  let lx = W - R;
  for (const s of [...o.series].reverse()) {
    const label = svg('text', { x: lx, y: 14, class: `legend ${s.cls}`, 'text-anchor': 'end' }, `— ${s.name}`);
    root.append(label);
    lx -= 16 + (s.name.length + 2) * 6;
  }
  const decades = Math.log10(max);
  const ticks = o.log ? [0, Math.round(decades / 2), decades].map((k) => 10 ** k) : [0, max / 2, max];
  for (const v of ticks) {
    root.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
    root.append(svg('text', { x: L - 4, y: y(v) + 3, class: 'axis', 'text-anchor': 'end' }, o.format(v)));
  }
  root.append(svg('text', { x: L, y: H - 5, class: 'axis' }, `−${Math.round(o.spanMs / 60_000)} min`));
  if (o.log) root.append(svg('text', { x: (L + W - R) / 2, y: H - 5, class: 'axis', 'text-anchor': 'middle' }, 'log scale'));
  root.append(svg('text', { x: W - R, y: H - 5, class: 'axis', 'text-anchor': 'end' }, `now${o.unit ? ` · ${o.unit}` : ''}`));
  for (const s of o.series) {
    let d = '';
    let pen = false;
    for (let i = 0; i < o.t.length; i++) {
      const v = s.values[i];
      if (v === null || v === undefined || o.t[i] < from) {
        pen = false;
        continue;
      }
      d += `${pen ? 'L' : 'M'}${x(o.t[i]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) root.append(svg('path', { d, class: `line ${s.cls}` }));
    // A value alone between gaps draws no line: a dot shows it.
    for (let i = 0; i < o.t.length; i++) {
      const v = s.values[i];
      const alone = (i === 0 || s.values[i - 1] === null) && (i === o.t.length - 1 || s.values[i + 1] === null);
      if (v !== null && v !== undefined && alone && o.t[i] >= from) root.append(svg('circle', { cx: x(o.t[i]).toFixed(1), cy: y(v).toFixed(1), r: 2, class: `dot ${s.cls}` }));
    }
  }
  return root;
}

/** A horizontal bar: how much of `limit` `value` uses (0–100 %, capped for drawing). */
export function usageBar(value, limit) {
  const W = 160;
  const H = 12;
  const share = limit > 0 ? value / limit : 0;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'bar', 'data-share': share.toFixed(4) });
  root.append(svg('rect', { x: 0, y: 0, width: W, height: H, class: 'bar-bg' }));
  root.append(svg('rect', { x: 0, y: 0, width: Math.min(1, share) * W, height: H, class: share > 0.9 ? 'bar-fg hot' : 'bar-fg' }));
  return root;
}
