/**
 * The admin JSON API of a running worker (`/api/…`), built from what the worker opened.
 */
import type { AppConfig } from '../config/load.js';
import type { Logger } from '../observability/logger.js';
import { figuresReport, runStartOf, type FiguresReport, type FiguresStore } from '../observability/figures.js';
import { lagTotals, type LagTotals, type PartitionLag, type SourceLagMonitor } from '../observability/source-lag.js';
import type { FailedRequestStore } from '../sinks/types.js';
import type { DeliveredMarks } from '../stores/retry-queue.js';
import type { AdminApi } from './server.js';
import { consoleApi, replayInWorker } from './console-api.js';

/** Active alerts as the API shows them (`alerts.ts` provides them). */
export interface ActiveAlerts {
  active(): Promise<Array<{ dataflowId?: string }>>;
}

/** The figures report of a config from its store (shared by `status` and `/api/dataflows`). */
export async function readFiguresReport(config: Pick<AppConfig, 'dataflows'>, figures: FiguresStore, alerts?: ActiveAlerts, now = Date.now()): Promise<FiguresReport> {
  const ids = config.dataflows.map((d) => d.id);
  const runStart = runStartOf(now);
  const [stored, active] = await Promise.all([figures.read(ids, runStart), alerts ? alerts.active() : Promise.resolve([])]);
  return figuresReport(stored, { dataflowIds: ids, runStart, now, alerts: active });
}

/** What `/api/partitions` reads of a running worker (its handle fits). */
export interface PartitionsSource {
  /** The source lag, when measured. */
  lag?: SourceLagMonitor;
  /** Pool mode: the coordinator (`status()` reads the pool from Redis). */
  pool?: {
    status(): Promise<{
      pool: string;
      workers: Array<{ id: string; live: boolean; lastSeenMs?: number; partitions: number[] }>;
      partitions: Array<{ partition: number; owner?: string; epoch?: number; desiredOwner?: string }>;
    }>;
  };
}

/** A partition of `/api/partitions`: its lease and its lag (null: unknown or none). */
export interface PartitionReport {
  partition: number;
  /** held: its lease owner consumes it; moving: the owner drains it for another live worker (`movingTo`); free: no lease. */
  state: 'held' | 'moving' | 'free';
  owner: string | null;
  epoch: number | null;
  movingTo: string | null;
  consumer: string | null;
  pending: number | null;
  ackPending: number | null;
  oldestWaitingMs: number | null;
}

/** `/api/partitions`: a pool's partitions, or `mode: single` with the source's lag. */
export type PartitionsReport =
  | {
      mode: 'pool';
      pool: string;
      source: string;
      partitionCount: number;
      /** When the lag was measured (ISO), null when it could not be. */
      measuredAt: string | null;
      workers: Array<{ id: string; live: boolean; lastSeenMs: number | null; partitions: number[] }>;
      partitions: PartitionReport[];
    }
  | { mode: 'single'; source: string; measuredAt: string | null; lag: LagTotals | null; partitions: [] };

/** Builds `/api/partitions` from the pool's leases (Redis) and the source lag (the source). */
export async function partitionsReport(config: Pick<AppConfig, 'source' | 'store'>, w: PartitionsSource | undefined): Promise<PartitionsReport> {
  const source = config.source.kind;
  const isPool = source === 'jetstream' && config.store.kind === 'redis';
  if (isPool && !w?.pool) throw new Error('the worker is still starting');
  const lag = await w?.lag?.measure();
  const measuredAt = lag ? new Date(lag.at).toISOString() : null;
  if (!isPool || !w?.pool) return { mode: 'single', source, measuredAt, lag: lag ? lagTotals(lag) : null, partitions: [] };
  const status = await w.pool.status();
  const byPartition = new Map<number, PartitionLag>();
  for (const p of lag?.partitions ?? []) if (p.partition !== undefined) byPartition.set(p.partition, p);
  const partitions = status.partitions.map((p): PartitionReport => {
    const l = byPartition.get(p.partition);
    const moving = p.owner !== undefined && p.desiredOwner !== undefined && p.desiredOwner !== p.owner;
    return {
      partition: p.partition,
      state: p.owner === undefined ? 'free' : moving ? 'moving' : 'held',
      owner: p.owner ?? null,
      epoch: p.epoch ?? null,
      movingTo: moving ? p.desiredOwner! : null,
      consumer: l?.consumer ?? null,
      pending: l ? l.pending : null,
      ackPending: l ? l.ackPending : null,
      oldestWaitingMs: !l || !lag ? null : l.oldestAt !== undefined ? Math.max(0, lag.at - l.oldestAt) : l.pending + l.ackPending === 0 ? 0 : null,
    };
  });
  return {
    mode: 'pool',
    pool: status.pool,
    source,
    partitionCount: partitions.length,
    measuredAt,
    workers: status.workers.map((x) => ({ id: x.id, live: x.live, lastSeenMs: x.lastSeenMs ?? null, partitions: x.partitions })),
    partitions,
  };
}

/**
 * @param o.worker the failed-request store once the worker has started (undefined before)
 * @param o.flush flushes the in-process figures first, so an answer includes the last second
 */
export function workerApi(o: {
  config: AppConfig;
  logger: Logger;
  figures: FiguresStore;
  flush?: () => Promise<void>;
  alerts?: ActiveAlerts;
  failed: () => FailedRequestStore | undefined;
  /** The running worker's delivered-version marks (`WorkerHandle.marks`): a replay sends no superseded record. */
  marks?: () => DeliveredMarks | undefined;
  /** The running worker's source lag and pool coordinator (undefined before it started). */
  source?: () => PartitionsSource | undefined;
}): AdminApi {
  const failedStore = (): FailedRequestStore => {
    const s = o.failed();
    if (!s) throw new Error('the worker is still starting');
    return s;
  };
  return {
    console: consoleApi(o),
    async dataflows() {
      await o.flush?.();
      return readFiguresReport(o.config, o.figures, o.alerts);
    },
    ...(o.alerts ? { alerts: async () => ({ alerts: await o.alerts!.active() }) } : {}),
    partitions: () => partitionsReport(o.config, o.source?.()),
    async failed(q) {
      const all = await failedStore().list(q.dataflowId === undefined ? undefined : { dataflowId: q.dataflowId });
      return { total: all.length, items: all.slice(q.offset, q.offset + q.limit) };
    },
    async replay(q) {
      const store = failedStore();
      return replayInWorker(o, store, { store, dataflowId: q.dataflowId });
    },
  };
}
