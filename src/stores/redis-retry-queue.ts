/**
 * The per-dataflow retry queues and delivered-version marks (SPEC §6) in Redis, for the pool
 * (JetStream + Redis). Same contract as MemoryRetryQueue / LocalRetryQueue (src/stores/retry-queue.ts).
 *
 * Keys (under `prefix`): `rq:e:<dataflow>` a hash profile → entry JSON; `rq:d:<dataflow>:<p>`
 * a sorted set profile → dueAt per partition `p` of the profile (`partitionOf`, so the owner
 * of a partition reads only its own due entries); `rq:flows` the set of dataflows with a
 * queue; `rq:m:<dataflow>` a hash profile → delivered version.
 *
 * Who drains in a pool: the owner of the partition a profile belongs to (see
 * src/worker/pool-retry-queue.ts). `owned` scopes `due` / `nextDue` to its partitions, and
 * `fenceFor` makes every `enqueue` conditional on the partition's lease (a worker that lost
 * it writes nothing more).
 *
 * Atomicity: `settle` and `record` are Lua scripts (compare the stored idempotency key / keep the
 * max). `enqueue` merges payloads in TypeScript (`mergeQueued`, audience exits carried over), so it
 * is an optimistic compare-and-set: read, merge, then a script writes only while the entry is
 * still the one read (and the lease and the epoch marker hold), else reads again.
 *
 * Store loss (issue 13): with `epoch`, every call checks the store's epoch marker
 * (src/stores/redis-store-epoch.ts) in the same round trip or script as its read or write; a
 * missing or changed marker (Redis emptied) rejects with `StoreLostError`, loudly, instead of
 * reading an empty queue or no marks.
 */
import { redisCall } from './redis-call.js';
import type { Redis } from 'ioredis';
import { partitionOf } from '../domain/partition.js';
import { FencedError, StoreError } from '../errors.js';
import type { RedisStoreEpoch } from './redis-store-epoch.js';
import { mergeQueued, type DeliveredMarks, type EnqueueResult, type QueuedExport, type RetryQueue } from './retry-queue.js';

/** Epoch check in a script: KEYS[n] the marker, ARGV[m] the epoch held ('' = not checked). */
const EPOCH_CHECK = (k: string, a: string): string => `if ${a} ~= '' and redis.call('GET', ${k}) ~= ${a} then return -2 end`;

/**
 * KEYS: entries hash, due zset, flows set, epoch marker. ARGV: profile, idempotency key,
 * retry JSON ('' = remove), dataflow, updated entry JSON, held epoch.
 * Returns 1 when the stored entry was this one, 0 when not, -2 on an epoch mismatch.
 */
const SETTLE = `
${EPOCH_CHECK('KEYS[4]', 'ARGV[6]')}
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

/**
 * Compare-and-set of one entry (the merge is done in TypeScript, `mergeQueued`). KEYS: entries
 * hash, due zset, flows set, epoch marker, lease key. ARGV: profile, the raw entry read ('' =
 * none), new entry JSON, dueAt, dataflow, held epoch, lease value ('' = not fenced).
 * Returns 1 written, 0 the entry changed since it was read (read again), -1 fenced, -2 epoch.
 */
const ENQUEUE = `
${EPOCH_CHECK('KEYS[4]', 'ARGV[6]')}
if ARGV[7] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[7] then return -1 end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if (raw or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[5])
return 1
`;

/** KEYS: epoch marker, then one marks hash per pair. ARGV: held epoch, then profile, version pairs. */
const RECORD = `
${EPOCH_CHECK('KEYS[1]', 'ARGV[1]')}
for i = 2, #ARGV, 2 do
  local key = KEYS[1 + i / 2]
  local cur = redis.call('HGET', key, ARGV[i])
  if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
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
  /** The source's partition count (`source.partitions`): one due set per partition. @default 1 */
  partitions?: number;
  /** The partitions whose due entries `due` / `nextDue` read (the worker's). @default every partition */
  owned?: () => Iterable<number>;
  /**
   * The lease an enqueue of `profileId` is conditional on (its partition's, held by this worker),
   * or undefined when this worker does not hold it: the enqueue then rejects with `FencedError`.
   * @default none: enqueues are not fenced (the `failed replay` command)
   */
  fenceFor?: (profileId: string) => { key: string; value: string } | undefined;
  /** The store's epoch marker, checked by every call. @default none */
  epoch?: RedisStoreEpoch;
}

/** Runs one Redis call (see `redisCall`). */
const call = <T>(op: string, fn: () => Promise<T>): Promise<T> => redisCall('redis retry queue', op, fn);

/**
 * Retry queues in Redis.
 *
 * @example
 * const q = new RedisRetryQueue({ redis, prefix: 'hd:', partitions: 16, owned: () => [0, 3] });
 * await q.enqueue(entry);
 * await q.due('flow-1', Date.now(), 64); // entries of partitions 0 and 3 only
 */
export class RedisRetryQueue implements RetryQueue {
  private readonly partitions: number;

  constructor(private readonly o: RedisRetryQueueOptions) {
    this.partitions = Math.max(1, o.partitions ?? 1);
  }

  private ek(df: string): string {
    return `${this.o.prefix}rq:e:${df}`;
  }
  private dk(df: string, profileId: string): string {
    return this.dkp(df, partitionOf(profileId, this.partitions));
  }
  private dkp(df: string, p: number): string {
    return `${this.o.prefix}rq:d:${df}:${p}`;
  }
  private get fk(): string {
    return `${this.o.prefix}rq:flows`;
  }
  private owned(): number[] {
    return this.o.owned ? [...this.o.owned()] : Array.from({ length: this.partitions }, (_, i) => i);
  }
  /** The epoch held ('' without an epoch check). */
  private async held(): Promise<string> {
    return this.o.epoch ? this.o.epoch.current() : '';
  }
  /** Throws what the epoch says of a mismatch (`StoreLostError`, or a retryable StoreError after an operator reset). */
  private async lost(held: string): Promise<never> {
    if (!this.o.epoch) throw new StoreError('redis retry queue: epoch mismatch without an epoch');
    return this.o.epoch.mismatch(held);
  }

  async enqueue(entry: QueuedExport): Promise<EnqueueResult> {
    const fence = this.o.fenceFor?.(entry.profileId);
    if (this.o.fenceFor && fence === undefined) {
      throw new FencedError(`export ${entry.idempotencyKey} not queued: this worker does not hold the profile's partition`);
    }
    const held = await this.held();
    const ek = this.ek(entry.dataflowId);
    for (;;) {
      const raw = await call('enqueue', () => this.o.redis.hget(ek, entry.profileId));
      const stored = raw === null ? undefined : (JSON.parse(raw) as QueuedExport);
      const next = mergeQueued(stored, entry);
      if (next === undefined) return { kept: false };
      const res = await call('enqueue', () =>
        this.o.redis.eval(
          ENQUEUE,
          5,
          ek,
          this.dk(entry.dataflowId, entry.profileId),
          this.fk,
          this.o.epoch?.key ?? `${this.o.prefix}epoch`,
          fence?.key ?? `${this.o.prefix}rq:nofence`,
          entry.profileId,
          raw ?? '',
          JSON.stringify(next),
          next.dueAt,
          entry.dataflowId,
          held,
          fence?.value ?? '',
        ),
      );
      if (res === -1) throw new FencedError(`export ${entry.idempotencyKey} not queued: this worker no longer holds the profile's partition`);
      if (res === -2) await this.lost(held);
      if (res === 0) continue; // the entry changed meanwhile: read and merge again
      return { kept: true, key: next.idempotencyKey, replaced: stored !== undefined && stored.idempotencyKey !== next.idempotencyKey ? stored.idempotencyKey : undefined };
    }
  }

  /** Reads `commands` after the epoch marker in one round trip (MULTI); throws on a mismatch. */
  private async checked(op: string, commands: Array<[string, ...Array<string | number>]>): Promise<unknown[]> {
    const held = await this.held();
    const m = this.o.redis.multi();
    if (this.o.epoch) m.get(this.o.epoch.key);
    for (const [cmd, ...args] of commands) m.call(cmd, ...args);
    const res = await call(op, async () => (await m.exec()) ?? []);
    for (const [err] of res) if (err) throw new StoreError(`redis retry queue: ${op} failed: ${err.message}`, { cause: err });
    const values = res.map(([, v]) => v);
    if (this.o.epoch) {
      if (values[0] !== held) await this.lost(held);
      values.shift();
    }
    return values;
  }

  async due(dataflowId: string, now: number, limit: number): Promise<QueuedExport[]> {
    const owned = this.owned();
    if (owned.length === 0 || limit <= 0) return [];
    const res = await this.checked(
      'due',
      owned.map((p) => ['zrangebyscore', this.dkp(dataflowId, p), '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit]),
    );
    const found: Array<{ id: string; at: number }> = [];
    for (const r of res as string[][]) for (let i = 0; i < r.length; i += 2) found.push({ id: r[i]!, at: Number(r[i + 1]) });
    found.sort((a, b) => a.at - b.at);
    return this.load(dataflowId, found.slice(0, limit).map((f) => f.id));
  }

  async nextDue(dataflowId: string): Promise<number | undefined> {
    const owned = this.owned();
    if (owned.length === 0) return undefined;
    const res = await this.checked('nextDue', owned.map((p) => ['zrange', this.dkp(dataflowId, p), 0, 0, 'WITHSCORES']));
    let next: number | undefined;
    for (const r of res as string[][]) if (r.length === 2 && (next === undefined || Number(r[1]) < next)) next = Number(r[1]);
    return next;
  }

  async settle(entry: QueuedExport, retry?: { attempts: number; dueAt: number; lastErrorCode?: string; lastStatus?: number }): Promise<boolean> {
    const held = await this.held();
    // The rescheduled entry keeps what is stored apart from the retry fields; entry is the stored one (same key).
    const updated = retry ? JSON.stringify({ ...entry, ...retry }) : '';
    const res = await call('settle', () =>
      this.o.redis.eval(
        SETTLE,
        4,
        this.ek(entry.dataflowId),
        this.dk(entry.dataflowId, entry.profileId),
        this.fk,
        this.o.epoch?.key ?? `${this.o.prefix}epoch`,
        entry.profileId,
        entry.idempotencyKey,
        retry ? JSON.stringify(retry) : '',
        entry.dataflowId,
        updated,
        held,
      ),
    );
    if (res === -2) await this.lost(held);
    return res === 1;
  }

  async keys(): Promise<Array<{ dataflowId: string; profileId: string }>> {
    return (await this.list()).map((e) => ({ dataflowId: e.dataflowId, profileId: e.profileId }));
  }

  async list(dataflowId?: string): Promise<QueuedExport[]> {
    const [flows] = dataflowId === undefined ? ((await this.checked('list', [['smembers', this.fk]])) as string[][]) : [[dataflowId]];
    if (flows!.length === 0) return [];
    const res = (await this.checked('list', flows!.map((df) => ['hvals', this.ek(df)]))) as string[][];
    return res
      .flat()
      .map((r) => JSON.parse(r) as QueuedExport)
      .sort((a, b) => a.dueAt - b.dueAt);
  }

  private async load(dataflowId: string, ids: string[]): Promise<QueuedExport[]> {
    if (ids.length === 0) return [];
    const raws = await call('due', () => this.o.redis.hmget(this.ek(dataflowId), ...ids));
    return raws.filter((r): r is string => r !== null).map((r) => JSON.parse(r) as QueuedExport);
  }

  async close(): Promise<void> {
    if (this.o.ownsClient) this.o.redis.disconnect();
  }
}

/**
 * Delivered-version marks in Redis: a Lua script keeps the max. With `epoch`, a read or a
 * write of an emptied store rejects with `StoreLostError` (no marks would let older states through).
 *
 * @example
 * const marks = new RedisDeliveredMarks({ redis, prefix: 'hd:' });
 * await marks.record([{ dataflowId: 'f', profileId: 'p', version: 7 }]);
 */
export class RedisDeliveredMarks implements DeliveredMarks {
  constructor(private readonly o: Pick<RedisRetryQueueOptions, 'redis' | 'prefix' | 'ownsClient' | 'epoch'>) {}

  private mk(df: string): string {
    return `${this.o.prefix}rq:m:${df}`;
  }

  async get(dataflowId: string, profileId: string): Promise<number | undefined> {
    const epoch = this.o.epoch;
    if (!epoch) {
      const v = await call('marks', () => this.o.redis.hget(this.mk(dataflowId), profileId));
      return v === null ? undefined : Number(v);
    }
    const held = await epoch.current();
    const res = await call('marks', async () => (await this.o.redis.multi().get(epoch.key).hget(this.mk(dataflowId), profileId).exec()) ?? []);
    if (res[0]?.[1] !== held) await epoch.mismatch(held);
    const v = res[1]?.[1];
    return typeof v === 'string' ? Number(v) : undefined;
  }

  /** Marks recorded during this event-loop turn, written together by one script call. */
  private pending: Array<{ dataflowId: string; profileId: string; version: number }> = [];
  private written: Promise<void> | undefined;

  /**
   * Records deliveries. The calls of one event-loop turn (one per settled message) are
   * written together by one script call, which every caller's promise waits for: one round
   * trip per turn instead of one per message.
   */
  record(marks: ReadonlyArray<{ dataflowId: string; profileId: string; version: number }>): Promise<void> {
    if (marks.length === 0) return Promise.resolve();
    for (const m of marks) this.pending.push(m);
    this.written ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      const batch = this.pending;
      this.pending = [];
      this.written = undefined;
      return this.write(batch);
    });
    return this.written;
  }

  private async write(marks: ReadonlyArray<{ dataflowId: string; profileId: string; version: number }>): Promise<void> {
    const held = this.o.epoch ? await this.o.epoch.current() : '';
    const keys = [this.o.epoch?.key ?? `${this.o.prefix}epoch`, ...marks.map((m) => this.mk(m.dataflowId))];
    const args = [held, ...marks.flatMap((m) => [m.profileId, String(m.version)])];
    const res = await call('marks', () => this.o.redis.eval(RECORD, keys.length, ...keys, ...args));
    if (res === -2 && this.o.epoch) await this.o.epoch.mismatch(held);
  }

  async close(): Promise<void> {
    if (this.o.ownsClient) this.o.redis.disconnect();
  }
}
