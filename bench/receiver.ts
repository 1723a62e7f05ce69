/**
 * The bench's export receiver, run as a child process (`fork`, IPC): a node:http server on a
 * free loopback port that answers 200 as soon as a request's body is in, and records for each
 * request its arrival time, the `bench.sentAt` publish time from the body (end-to-end
 * latency = arrival − sentAt) and the dataflow marker (`"f1"` / `"f2"`).
 *
 * IPC: the parent sends `{ cmd: 'reset' }`, `{ cmd: 'count' }`, `{ cmd: 'stats', sinceSentAt?,
 * untilSentAt? }`, `{ cmd: 'between', from, to }` (arrivals in a wall-time window); each is
 * answered with `{ id, ... }` echoing the request's `id`.
 */
import { createServer } from 'node:http';
import { writeFileSync } from 'node:fs';

class Column {
  data: Float64Array;
  length = 0;
  constructor(initial = 1 << 16) {
    this.data = new Float64Array(initial);
  }
  push(v: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = v;
  }
  reset(): void {
    this.length = 0;
    if (this.data.length > 1 << 22) this.data = new Float64Array(1 << 16);
  }
}

const arrival = new Column();
const sentAt = new Column();
const flow = new Column();
let requests = 0;

const SENT = '"sentAt":';

/** The number after `"sentAt":`, or NaN. */
function readSentAt(body: string): number {
  const i = body.indexOf(SENT);
  if (i < 0) return NaN;
  let n = 0;
  let j = i + SENT.length;
  let any = false;
  for (; j < body.length; j++) {
    const c = body.charCodeAt(j);
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
    any = true;
  }
  return any ? n : NaN;
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const now = Date.now();
    const body = chunks.length === 1 ? chunks[0].toString('latin1') : Buffer.concat(chunks).toString('latin1');
    requests++;
    arrival.push(now);
    sentAt.push(readSentAt(body));
    flow.push(body.includes('"f2":') ? 2 : body.includes('"f1":') ? 1 : 0);
    res.writeHead(200, { 'content-length': '0' });
    res.end();
  });
});
// HD_RECEIVER_TRACE=FILE: on exit, one line per request: arrival ms, latency ms (for a latency time series).
if (process.env.HD_RECEIVER_TRACE) {
  const trace = process.env.HD_RECEIVER_TRACE;
  process.on('exit', () => {
    const lines: string[] = [];
    for (let i = 0; i < arrival.length; i++) lines.push(`${arrival.data[i]} ${arrival.data[i] - sentAt.data[i]}`);
    writeFileSync(trace, lines.join('\n'));
  });
}
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;

function quantile(sorted: Float64Array, q: number): number | null {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

interface FlowStats {
  count: number;
  first: number | null;
  last: number | null;
  /** Requests per calendar second, from the first arrival of any flow. */
  perSecond: number[];
  /** Most requests in any sliding 1-second window (t − 1000, t]. */
  maxSliding1s: number;
  /** Mean of the full seconds between the first and the last (both partial seconds left out). */
  sustained: number | null;
  /** count / (last − first). */
  overall: number | null;
  latency: { n: number; p50: number | null; p95: number | null; p99: number | null; max: number | null; missing: number };
}

function stats(which: number | null, sinceSentAt: number, untilSentAt: number): FlowStats {
  const idx: number[] = [];
  for (let i = 0; i < arrival.length; i++) if (which === null || flow.data[i] === which) idx.push(i);
  const origin = arrival.length > 0 ? arrival.data[0] : 0;
  const count = idx.length;
  const first = count ? arrival.data[idx[0]] : null;
  const last = count ? arrival.data[idx[count - 1]] : null;
  const perSecond: number[] = [];
  let maxSliding = 0;
  let lo = 0;
  const lat: number[] = [];
  let missing = 0;
  for (let k = 0; k < count; k++) {
    const i = idx[k];
    const t = arrival.data[i];
    const b = Math.floor((t - origin) / 1000);
    while (perSecond.length <= b) perSecond.push(0);
    perSecond[b]++;
    while (arrival.data[idx[lo]] <= t - 1000) lo++;
    if (k - lo + 1 > maxSliding) maxSliding = k - lo + 1;
    const s = sentAt.data[i];
    if (Number.isNaN(s)) missing++;
    else if (s >= sinceSentAt && s <= untilSentAt) lat.push(t - s);
  }
  const sorted = Float64Array.from(lat).sort();
  const firstB = first === null ? 0 : Math.floor((first - origin) / 1000);
  const full = perSecond.slice(firstB + 1, perSecond.length - 1);
  return {
    count,
    first,
    last,
    perSecond,
    maxSliding1s: maxSliding,
    sustained: full.length > 0 ? full.reduce((a, b) => a + b, 0) / full.length : null,
    overall: first !== null && last !== null && last > first ? (count / (last - first)) * 1000 : null,
    latency: {
      n: sorted.length,
      p50: quantile(sorted, 0.5),
      p95: quantile(sorted, 0.95),
      p99: quantile(sorted, 0.99),
      max: sorted.length ? sorted[sorted.length - 1] : null,
      missing,
    },
  };
}

type Cmd = {
  id: number;
  cmd: 'reset' | 'count' | 'stats' | 'between';
  sinceSentAt?: number;
  untilSentAt?: number;
  from?: number;
  to?: number;
};

process.on('message', (m: Cmd) => {
  const reply = (body: object) => process.send?.({ id: m.id, ...body });
  if (m.cmd === 'reset') {
    arrival.reset();
    sentAt.reset();
    flow.reset();
    requests = 0;
    reply({ ok: true });
  } else if (m.cmd === 'count') {
    reply({ count: requests, last: arrival.length ? arrival.data[arrival.length - 1] : null });
  } else if (m.cmd === 'between') {
    // Requests that arrived in [from, to].
    let n = 0;
    for (let i = 0; i < arrival.length; i++) if (arrival.data[i] >= (m.from ?? -Infinity) && arrival.data[i] <= (m.to ?? Infinity)) n++;
    reply({ count: n });
  } else if (m.cmd === 'stats') {
    const since = m.sinceSentAt ?? -Infinity;
    const until = m.untilSentAt ?? Infinity;
    reply({ all: stats(null, since, until), f1: stats(1, since, until), f2: stats(2, since, until) });
  }
});
process.on('disconnect', () => process.exit(0));

server.listen(0, '127.0.0.1', () => {
  const a = server.address();
  process.send?.({ ready: true, port: typeof a === 'object' && a ? a.port : 0 });
});
