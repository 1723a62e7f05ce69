/**
 * The admin JSON API of a running worker (`/api/…`), built from what the worker opened.
 */
import type { AppConfig } from '../config/load.js';
import type { Logger } from '../observability/logger.js';
import { figuresReport, runStartOf, type FiguresReport, type FiguresStore } from '../observability/figures.js';
import { replayFailedRequests } from '../sinks/replay.js';
import type { FailedRequestStore } from '../sinks/types.js';
import { openSinks } from '../worker/runtime.js';
import type { AdminApi } from './server.js';
import { consoleApi } from './console-api.js';

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
    async failed(q) {
      const all = await failedStore().list(q.dataflowId === undefined ? undefined : { dataflowId: q.dataflowId });
      return { total: all.length, items: all.slice(q.offset, q.offset + q.limit) };
    },
    async replay(q) {
      const store = failedStore();
      const sinks = openSinks(o.config, { failed: store, logger: o.logger, storeFailures: false });
      try {
        return await replayFailedRequests({ store, sinkFor: (id) => sinks.get(id), dataflowId: q.dataflowId });
      } finally {
        await sinks.close();
      }
    },
  };
}
