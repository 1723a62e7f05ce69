/**
 * The per-dataflow retry queues and delivered-version marks (SPEC §6) in Redis, for the pool
 * (backbone) mode. Same contract as MemoryRetryQueue / LocalRetryQueue (src/stores/retry-queue.ts).
 *
 * Keys (under `prefix`): `rq:e:<dataflow>` a hash profile → entry JSON, `rq:d:<dataflow>` a
 * sorted set profile → dueAt, `rq:flows` the set of dataflows with a queue, `rq:m:<dataflow>` a
 * hash profile → delivered version.
 *
 * Atomicity: `settle` and `record` are Lua scripts (compare the stored idempotency key / keep the
 * max). `enqueue` merges payloads in TypeScript (`mergeQueued`, audience exits carried over), so it
 * runs as an optimistic transaction (WATCH the entry hash, MULTI/EXEC, retry on conflict).
 *
 * Not wired yet into the pool (see the branch report): who drains in a pool is still open.
 */
import type { Redis } from 'ioredis';
import { mergeQueued, type DeliveredMarks, type EnqueueResult, type QueuedExport, type RetryQueue } from './retry-queue.js';

const SETTLE = `
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local stored = cjson.decode(raw)
if stored.idempotencyKey ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[4]) end
else
  local retry = cjson.decode(ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
  redis.call('ZADD', KEYS[2], retry.dueAt, ARGV[1])
end
return 1
`;

const RECORD = `
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1 + (i - 1) / 2], ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1 + (i - 1) / 2], ARGV[i], ARGV[i + 1])
  end
end
return 1
`;

export interface RedisRetryQueueOptions {
  redis: Redis;
  /** Key prefix, e.g. `hd:`. */
  prefix: string;
  /** Close the client on close(). @default false */
  ownsClient?: boolean;
}

/**
 * Retry queues in Redis.
 *
 * @example
 * const q = new RedisRetryQueue({ redis, prefix: 'hd:' });
 * await q.enqueue(entry);
 */
export class RedisRetryQueue implements RetryQueue {
  constructor(private readonly o: RedisRetryQueueOptions) {}

  private ek(df: string): string {
    return `${this.o.prefix}rq:e:${df}`;
  }
  private dk(df: string): string {
    return `${this.o.prefix}rq:d:${df}`;
  }
  private get fk(): string {
    return `${this.o.prefix}rq:flows`;
  }

  async enqueue(entry: QueuedExport): Promise<EnqueueResult> {
    const r = this.o.redis.duplicate();
    try {
      for (;;) {
        await r.watch(this.ek(entry.dataflowId));
        const raw = await r.hget(this.ek(entry.dataflowId), entry.profileId);
        const stored = raw === null ? undefined : (JSON.parse(raw) as QueuedExport);
        const next = mergeQueued(stored, entry);
        if (next === undefined) {
          await r.unwatch();
          return { kept: false };
        }
        const done = await r
          .multi()
          .hset(this.ek(entry.dataflowId), entry.profileId, JSON.stringify(next))
          .zadd(this.dk(entry.dataflowId), next.dueAt, entry.profileId)
          .sadd(this.fk, entry.dataflowId)
          .exec();
        if (done === null) continue; // the entry changed meanwhile: read it again
        return { kept: true, replaced: stored !== undefined && stored.idempotencyKey !== entry.idempotencyKey ? stored.idempotencyKey : undefined };
      }
    } finally {
      r.disconnect();
    }
  }

  async due(dataflowId: string, now: number, limit: number): Promise<QueuedExport[]> {
    const ids = await this.o.redis.zrangebyscore(this.dk(dataflowId), '-inf', now, 'LIMIT', 0, limit);
    return this.load(dataflowId, ids);
  }

  async nextDue(dataflowId: string): Promise<number | undefined> {
    const first = await this.o.redis.zrange(this.dk(dataflowId), 0, 0, 'WITHSCORES');
    return first.length === 2 ? Number(first[1]) : undefined;
  }

  async settle(entry: QueuedExport, retry?: { attempts: number; dueAt: number; lastErrorCode?: string; lastStatus?: number }): Promise<boolean> {
    const updated = retry ? JSON.stringify({ ...entry, ...retry }) : '';
    // The rescheduled entry keeps what is stored apart from the retry fields; entry is the stored one (same key).
    const res = await this.o.redis.eval(
      SETTLE,
      3,
      this.ek(entry.dataflowId),
      this.dk(entry.dataflowId),
      this.fk,
      entry.profileId,
      entry.idempotencyKey,
      retry ? JSON.stringify(retry) : '',
      entry.dataflowId,
      updated,
    );
    return res === 1;
  }

  async keys(): Promise<Array<{ dataflowId: string; profileId: string }>> {
    const out: Array<{ dataflowId: string; profileId: string }> = [];
    for (const df of await this.o.redis.smembers(this.fk)) {
      for (const p of await this.o.redis.hkeys(this.ek(df))) out.push({ dataflowId: df, profileId: p });
    }
    return out;
  }

  async list(dataflowId?: string): Promise<QueuedExport[]> {
    const flows = dataflowId === undefined ? await this.o.redis.smembers(this.fk) : [dataflowId];
    const all: QueuedExport[] = [];
    for (const df of flows) all.push(...(await this.load(df, await this.o.redis.zrange(this.dk(df), 0, -1))));
    return all.sort((a, b) => a.dueAt - b.dueAt);
  }

  private async load(dataflowId: string, ids: string[]): Promise<QueuedExport[]> {
    if (ids.length === 0) return [];
    const raws = await this.o.redis.hmget(this.ek(dataflowId), ...ids);
    return raws.filter((r): r is string => r !== null).map((r) => JSON.parse(r) as QueuedExport);
  }

  async close(): Promise<void> {
    if (this.o.ownsClient) this.o.redis.disconnect();
  }
}

/**
 * Delivered-version marks in Redis: a Lua script keeps the max.
 *
 * @example
 * const marks = new RedisDeliveredMarks({ redis, prefix: 'hd:' });
 * await marks.record([{ dataflowId: 'f', profileId: 'p', version: 7 }]);
 */
export class RedisDeliveredMarks implements DeliveredMarks {
  constructor(private readonly o: RedisRetryQueueOptions) {}

  async get(dataflowId: string, profileId: string): Promise<number | undefined> {
    const v = await this.o.redis.hget(`${this.o.prefix}rq:m:${dataflowId}`, profileId);
    return v === null ? undefined : Number(v);
  }

  async record(marks: ReadonlyArray<{ dataflowId: string; profileId: string; version: number }>): Promise<void> {
    if (marks.length === 0) return;
    const keys = marks.map((m) => `${this.o.prefix}rq:m:${m.dataflowId}`);
    const args = marks.flatMap((m) => [m.profileId, String(m.version)]);
    await this.o.redis.eval(RECORD, keys.length, ...keys, ...args);
  }

  async close(): Promise<void> {
    if (this.o.ownsClient) this.o.redis.disconnect();
  }
}
