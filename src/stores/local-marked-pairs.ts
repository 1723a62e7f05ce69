/**
 * Which (dataflow, profile) pairs of a local store need a delivered-version mark (SPEC §6,
 * "Nothing goes back in time"): those with an export in their dataflow's retry queue or a
 * failed request stored. A mark is only ever read for such a pair — by the retry drain before
 * it sends a queued export, by `failed replay` before it sends a failed request — so
 * `LocalDeliveredMarks` writes marks only for them, not one LMDB put per delivered export.
 *
 * One instance per local store environment in this process (shared by the retry queue, the
 * failed-request store and the marks, whichever asks first), filled once from what the store
 * holds (the queue's entries, the failed requests: what earlier runs left) and then kept up
 * to date by this process's own writes. Other processes never add a pair: only `run` queues
 * exports and stores failed requests (`failed replay` puts back records of pairs it already
 * has, and removes records); a pair whose records another process removed stays marked here
 * until the next start, which only costs a mark write.
 */
import type { RootDatabase } from 'lmdb';
import { queueKey } from './retry-queue.js';
import type { LocalEnv } from './local-env.js';

export class MarkedPairs {
  /** pair → idempotency key of the newest export this process queued for it (or '' when loaded). */
  private readonly queued = new Map<string, string>();
  /** Pairs with a failed request (never removed while this process runs: see the file comment). */
  private readonly failed = new Set<string>();

  /** Whether a delivered mark of (dataflow, profile) may be read later: it must be written. */
  has(dataflowId: string, profileId: string): boolean {
    if (this.queued.size === 0 && this.failed.size === 0) return false;
    const k = queueKey(dataflowId, profileId);
    return this.queued.has(k) || this.failed.has(k);
  }

  /** An export of the pair is being queued (marked from the call on, before it commits). */
  queuedOne(dataflowId: string, profileId: string, idempotencyKey: string): void {
    this.queued.set(queueKey(dataflowId, profileId), idempotencyKey);
  }

  /** The queue's entry `idempotencyKey` of the pair was removed: unmarked unless a newer one was queued since. */
  dequeued(dataflowId: string, profileId: string, idempotencyKey: string): void {
    const k = queueKey(dataflowId, profileId);
    if (this.queued.get(k) === idempotencyKey) this.queued.delete(k);
  }

  /** A failed request of the pair is being stored (marked from the call on). */
  failedOne(dataflowId: string, profileId: string): void {
    this.failed.add(queueKey(dataflowId, profileId));
  }

  /** Reads what the store holds now: the retry queue's entries and the failed requests' pairs. */
  load(env: LocalEnv): void {
    // Queue entries are `e\0<dataflow>\0<profile>` (local-retry-queue.ts): the key holds the pair.
    for (const key of env.db('retries').getKeys({ start: 'e\u0000', end: 'e\u0001' })) {
      const k = String(key).slice(2);
      if (!this.queued.has(k)) this.queued.set(k, '');
    }
    for (const { value } of env.db('failed').getRange()) {
      const r = (value as { record?: { dataflowId?: unknown; profileId?: unknown } } | undefined)?.record;
      if (typeof r?.dataflowId === 'string' && typeof r.profileId === 'string') this.failed.add(queueKey(r.dataflowId, r.profileId));
    }
  }
}

const byEnv = new WeakMap<RootDatabase<unknown, string>, MarkedPairs>();

/** The marked pairs of `env` in this process, read from the store on first use. */
export function markedPairsOf(env: LocalEnv): MarkedPairs {
  let pairs = byEnv.get(env.root);
  if (!pairs) {
    pairs = new MarkedPairs();
    pairs.load(env);
    byEnv.set(env.root, pairs);
  }
  return pairs;
}
