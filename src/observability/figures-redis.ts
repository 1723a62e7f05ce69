/**
 * The pool's dataflow figures in Redis: every worker adds its deltas (one script call per
 * flush, about once a second, not per message), so any process (`status`, the admin API of any
 * worker) reads the pool's figures.
 *
 * Keys, under `<keyPrefix>figures:<pool>:` — hashes whose fields are `<name>\n<dataflowId>`
 * (`rejected` alone), latency fields `lat\n<dataflowId>\n<bucket>`:
 * - `total` — counts since the pool began;
 * - `run:<runStart>` — counts and latency buckets of a one-hour run (kept 8 days);
 * - `slot:<slotStart>` — exported, failed and latency buckets of a 10 s slot (kept 2 h; alert windows);
 * - `last` — dataflow → last delivery time (ms; the greatest wins).
 */
import { Redis } from 'ioredis';
import {
  FIGURES_DEFAULTS,
  runStartOf,
  slotOf,
  zeroCounts,
  type FigureCounts,
  type FiguresDelta,
  type FiguresStore,
  type StoredFigures,
  type WindowFigures,
} from './figures.js';

/**
 * KEYS: total, run, slot, last. ARGV: run ttl, slot ttl, number of increments n, then n
 * triples (t|r|s, field, by), then pairs (dataflow, last delivery ms).
 */
const ADD_LUA = `
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  local target = ARGV[i]
  local key = KEYS[1]
  if target == 'r' then key = KEYS[2] elseif target == 's' then key = KEYS[3] end
  redis.call('HINCRBY', key, ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
while i < #ARGV do
  local cur = tonumber(redis.call('HGET', KEYS[4], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
  i = i + 2
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
return 1
`;

const COUNT_NAMES = ['received', 'exported', 'excluded', 'failed', 'superseded'] as const;
const field = (name: string, id: string): string => `${name}\n${id}`;
const latPrefix = (id: string): string => `lat\n${id}\n`;

interface FiguresScripts {
  hdFiguresAdd(total: string, run: string, slot: string, last: string, ...args: Array<string | number>): Promise<number>;
}

export interface RedisFiguresStoreOptions {
  url: string;
  /** @default 'hd:' */
  keyPrefix?: string;
  /** The pool's name (the source's durable). @default 'default' */
  pool?: string;
}

/** The figures of a pool, in Redis. */
export class RedisFiguresStore implements FiguresStore {
  private readonly redis: Redis;
  private readonly base: string;

  constructor(options: RedisFiguresStoreOptions) {
    this.redis = new Redis(options.url, { maxRetriesPerRequest: 1, lazyConnect: false });
    this.redis.on('error', () => {});
    this.redis.defineCommand('hdFiguresAdd', { numberOfKeys: 4, lua: ADD_LUA });
    this.base = `${options.keyPrefix ?? 'hd:'}figures:${options.pool ?? 'default'}:`;
  }

  private keys(at: number): [string, string, string, string] {
    return [`${this.base}total`, `${this.base}run:${runStartOf(at)}`, `${this.base}slot:${slotOf(at)}`, `${this.base}last`];
  }

  async add(delta: FiguresDelta, at: number): Promise<void> {
    const incr: Array<string | number> = [];
    const push = (targets: string, f: string, by: number): void => {
      if (by === 0) return;
      for (const t of targets) incr.push(t, f, by);
    };
    push('tr', 'rejected', delta.rejected);
    const last: Array<string | number> = [];
    for (const f of delta.flows) {
      for (const name of COUNT_NAMES) push(name === 'exported' || name === 'failed' ? 'trs' : 'tr', field(name, f.dataflowId), f.counts[name] ?? 0);
      for (const [b, n] of Object.entries(f.latency)) push('rs', `${latPrefix(f.dataflowId)}${b}`, n);
      if (f.lastDeliveredAt > 0) last.push(f.dataflowId, f.lastDeliveredAt);
    }
    if (incr.length === 0 && last.length === 0) return;
    const scripts = this.redis as unknown as FiguresScripts; // defineCommand adds the method at run time
    await scripts.hdFiguresAdd(...this.keys(at), FIGURES_DEFAULTS.runRetentionMs, FIGURES_DEFAULTS.slotRetentionMs, incr.length / 3, ...incr, ...last);
  }

  async read(dataflowIds: readonly string[], runStart: number): Promise<StoredFigures> {
    const [total, run, , last] = this.keys(runStart);
    const [t, r, l] = await Promise.all([this.redis.hgetall(total), this.redis.hgetall(run), this.redis.hgetall(last)]);
    const counts = (h: Record<string, string>, id: string): FigureCounts => {
      const c = zeroCounts();
      for (const name of COUNT_NAMES) {
        const n = Number(h[field(name, id)] ?? 0);
        if (name !== 'superseded') c[name] = n;
        else if (n !== 0) c.superseded = n; // present only when not zero (FigureCounts)
      }
      return c;
    };
    const flows: StoredFigures['flows'] = {};
    for (const id of dataflowIds) {
      flows[id] = {
        run: counts(r, id),
        total: counts(t, id),
        runLatency: buckets(r, id),
        lastDeliveredAt: l[id] !== undefined ? Number(l[id]) : undefined,
      };
    }
    return { rejected: { run: Number(r.rejected ?? 0), total: Number(t.rejected ?? 0) }, flows };
  }

  async window(dataflowIds: readonly string[], from: number, to: number): Promise<Record<string, WindowFigures>> {
    const pipeline = this.redis.pipeline();
    for (let slot = slotOf(from); slot < to; slot += FIGURES_DEFAULTS.slotMs) pipeline.hgetall(`${this.base}slot:${slot}`);
    const replies = (await pipeline.exec()) ?? [];
    const out: Record<string, WindowFigures> = {};
    for (const id of dataflowIds) out[id] = { exported: 0, failed: 0, latency: {} };
    for (const [err, h] of replies) {
      if (err) throw err;
      const hash = h as Record<string, string>;
      for (const id of dataflowIds) {
        const w = out[id];
        w.exported += Number(hash[field('exported', id)] ?? 0);
        w.failed += Number(hash[field('failed', id)] ?? 0);
        for (const [b, n] of Object.entries(buckets(hash, id))) w.latency[Number(b)] = (w.latency[Number(b)] ?? 0) + n;
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

function buckets(h: Record<string, string>, id: string): Record<number, number> {
  const prefix = latPrefix(id);
  const out: Record<number, number> = {};
  for (const [k, v] of Object.entries(h)) if (k.startsWith(prefix)) out[Number(k.slice(prefix.length))] = Number(v);
  return out;
}
