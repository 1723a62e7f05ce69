/**
 * The pool's state read straight from Redis (leases, live members, profiles), and watches over
 * it: single ownership per (partition, epoch), full and settled ownership.
 */
import { Redis } from 'ioredis';
import { assignPartitions, parseLeaseValue, poolKeys } from '../../../src/worker/pool.js';
import { sleep } from '../backbone.js';
import { POOL, type PoolSetup } from './config.js';
import { type PoolWorker, poolLogs, workerOf } from './workers.js';

export interface LeaseSample {
  /** Redis time, ms. */
  now: number;
  /** Local time, ms. */
  at: number;
  /** Per partition: the lease's owner and epoch, or undefined when nobody holds it. */
  leases: Array<{ owner: string; epoch: number } | undefined>;
  /** Workers whose heartbeat has not expired. */
  live: string[];
}

/** Reads the pool's state directly from Redis (leases, live members) in one round trip. */
export class PoolProbe {
  private readonly redis: Redis;
  constructor(
    url: string,
    private readonly setup: PoolSetup,
  ) {
    this.redis = new Redis(url, { maxRetriesPerRequest: 1 });
    this.redis.on('error', () => {});
  }

  async sample(): Promise<LeaseSample> {
    const keys = poolKeys({ keyPrefix: this.setup.prefix, pool: this.setup.durable });
    const leaseKeys = Array.from({ length: POOL.partitions }, (_, p) => keys.lease(p));
    const r = (await this.redis.multi().time().mget(...leaseKeys).zrange(keys.workers, 0, -1, 'WITHSCORES').exec()) ?? [];
    for (const [err] of r) if (err) throw err;
    const [sec, usec] = r[0][1] as [string, string];
    const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    const values = r[1][1] as Array<string | null>;
    const z = r[2][1] as string[];
    const live: string[] = [];
    for (let i = 0; i < z.length; i += 2) if (Number(z[i + 1]) > now) live.push(z[i]);
    return { now, at: Date.now(), leases: values.map((v) => (v === null ? undefined : parseLeaseValue(v))), live };
  }

  /** Profile hash fields `s` (parsed), `v`, `w` for each id. */
  async profiles(ids: readonly string[]): Promise<Map<string, { s: unknown; v: number | null; w: number | null }>> {
    const pipe = this.redis.pipeline();
    for (const id of ids) pipe.hmget(`${this.setup.prefix}p:${id}`, 's', 'v', 'w');
    const replies = (await pipe.exec()) ?? [];
    const out = new Map<string, { s: unknown; v: number | null; w: number | null }>();
    ids.forEach((id, i) => {
      const [err, row] = replies[i] ?? [null, null];
      if (err) throw err;
      const [s, v, w] = row as Array<string | null>;
      out.set(id, { s: s === null ? null : (JSON.parse(s) as unknown), v: v === null ? null : Number(v), w: w === null ? null : Number(w) });
    });
    return out;
  }

  /** Polls until `pred(sample)` holds; returns that sample (throws with the last one after `timeoutMs`). */
  async waitFor(
    pred: (s: LeaseSample) => boolean,
    timeoutMs: number,
    what: string,
    options: { everyMs?: number; workers?: readonly PoolWorker[] } = {},
  ): Promise<LeaseSample> {
    const deadline = Date.now() + timeoutMs;
    let last: LeaseSample | undefined;
    for (;;) {
      last = await this.sample();
      if (pred(last)) return last;
      if (Date.now() > deadline) {
        const owners = last.leases.map((l, p) => `${p}:${(options.workers && workerOf(options.workers, l?.owner)?.name) ?? l?.owner ?? '-'}`).join(' ');
        const live = last.live.map((id) => (options.workers && workerOf(options.workers, id)?.name) ?? id).join(',');
        throw new Error(`pool: timed out after ${timeoutMs} ms waiting for ${what}; leases ${owners}; live ${live}${options.workers ? poolLogs(options.workers) : ''}`);
      }
      await sleep(options.everyMs ?? 25);
    }
  }

  close(): void {
    this.redis.disconnect();
  }
}

/** Partitions whose lease `worker` holds in a sample. */
export function ownedBy(sample: LeaseSample, worker: PoolWorker): number[] {
  return sample.leases.flatMap((l, p) => (l && worker.owns(l.owner) ? [p] : []));
}

/**
 * Every partition leased, each to one of `workers` (and to a live member). Returns why not, or ''.
 */
export function fullyOwnedBy(sample: LeaseSample, workers: readonly PoolWorker[]): string {
  for (let p = 0; p < sample.leases.length; p++) {
    const l = sample.leases[p];
    if (!l) return `partition ${p} has no lease`;
    if (!workerOf(workers, l.owner)) return `partition ${p} is held by ${l.owner}, not one of ${workers.map((w) => w.name).join(', ')}`;
    if (!sample.live.includes(l.owner)) return `partition ${p} is held by ${l.owner}, which is not live`;
  }
  return '';
}

/**
 * The pool has settled: the live members are exactly `workers` and every partition's lease is
 * held by the owner the assignment over them gives it (no move in progress).
 */
export function settledOn(sample: LeaseSample, workers: readonly PoolWorker[]): boolean {
  if (sample.live.length !== workers.length || !workers.every((w) => sample.live.some((id) => w.owns(id)))) return false;
  const desired = assignPartitions(sample.live, POOL.partitions);
  return sample.leases.every((l, p) => l !== undefined && l.owner === desired[p]);
}

/**
 * Watches lease samples for the invariants of single ownership: per partition, an epoch is
 * only ever held by one owner and epochs never go back.
 */
export class LeaseWatch {
  /** `${partition}:${epoch}` → owner */
  readonly owners = new Map<string, string>();
  readonly lastEpoch = new Map<number, number>();
  readonly problems: string[] = [];
  samples = 0;

  add(s: LeaseSample): void {
    this.samples++;
    s.leases.forEach((l, p) => {
      if (!l) return;
      const k = `${p}:${l.epoch}`;
      const prev = this.owners.get(k);
      if (prev !== undefined && prev !== l.owner) this.problems.push(`partition ${p} epoch ${l.epoch}: owned by ${prev} and by ${l.owner}`);
      this.owners.set(k, l.owner);
      const last = this.lastEpoch.get(p) ?? 0;
      if (l.epoch < last) this.problems.push(`partition ${p}: epoch went back from ${last} to ${l.epoch}`);
      this.lastEpoch.set(p, Math.max(last, l.epoch));
    });
  }
}

/** Samples leases every `everyMs` until stopped; returns the watch. */
export function watchLeases(probe: PoolProbe, everyMs = 25): { watch: LeaseWatch; stop(): Promise<void> } {
  const watch = new LeaseWatch();
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        watch.add(await probe.sample());
      } catch (err) {
        watch.problems.push(`sample failed: ${(err as Error).message}`);
      }
      await sleep(everyMs);
    }
  })();
  return {
    watch,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}
