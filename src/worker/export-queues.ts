/**
 * The worker's view of its retry queues: the durable `RetryQueue`, an in-memory index of the
 * (dataflow, profile) pairs queued (so the live hot path asks no store whether a profile is
 * queued), and per dataflow whether its endpoint is failing (its later exports skip the inline
 * attempt and go straight to the queue, which probes the endpoint at its own pace).
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

  private constructor(queue: RetryQueue, now: () => number, delayAfter: (dataflowId: string, attempts: number, error: unknown) => number) {
    this.queue = queue;
    this.now = now;
    this.delayAfter = delayAfter;
  }

  /** Opens the worker's view: loads the index from what the queue holds (a restart drains it). */
  static async open(options: {
    queue: RetryQueue;
    now?: () => number;
    /** The wait before the retry that follows `attempts` failed attempts, the last with `error` (backoff, Retry-After). @default 0 */
    delayAfter?: (dataflowId: string, attempts: number, error: unknown) => number;
  }): Promise<ExportQueues> {
    const q = new ExportQueues(options.queue, options.now ?? Date.now, options.delayAfter ?? (() => 0));
    for (const e of await options.queue.list()) q.indexed(e.dataflowId, e.profileId, e.idempotencyKey);
    return q;
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
