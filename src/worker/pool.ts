/**
 * The pool coordinator: membership, partition ownership and leases of a pool of identical
 * workers, kept in Redis. See `createPoolCoordinator` for the algorithm and the key layout.
 */
import { performance } from 'node:perf_hooks';
import { asyncScheduler, Subject, type Subscription } from 'rxjs';
import { ConfigError, StoreError } from '../errors.js';
import { assignPartitions } from '../domain/assignment.js';
import { scriptsOf } from './pool-scripts.js';
import { readPoolStatus } from '../cli/pool-status.js';
import { leaseValue, POOL_DEFAULTS, poolKeys, PoolConfigError, type OwnershipEvent, type PoolCoordinator, type PoolCoordinatorOptions, type PoolStatus } from './pool-types.js';

export { assignPartitions, rendezvousWeight } from '../domain/assignment.js';
export { readPoolStatus };
export * from './pool-types.js';

function storeError(op: string, err: unknown): StoreError {
  if (err instanceof StoreError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new StoreError(`pool coordinator: ${op} failed: ${reason}`, { cause: err });
}

const noop = (): void => {};

/** A lease this worker holds. */
interface Lease {
  partition: number;
  epoch: number;
  value: string;
  /** performance.now() after which the lease is no longer trusted locally. */
  validUntil: number;
  revoking: boolean;
  /** Set when it stopped being held: released by the worker, lost, or closed. */
  dropped?: 'released' | 'lost' | 'closed';
}

/**
 * Creates the coordinator of one worker of a pool: it keeps the worker in the pool's
 * membership and tells it, through `ownership$`, which partitions it owns.
 *
 * Algorithm, every `tickMs` (timers through `scheduler`; none left after `close()`):
 * 1. Leases whose last successful renewal was sent more than `leaseMs - tickMs` ago (Redis
 *    unreachable, or the process was paused) are 'lost' at once, before Redis expires them.
 * 2. Unless the previous tick is still waiting on Redis, in one round trip: every held lease is
 *    renewed (Lua compare-and-PEXPIRE on `<workerId>:<epoch>`; not ours any more → 'lost'),
 *    then the heartbeat: `ZADD workers <Redis TIME + leaseMs> <workerId>` — the score is an
 *    expiry from Redis's clock, never the local one, so a paused or skewed host cannot fake
 *    liveness — which returns the live workers (score > now). The heartbeat goes after the
 *    renewals, so a crashed worker leaves the live set no earlier than its leases expire.
 * 3. The desired owner of every partition is `assignPartitions(live workers)`, bounded-load
 *    rendezvous hashing (the same everywhere, so a join or a leave moves few partitions).
 * 4. Each partition desired here and not held: acquire (Lua: only if the lease key is absent,
 *    `INCR epoch:<p>`, `SET lease:<p> <workerId>:<epoch> PX leaseMs`) → 'acquired'.
 *    Each held partition desired elsewhere: 'revoke', once. The coordinator never releases it
 *    itself: it keeps renewing it until the worker, drained, calls `release(partition)`; then the
 *    desired owner acquires it on its next tick.
 * A crashed owner's leases expire after at most `leaseMs`, and so does its heartbeat; the
 * desired owners take its partitions within `leaseMs + tickMs`. A closing worker releases its
 * leases and leaves the membership, so the others take over on their next tick.
 *
 * Key layout (`poolKeys`), with `hd:` and pool `orders`:
 * - `hd:pool:orders:workers` — sorted set, member = worker id, score = heartbeat expiry (ms, Redis time);
 * - `hd:pool:orders:heartbeats` — hash, worker id → last heartbeat (ms, Redis time);
 * - `hd:pool:orders:partitions` — the partition count, written by the first worker;
 * - `hd:pool:orders:lease:<p>` — `<workerId>:<epoch>`, expiring after `leaseMs`;
 * - `hd:pool:orders:epoch:<p>` — the last epoch handed out (never reset, so epochs only grow).
 *
 * Fencing: a write that must come from the partition's owner checks, in the same script as the
 * write, that `GET <lease key>` equals `<workerId>:<epoch>` (`fenceArgs(partition, epoch)`).
 * A worker that lost its lease — even one that does not know it yet — can then write no more:
 * the key expired, or holds another worker's value, or a later epoch.
 *
 * Throws `ConfigError` at once for options out of range (no partitions, `tickMs >= leaseMs / 2`…).
 *
 * @example
 * const pool = createPoolCoordinator({ redis, pool: 'orders', workerId: `${hostname()}-${pid}`, partitions: 16 });
 * pool.ownership$.subscribe((e) => {
 *   if (e.type === 'acquired') startConsuming(e.partition, e.epoch);
 *   if (e.type === 'revoke') void drain(e.partition).then(() => pool.release(e.partition));
 *   if (e.type === 'lost') stopAtOnce(e.partition);
 * });
 * await pool.start(); // PoolConfigError (ERR_POOL_PARTITIONS) when the count differs
 * // in the store's script: if redis.call('GET', KEYS[n]) ~= ARGV[m] then return -1 end
 * const { key, value } = pool.fenceArgs(partition, epoch);
 * // …
 * await pool.close();
 */
export function createPoolCoordinator(options: PoolCoordinatorOptions): PoolCoordinator {
  const { redis, workerId, partitions } = options;
  const pool = options.pool ?? POOL_DEFAULTS.pool;
  const keyPrefix = options.keyPrefix ?? POOL_DEFAULTS.keyPrefix;
  const leaseMs = options.leaseMs ?? POOL_DEFAULTS.leaseMs;
  const tickMs = options.tickMs ?? Math.max(1, Math.floor(leaseMs / POOL_DEFAULTS.ticksPerLease));
  const scheduler = options.scheduler ?? asyncScheduler;
  const onError = options.onError ?? noop;
  const retentionMs = Math.max(POOL_DEFAULTS.memberRetentionMs, 10 * leaseMs);

  if (!workerId) throw new ConfigError('workerId', 'a worker id is required');
  if (!Number.isSafeInteger(partitions) || partitions < 1) throw new ConfigError('partitions', `must be a positive integer, got ${partitions}`);
  if (!Number.isSafeInteger(leaseMs) || leaseMs < 10) throw new ConfigError('leaseMs', `must be an integer of at least 10, got ${leaseMs}`);
  if (!(tickMs > 0) || tickMs * 2 >= leaseMs) throw new ConfigError('tickMs', `must be positive and less than leaseMs / 2 (${leaseMs / 2}), got ${tickMs}`);

  const keys = poolKeys({ keyPrefix, pool });
  const scripts = scriptsOf(redis);
  const events = new Subject<OwnershipEvent>();
  const leases = new Map<number, Lease>();
  const acquiring = new Set<number>();
  let state: 'new' | 'starting' | 'running' | 'closed' = 'new';
  let timer: Subscription | undefined;
  let inFlight: Promise<void> | undefined;
  let mismatchReported = false;
  /** The assignment of the last live set seen (recomputed only when the live set changes). */
  let lastLive: { key: string; desired: Array<string | undefined> } = { key: '', desired: [] };

  redis.on('error', onError);

  const report = (op: string, err: unknown): void => {
    try {
      onError(storeError(op, err));
    } catch {
      // a throwing error callback must not stop the coordinator
    }
  };

  const emit = (list: OwnershipEvent[]): void => {
    for (const e of list) if (!events.closed) events.next(e);
  };

  /** Drops a lease locally; returns its 'lost' event. */
  const drop = (lease: Lease, why: 'lost' | 'closed'): OwnershipEvent => {
    lease.dropped = why;
    if (leases.get(lease.partition) === lease) leases.delete(lease.partition);
    return { type: 'lost', partition: lease.partition, epoch: lease.epoch };
  };

  /** Best effort: deletes a lease Redis may still hold for us although we dropped it. */
  const forget = (partition: number, value: string): void => {
    scripts.hdPoolRelease(keys.lease(partition), value).catch((err: unknown) => report('release', err));
  };

  const expireLocally = (): void => {
    const now = performance.now();
    const lost: OwnershipEvent[] = [];
    for (const lease of [...leases.values()]) if (now > lease.validUntil) lost.push(drop(lease, 'lost'));
    emit(lost);
  };

  const tick = async (): Promise<void> => {
    const sentAt = performance.now();
    const held = [...leases.values()];
    const renewals = held.map((lease) => scripts.hdPoolRenew(keys.lease(lease.partition), lease.value, leaseMs));
    const heartbeat = scripts.hdPoolHeartbeat(keys.workers, keys.heartbeats, keys.partitions, workerId, leaseMs, retentionMs, partitions);
    const [renewed, beat] = await Promise.all([Promise.allSettled(renewals), heartbeat.then((r) => ({ ok: true as const, r }), (err: unknown) => ({ ok: false as const, err }))]);

    const out: OwnershipEvent[] = [];
    let renewError: unknown;
    renewed.forEach((result, i) => {
      const lease = held[i];
      if (result.status === 'rejected') {
        renewError ??= result.reason;
        return;
      }
      if (lease.dropped) {
        // Renewed after we dropped it (lost locally, or closed): do not leave it held in Redis.
        if (result.value === 1 && lease.dropped !== 'released') forget(lease.partition, lease.value);
        return;
      }
      if (result.value === 1) lease.validUntil = Math.max(lease.validUntil, sentAt + leaseMs - tickMs);
      else out.push(drop(lease, 'lost'));
    });
    if (renewError !== undefined) report('renew', renewError);
    if (!beat.ok) {
      report('heartbeat', beat.err);
      emit(out);
      return;
    }
    if (state === 'closed') {
      emit(out);
      return;
    }
    const [, recordedRaw, live] = beat.r;
    const recorded = Number(recordedRaw);
    if (recorded !== partitions) {
      // Someone reset the pool to another count under us: keep what is held, take nothing new.
      if (!mismatchReported) {
        mismatchReported = true;
        try {
          onError(new PoolConfigError(pool, recorded, partitions));
        } catch {
          // ignore
        }
      }
      emit(out);
      return;
    }
    mismatchReported = false;
    const liveKey = [...live].sort().join('\n');
    if (liveKey !== lastLive.key) lastLive = { key: liveKey, desired: assignPartitions(live, partitions) };
    const { desired } = lastLive;
    const wanted: number[] = [];
    for (let p = 0; p < partitions; p++) {
      const lease = leases.get(p);
      if (desired[p] === workerId) {
        if (!lease && !acquiring.has(p)) wanted.push(p);
      } else if (lease && !lease.revoking) {
        lease.revoking = true;
        out.push({ type: 'revoke', partition: p, epoch: lease.epoch });
      }
    }
    emit(out);
    if (wanted.length === 0) return;
    for (const p of wanted) acquiring.add(p);
    const acquireAt = performance.now();
    const results = await Promise.allSettled(wanted.map((p) => scripts.hdPoolAcquire(keys.lease(p), keys.epoch(p), workerId, leaseMs)));
    const acquired: OwnershipEvent[] = [];
    let acquireError: unknown;
    results.forEach((result, i) => {
      const p = wanted[i];
      acquiring.delete(p);
      if (result.status === 'rejected') {
        acquireError ??= result.reason;
        return;
      }
      const epoch = Number(result.value);
      if (epoch <= 0) return;
      const value = leaseValue(workerId, epoch);
      if (state === 'closed') {
        forget(p, value);
        return;
      }
      leases.set(p, { partition: p, epoch, value, validUntil: acquireAt + leaseMs - tickMs, revoking: false });
      acquired.push({ type: 'acquired', partition: p, epoch });
    });
    if (acquireError !== undefined) report('acquire', acquireError);
    emit(acquired);
  };

  const runTick = (): void => {
    if (inFlight || state !== 'running') return;
    inFlight = tick()
      .catch((err: unknown) => report('tick', err))
      .finally(() => {
        inFlight = undefined;
      });
  };

  const fire = (): void => {
    timer = undefined;
    if (state !== 'running') return;
    expireLocally();
    runTick();
    timer = scheduler.schedule(fire, tickMs);
  };

  return {
    workerId,
    partitions,
    ownership$: events.asObservable(),

    async start(): Promise<void> {
      if (state !== 'new') throw new StoreError(`pool coordinator: start() called more than once, or after close() (worker ${workerId})`);
      state = 'starting';
      try {
        const recorded = Number(await scripts.hdPoolRecordPartitions(keys.partitions, partitions));
        if (recorded !== partitions) throw new PoolConfigError(pool, recorded, partitions);
        // Join at once; partitions are taken from the first tick on, so workers starting
        // together see each other before any of them acquires.
        await scripts.hdPoolHeartbeat(keys.workers, keys.heartbeats, keys.partitions, workerId, leaseMs, retentionMs, partitions);
      } catch (err) {
        state = 'new';
        if (err instanceof PoolConfigError) throw err;
        throw storeError('start', err);
      }
      if ((state as string) === 'closed') {
        // close() ran meanwhile and may have left before this heartbeat landed: leave again.
        await scripts.hdPoolLeave(keys.workers, keys.heartbeats, workerId).catch((err: unknown) => report('close', err));
        return;
      }
      state = 'running';
      timer = scheduler.schedule(fire, tickMs);
    },

    async release(partition: number): Promise<void> {
      const lease = leases.get(partition);
      if (!lease) return;
      lease.dropped = 'released';
      leases.delete(partition);
      try {
        await scripts.hdPoolRelease(keys.lease(partition), lease.value);
      } catch (err) {
        throw storeError('release', err);
      }
    },

    status(): Promise<PoolStatus> {
      return readPoolStatus({ redis, keyPrefix, pool, partitions });
    },

    async raiseEpoch(partition: number, atLeast: number): Promise<void> {
      try {
        await scripts.hdPoolRaiseEpoch(keys.epoch(partition), atLeast);
      } catch (err) {
        throw storeError('raise epoch', err);
      }
    },

    leaseKey: (partition) => keys.lease(partition),

    currentEpoch: (partition) => leases.get(partition)?.epoch,

    fenceArgs: (partition, epoch) => ({ key: keys.lease(partition), value: leaseValue(workerId, epoch) }),

    holds: (partition, epoch) => {
      const lease = leases.get(partition);
      return lease !== undefined && lease.epoch === epoch && performance.now() <= lease.validUntil;
    },

    held: () =>
      [...leases.values()]
        .map(({ partition, epoch, revoking }) => ({ partition, epoch, revoking }))
        .sort((a, b) => a.partition - b.partition),

    async close(): Promise<void> {
      if (state === 'closed') return;
      const wasJoined = state !== 'new';
      state = 'closed';
      timer?.unsubscribe();
      timer = undefined;
      // A tick waiting on Redis finishes on its own; acquisitions it brings back are released.
      if (inFlight) {
        let giveUp: NodeJS.Timeout | undefined;
        await Promise.race([inFlight, new Promise<void>((resolve) => (giveUp = setTimeout(resolve, leaseMs)))]);
        clearTimeout(giveUp);
      }
      const held = [...leases.values()];
      const lost = held.map((lease) => drop(lease, 'closed'));
      const results = await Promise.allSettled([
        ...held.map((lease) => scripts.hdPoolRelease(keys.lease(lease.partition), lease.value)),
        ...(wasJoined ? [scripts.hdPoolLeave(keys.workers, keys.heartbeats, workerId)] : []),
      ]);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) report('close', failed.reason);
      emit(lost);
      events.complete();
      redis.off('error', onError);
    },
  };
}
