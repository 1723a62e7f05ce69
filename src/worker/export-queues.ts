/**
 * The worker's view of its retry queues: the durable `RetryQueue`, an in-memory index of the
 * (dataflow, profile) pairs queued (so the live hot path asks no store whether a profile is
 * queued), and per dataflow whether its endpoint is failing (its later exports skip the inline
 * attempt and go straight to the queue, which probes the endpoint at its own pace).
 *
 * Pool mode (`scope`): the index covers the partitions this worker owns, loaded from the store
 * when a partition is acquired (`loadPartition`); until it is loaded, every export of the
 * partition counts as queued (it goes to the queue, which keeps the newest per profile and
 * drains in order): a profile is never sent inline while an older export of it may wait in
 * the store unseen.
 */
import { Subject, type Observable } from 'rxjs';
import { queueKey, type QueuedExport, type RetryQueue } from '../stores/retry-queue.js';
import type { ExportJob } from '../sinks/types.js';
import { DeliveryError, HttpDestinationError } from '../errors.js';

/** What the queue operators (`queueBehind`, `queueRetries`) need of the worker's queues. */
export interface ExportQueueing {
  /** Whether an export of (dataflow, profile) is queued: a later one must queue behind it. */
  isQueued(dataflowId: string, profileId: string): boolean;
  /** Whether the dataflow's endpoint is failing: new exports go straight to the queue. */
  backingOff(dataflowId: string): boolean;
  /** Queues `job` durably (resolves once stored) after `attempts` attempts; `error` the last one's. */
  enqueue(job: ExportJob, attempts: number, error?: unknown): Promise<void>;
  /** An attempt of the dataflow succeeded (its endpoint answers again). */
  succeeded(dataflowId: string): void;
}

/**
 * The retry queues of one worker.
 *
 * @example
 * const queues = await ExportQueues.open({ queue: new LocalRetryQueue({ path }) });
 * queues.isQueued('flow-1', 'p-1'); // false
 */
export class ExportQueues implements ExportQueueing {
  readonly queue: RetryQueue;
  /** key → idempotency key of the newest export queued for it. */
  private readonly index = new Map<string, string>();
  private readonly depth = new Map<string, number>();
  private readonly failing = new Set<string>();
  private readonly nudges = new Subject<string>();
  private readonly supersededBy = new Subject<{ dataflowId: string; idempotencyKey: string }>();
  private readonly now: () => number;
  private readonly delayAfter: (dataflowId: string, attempts: number, error: unknown) => number;
  /** Pool mode: the partition of a profile; `ready` the partitions whose index is loaded. */
  private readonly scope?: { partitionOf(profileId: string): number };
  private readonly ready = new Set<number>();
  /** Per partition, the load in progress (a newer load supersedes it). */
  private readonly loading = new Map<number, object>();

  private constructor(
    queue: RetryQueue,
    now: () => number,
    delayAfter: (dataflowId: string, attempts: number, error: unknown) => number,
    scope?: { partitionOf(profileId: string): number },
  ) {
    this.queue = queue;
    this.now = now;
    this.delayAfter = delayAfter;
    this.scope = scope;
  }

  /** Opens the worker's view: loads the index from what the queue holds (a restart drains it). */
  static async open(options: {
    queue: RetryQueue;
    now?: () => number;
    /** The wait before the retry that follows `attempts` failed attempts, the last with `error` (backoff, Retry-After). @default 0 */
    delayAfter?: (dataflowId: string, attempts: number, error: unknown) => number;
    /**
     * Pool mode: the partition of a profile. The index then starts empty and each partition's
     * part is loaded by `loadPartition` when the partition is acquired. @default one host: all loaded at open
     */
    scope?: { partitionOf(profileId: string): number };
  }): Promise<ExportQueues> {
    const q = new ExportQueues(options.queue, options.now ?? Date.now, options.delayAfter ?? (() => 0), options.scope);
    if (!options.scope) for (const e of await options.queue.list()) q.indexed(e.dataflowId, e.profileId, e.idempotencyKey);
    return q;
  }

  /**
   * Pool mode: (re)loads the index of partitions `ps` from the store (just acquired: what
   * another worker queued for them is there), in one read. Until it resolves, every export of
   * those partitions counts as queued. Rejects when the store does not answer (they then stay
   * not loaded: their exports keep going to the queue); call it again.
   */
  async loadPartitions(ps: readonly number[]): Promise<void> {
    const scope = this.scope;
    if (!scope || ps.length === 0) return;
    const token = {};
    const wanted = new Set(ps);
    for (const p of ps) {
      this.loading.set(p, token);
      this.ready.delete(p);
    }
    // What the index knew of them may be stale (another owner drained them meanwhile).
    for (const [k, key] of [...this.index]) {
      const [dataflowId, profileId] = k.split('\u0000') as [string, string];
      if (wanted.has(scope.partitionOf(profileId))) this.unindexedIf(dataflowId, k, key);
    }
    const entries = await this.queue.list();
    const current = ps.filter((p) => this.loading.get(p) === token);
    const mine = new Set(current);
    for (const e of entries) {
      // An export queued here during the load is newer than what the list read.
      if (mine.has(scope.partitionOf(e.profileId)) && !this.index.has(queueKey(e.dataflowId, e.profileId))) this.indexed(e.dataflowId, e.profileId, e.idempotencyKey);
    }
    for (const p of current) {
      this.loading.delete(p);
      this.ready.add(p);
    }
  }

  /**
   * Pool mode: partition `p` left this worker: its entries leave the index (the next owner
   * drains them), and its exports count as queued until it is loaded again.
   */
  dropPartition(p: number): void {
    this.loading.delete(p);
    this.ready.delete(p);
    const scope = this.scope;
    if (!scope) return;
    for (const [k, key] of [...this.index]) {
      const [dataflowId, profileId] = k.split('\u0000') as [string, string];
      if (scope.partitionOf(profileId) === p) this.unindexedIf(dataflowId, k, key);
    }
  }

  /**
   * An entry the drain found in the store that the index does not name (queued by `failed
   * replay`, or by this partition's previous owner): indexed, so later exports of its
   * profile queue behind it.
   */
  adopt(entry: Pick<QueuedExport, 'dataflowId' | 'profileId' | 'idempotencyKey'>): void {
    if (!this.index.has(queueKey(entry.dataflowId, entry.profileId))) this.indexed(entry.dataflowId, entry.profileId, entry.idempotencyKey);
  }

  /** Dataflow ids whose queue got a new export (the drain looks at once). */
  get nudged$(): Observable<string> {
    return this.nudges.asObservable();
  }

  /**
   * Queued exports that a newer one of their (dataflow, profile) replaced in the queue. One
   * the drain was attempting at that moment ends in the drain (its `settle` answers false):
   * the drain corrects the count when that attempt delivered it or stored it as failed.
   */
  get superseded$(): Observable<{ dataflowId: string; idempotencyKey: string }> {
    return this.supersededBy.asObservable();
  }

  /** Exports queued, by dataflow (the metrics gauge). */
  depths(): Iterable<[string, number]> {
    return this.depth.entries();
  }

  /** Exports queued in all. */
  get size(): number {
    return this.index.size;
  }

  isQueued(dataflowId: string, profileId: string): boolean {
    if (this.scope && !this.ready.has(this.scope.partitionOf(profileId))) return true;
    return this.index.size !== 0 && this.index.has(queueKey(dataflowId, profileId));
  }

  backingOff(dataflowId: string): boolean {
    return this.failing.size !== 0 && this.failing.has(dataflowId);
  }

  succeeded(dataflowId: string): void {
    if (this.failing.size !== 0) this.failing.delete(dataflowId);
  }

  /** An attempt of the dataflow failed with a retryable error: its endpoint is failing. */
  failed(dataflowId: string): void {
    this.failing.add(dataflowId);
  }

  async enqueue(job: ExportJob, attempts: number, error?: unknown): Promise<void> {
    if (job.version === undefined) throw new HttpDestinationError('ERR_INTERNAL', 'an export without a version cannot be queued');
    if (error !== undefined) this.failed(job.dataflowId);
    const entry: QueuedExport = {
      dataflowId: job.dataflowId,
      destinationId: job.destinationId,
      profileId: job.profileId,
      idempotencyKey: job.idempotencyKey,
      payload: job.payload,
      version: job.version,
      eventTime: job.eventTime,
      attempts,
      // A failed first attempt waits its backoff (and a Retry-After); one queued behind goes when due.
      dueAt: this.now() + (attempts > 0 && error !== undefined ? this.delayAfter(job.dataflowId, attempts, error) : 0),
      lastErrorCode: error instanceof HttpDestinationError ? error.code : undefined,
      lastStatus: error instanceof DeliveryError ? error.statusCode : undefined,
    };
    const k = queueKey(job.dataflowId, job.profileId);
    // Indexed before the store answers: a later export of the profile queues behind it at once.
    const previous = this.index.get(k);
    this.indexed(job.dataflowId, job.profileId, job.idempotencyKey);
    let kept: boolean;
    try {
      const r = await this.queue.enqueue(entry);
      kept = r.kept;
      // Stored under a key of its own (it carries the exits of the export it replaced): the
      // index names the stored entry, which the drain settles by that key.
      if (kept && r.key !== undefined && r.key !== job.idempotencyKey && this.index.get(k) === job.idempotencyKey) this.index.set(k, r.key);
      if (r.replaced !== undefined) this.supersededBy.next({ dataflowId: job.dataflowId, idempotencyKey: r.replaced });
    } catch (err) {
      if (this.index.get(k) === job.idempotencyKey) {
        if (previous === undefined) this.unindexed(job.dataflowId, k);
        else this.index.set(k, previous);
      }
      throw err;
    }
    // Dropped as older than the stored export: the index names what is stored again.
    if (!kept && this.index.get(k) === job.idempotencyKey) {
      if (previous !== undefined) this.index.set(k, previous);
      else this.unindexed(job.dataflowId, k);
    }
    this.nudges.next(job.dataflowId);
  }

  /** The drain removed `entry` from the queue: forget it unless a newer export of its profile was queued since. */
  settled(entry: Pick<QueuedExport, 'dataflowId' | 'profileId' | 'idempotencyKey'>): void {
    const k = queueKey(entry.dataflowId, entry.profileId);
    if (this.index.get(k) === entry.idempotencyKey) this.unindexed(entry.dataflowId, k);
  }

  private indexed(dataflowId: string, profileId: string, idempotencyKey: string): void {
    const k = queueKey(dataflowId, profileId);
    if (!this.index.has(k)) this.depth.set(dataflowId, (this.depth.get(dataflowId) ?? 0) + 1);
    this.index.set(k, idempotencyKey);
  }

  private unindexedIf(dataflowId: string, k: string, idempotencyKey: string): void {
    if (this.index.get(k) === idempotencyKey) this.unindexed(dataflowId, k);
  }

  private unindexed(dataflowId: string, k: string): void {
    if (!this.index.delete(k)) return;
    const n = (this.depth.get(dataflowId) ?? 1) - 1;
    this.depth.set(dataflowId, n);
    // An empty queue: the next export tries inline again.
    if (n === 0) this.failing.delete(dataflowId);
  }

  close(): Promise<void> {
    this.nudges.complete();
    this.supersededBy.complete();
    return this.queue.close();
  }
}
