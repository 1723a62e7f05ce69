/**
 * How a worker of a pool joins it (pool-source.ts): connect to NATS, then take part in the
 * leases, retrying each until it answers.
 */
import type { NatsHandle } from '../streams/nats.js';
import { PoolConfigError, type PoolCoordinator } from './pool.js';

export interface JoinPoolOptions {
  /** The source was closed: stop trying. */
  closed(): boolean;
  connect(): Promise<NatsHandle>;
  /** The connection the partition consumers share (not called when closed meanwhile: it is closed). */
  connected(handle: NatsHandle): void;
  coordinator: Pick<PoolCoordinator, 'start'>;
  /** A failed attempt to connect to NATS (it is retried). */
  warnNats(err: unknown): void;
  /** A failed attempt to join the leases in Redis (it is retried). */
  warnRedis(err: unknown): void;
}

/**
 * Connects, then starts the coordinator. Neither NATS nor Redis answering yet is a reason to
 * exit: each is retried with a doubling pause (250 ms … 5 s), and leases are taken only once
 * the partitions can be consumed. A partition count that differs from the pool's is
 * (`PoolConfigError`: it needs an operator).
 */
export async function joinPool(o: JoinPoolOptions): Promise<void> {
  for (let delay = 250; !o.closed(); delay = Math.min(delay * 2, 5_000)) {
    try {
      const handle = await o.connect();
      if (o.closed()) {
        await handle.close();
        return;
      }
      o.connected(handle);
      break;
    } catch (err) {
      o.warnNats(err);
      await sleep(delay);
    }
  }
  for (let delay = 250; !o.closed(); delay = Math.min(delay * 2, 5_000)) {
    try {
      await o.coordinator.start();
      return;
    } catch (err) {
      if (err instanceof PoolConfigError) throw err;
      o.warnRedis(err);
      await sleep(delay);
    }
  }
}

/** A gate that opens at most once every `ms` (a warning repeated by every retry of an outage). */
export function onceEvery(ms: number): () => boolean {
  let last = -Infinity;
  return () => {
    const now = Date.now();
    if (now - last < ms) return false;
    last = now;
    return true;
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
