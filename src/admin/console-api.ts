/**
 * The web console (SPEC §13) and the API routes only it needs, served by the admin server
 * beside `/api/dataflows`, `/api/failed`, `/api/alerts`, `/api/partitions`:
 *
 * - `GET /` and `GET /console/<file>`: the page, plain ES modules and CSS from
 *   `src/admin/console/` (no build step; `npm run build` also copies them to
 *   `dist/admin/console/` for installs that ship `dist/` alone).
 * - `GET /api/console`: the dataflows' destinations and rate limits, whether actions are enabled.
 * - `GET /api/series?dataflow=&since=`: per-second samples of this worker (`series.ts`).
 * - `GET /api/failed/search?dataflow=&status=&since=&until=&profile=&offset=&limit=`: the
 *   failed requests, filtered and paged (`status`: a code like `400`, a class like `5xx`, or
 *   `error` for no HTTP answer; times ISO).
 * - `GET /api/explain?profile=&dataflow=`: `explain` of one profile (as `explain --json`).
 * - `POST /api/failed/replay-selected?id=…&id=…` (action: bearer token): replays those records.
 *
 * Every JSON answer goes through the config's redactor, as the other routes do.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AppConfig } from '../config/load.js';
import { codeOf, HttpDestinationError, UsageError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { replayFailedRequests, type ReplayOptions, type ReplaySummary } from '../sinks/replay.js';
import type { FailedRequest, FailedRequestStore } from '../sinks/types.js';
import type { SnapshotStore } from '../stores/types.js';
import { openSinks, openSnapshotStore } from '../worker/runtime.js';
import { marksForReplay } from '../worker/retry-queue-stores.js';
import type { DeliveredMarks } from '../stores/retry-queue.js';
import { SeriesRing } from './series.js';

/** `/api/console`: what the page shows beside the figures. */
export interface ConsoleSettings {
  dataflows: Array<{ id: string; destinationId: string; rateLimit: number }>;
  source: string;
  store: string;
  /** Whether `admin.token` is set (actions need it). */
  actions: boolean;
}

/** The filters of `/api/failed/search`. */
export interface FailedQuery {
  dataflowId?: string;
  /** `400`, `4xx`, `error` (no HTTP answer) or an error code like `ERR_HTTP_TIMEOUT`. */
  status?: string;
  /** ms since the epoch, on `failedAt`. */
  since?: number;
  until?: number;
  profileId?: string;
  offset: number;
  limit: number;
}

/** What the console reads and does in a worker (built from its config by `consoleApi`). */
export interface ConsoleApi {
  readonly dataflowIds: readonly string[];
  settings(): Promise<Omit<ConsoleSettings, 'actions'>>;
  failed(q: FailedQuery): Promise<{ total: number; items: FailedRequest[] }>;
  /** `explain --json` of one profile; rejects with `ERR_PROFILE_NOT_FOUND` or `ERR_USAGE`. */
  explain(q: { profileId: string; dataflowId?: string }): Promise<unknown>;
  /** Replays the records with these ids (the others are left alone). */
  replaySelected(q: { ids: readonly string[] }): Promise<ReplaySummary>;
  close(): Promise<void>;
}

export const CONSOLE_DEFAULTS = {
  pageSize: 50,
  maxPageSize: 500,
  /** Most ids one `replay-selected` takes. */
  maxSelected: 500,
} as const;

/** Whether a stored failed request matches a `status` filter. */
export function statusMatches(r: Pick<FailedRequest, 'lastStatus' | 'lastErrorCode'>, status: string): boolean {
  const s = status.trim();
  if (s === '') return true;
  if (/^\d{3}$/.test(s)) return r.lastStatus === Number(s);
  if (/^[1-5]xx$/i.test(s)) return r.lastStatus !== undefined && Math.floor(r.lastStatus / 100) === Number(s[0]);
  if (s.toLowerCase() === 'error') return r.lastStatus === undefined;
  return r.lastErrorCode === s;
}

/** Filters and pages failed requests (newest first). */
export function searchFailed(all: readonly FailedRequest[], q: FailedQuery): { total: number; items: FailedRequest[] } {
  const hits = all.filter((r) => {
    if (q.dataflowId !== undefined && r.dataflowId !== q.dataflowId) return false;
    if (q.profileId !== undefined && r.profileId !== q.profileId) return false;
    if (q.status !== undefined && !statusMatches(r, q.status)) return false;
    const at = Date.parse(r.failedAt);
    if (q.since !== undefined && !(at >= q.since)) return false;
    if (q.until !== undefined && !(at < q.until)) return false;
    return true;
  });
  hits.sort((a, b) => (a.failedAt < b.failedAt ? 1 : a.failedAt > b.failedAt ? -1 : a.id < b.id ? -1 : 1));
  return { total: hits.length, items: hits.slice(q.offset, q.offset + q.limit) };
}

/**
 * The console's API of a running worker.
 *
 * @param o.failed the failed-request store once the worker has started (undefined before)
 */
/**
 * A replay run by the worker's admin server (the API's and the console's action): sinks of its
 * own on the worker's failed store (final failures are not stored again), and the worker's
 * delivered marks (`marksForReplay`), so a superseded record is not sent (SPEC §6).
 */
export async function replayInWorker(
  o: { config: AppConfig; logger: Logger; marks?: () => DeliveredMarks | undefined },
  failed: FailedRequestStore,
  options: Omit<ReplayOptions, 'sinkFor' | 'marks'>,
): Promise<ReplaySummary> {
  // The marks first: opening them may fail, and then no sinks (transports, a thread) are left open.
  const m = await marksForReplay(o.config, o.marks?.());
  try {
    const sinks = openSinks(o.config, { failed, logger: o.logger, storeFailures: false });
    try {
      return await replayFailedRequests({ ...options, sinkFor: (id) => sinks.get(id), marks: m.marks });
    } finally {
      await sinks.close();
    }
  } finally {
    await m.release();
  }
}

export function consoleApi(o: {
  config: AppConfig;
  logger: Logger;
  failed: () => FailedRequestStore | undefined;
  /** The running worker's delivered-version marks (`WorkerHandle.marks`): a replay sends no superseded record. */
  marks?: () => DeliveredMarks | undefined;
}): ConsoleApi {
  const { config } = o;
  const failedStore = (): FailedRequestStore => {
    const s = o.failed();
    if (!s) throw new Error('the worker is still starting');
    return s;
  };
  let snapshots: Promise<SnapshotStore> | undefined;
  return {
    dataflowIds: config.dataflows.map((d) => d.id),
    async settings() {
      return {
        dataflows: config.dataflows.map((d) => ({ id: d.id, destinationId: d.destinationId, rateLimit: d.rateLimit })),
        source: config.source.kind,
        store: config.store.kind,
      };
    },
    async failed(q) {
      return searchFailed(await failedStore().list(q.dataflowId === undefined ? undefined : { dataflowId: q.dataflowId }), q);
    },
    async explain(q) {
      const flows = q.dataflowId === undefined ? config.dataflows : config.dataflows.filter((f) => f.id === q.dataflowId);
      if (flows.length === 0) throw new UsageError(`dataflow: unknown dataflow "${q.dataflowId}"`);
      if (config.store.kind === 'memory') throw new UsageError('explain is not available with store.kind: memory (profiles live only inside the pipeline)');
      snapshots ??= openSnapshotStore(config, o.logger);
      const snapshot = await (await snapshots).get(q.profileId);
      const { buildReport, ProfileNotFoundError } = await import('../cli/explain.js');
      if (!snapshot) throw new ProfileNotFoundError(q.profileId);
      return buildReport(config, snapshot, flows);
    },
    async replaySelected(q) {
      const store = failedStore();
      const ids = new Set(q.ids);
      // The store as the replay sees it: only the selected records.
      const selected: FailedRequestStore = {
        put: (r) => store.put(r),
        list: async (f) => (await store.list(f)).filter((r) => ids.has(r.id)),
        remove: (xs) => store.remove(xs),
        close: async () => undefined,
      };
      return replayInWorker(o, store, { store: selected });
    },
    async close() {
      const s = snapshots;
      snapshots = undefined;
      if (s) await (await s).close();
    },
  };
}

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
  png: 'image/png',
};

/**
 * Where the page's files are: `src/admin/console/` of a checkout (always current), else the
 * copy `npm run build` puts beside this module (`dist/admin/console/`).
 */
export function consoleDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const inSource = join(here, '..', '..', 'src', 'admin', 'console');
  return existsSync(join(inSource, 'index.html')) ? inSource : join(here, 'console');
}

/** A page file's name: letters, digits and dashes, one known extension (no path can be named). */
const FILE = /^[a-z0-9][a-z0-9-]*\.(html|js|css|svg|png)$/;

/** Security headers of the page: nothing from elsewhere, no framing. */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** Writes a JSON answer; true (the request was answered). */
function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): true {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
  return true;
}

function int(v: string | null, fallback: number, max: number): number {
  if (v === null || v === '') return fallback;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? Math.min(n, max) : fallback;
}

/** An ISO time (or ms since the epoch) of a query parameter; throws a `UsageError` naming it. */
function time(name: string, v: string | null): number | undefined {
  if (v === null || v.trim() === '') return undefined;
  const t = /^\d+$/.test(v.trim()) ? Number(v) : Date.parse(v);
  if (Number.isNaN(t)) throw new UsageError(`${name}: not an ISO time: ${v}`);
  return t;
}

export interface ConsoleRoutes {
  /** Answers the request when it is the console's; false when it is not (the caller goes on). */
  handle(req: IncomingMessage, res: ServerResponse, url: URL, path: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * The console's routes on the admin server (one call in `server.ts`).
 *
 * @param o.actions `enabled`: `admin.token` is set; `authorized(req)`: the request carries it
 */
export function consoleRoutes(o: {
  metrics: Pick<Metrics, 'dataflows'>;
  api?: ConsoleApi;
  redact: (v: unknown) => unknown;
  actions: { enabled: boolean; authorized(req: IncomingMessage): boolean };
}): ConsoleRoutes {
  const dir = consoleDir();
  const series = new SeriesRing({ metrics: o.metrics, dataflowIds: o.api?.dataflowIds });
  series.start();
  const json = (res: ServerResponse, body: unknown): true => send(res, 200, o.redact(body));

  const routes = async (req: IncomingMessage, res: ServerResponse, url: URL, path: string, method: string): Promise<boolean> => {
    const q = url.searchParams;
    const api = o.api;
    if (path === '/api/failed/replay-selected') {
      if (method !== 'POST') return send(res, 405, { error: 'method not allowed' }, { allow: 'POST' });
      if (!o.actions.enabled) return send(res, 403, { error: 'actions are disabled: set admin.token in the config' });
      if (!o.actions.authorized(req)) return send(res, 401, { error: 'missing or wrong bearer token' }, { 'www-authenticate': 'Bearer' });
      if (!api) return send(res, 404, { error: 'not found' });
      const ids = q.getAll('id').filter((x) => x !== '');
      if (ids.length === 0) throw new UsageError('id: name at least one failed request (?id=…&id=…)');
      if (ids.length > CONSOLE_DEFAULTS.maxSelected) throw new UsageError(`id: at most ${CONSOLE_DEFAULTS.maxSelected} at once`);
      return json(res, await api.replaySelected({ ids }));
    }
    const isPage = path === '/' || path === '/index.html' || path.startsWith('/console/');
    const isApi = ['/api/console', '/api/series', '/api/failed/search', '/api/explain'].includes(path);
    if (!isPage && !isApi) return false;
    if (method !== 'GET' && method !== 'HEAD') return send(res, 405, { error: 'method not allowed' }, { allow: 'GET' });
    if (isPage) {
      const name = path.startsWith('/console/') ? path.slice('/console/'.length) : 'index.html';
      const file = join(dir, name);
      if (!FILE.test(name) || !existsSync(file)) return send(res, 404, { error: 'not found' });
      const ext = name.slice(name.lastIndexOf('.') + 1);
      res.writeHead(200, { 'content-type': TYPES[ext] ?? 'application/octet-stream', 'cache-control': 'no-cache', ...PAGE_HEADERS });
      res.end(readFileSync(file));
      return true;
    }
    if (path === '/api/series') {
      const dataflowId = q.get('dataflow') ?? undefined;
      return json(res, series.read({ dataflowId, since: time('since', q.get('since')) }));
    }
    if (!api) return send(res, 404, { error: 'not found' });
    switch (path) {
      case '/api/console':
        return json(res, { ...(await api.settings()), actions: o.actions.enabled });
      case '/api/failed/search': {
        const offset = int(q.get('offset'), 0, Number.MAX_SAFE_INTEGER);
        const limit = Math.max(1, int(q.get('limit'), CONSOLE_DEFAULTS.pageSize, CONSOLE_DEFAULTS.maxPageSize));
        const opt = (k: string): string | undefined => (q.get(k) ?? '').trim() || undefined;
        const query: FailedQuery = {
          dataflowId: opt('dataflow'),
          status: opt('status'),
          profileId: opt('profile'),
          since: time('since', q.get('since')),
          until: time('until', q.get('until')),
          offset,
          limit,
        };
        return json(res, { offset, limit, ...(await api.failed(query)) });
      }
      default: {
        // '/api/explain'
        const profileId = (q.get('profile') ?? '').trim();
        if (profileId === '') throw new UsageError('profile: required (?profile=…)');
        return json(res, await api.explain({ profileId, dataflowId: (q.get('dataflow') ?? '').trim() || undefined }));
      }
    }
  };

  return {
    async handle(req, res, url, path) {
      try {
        return await routes(req, res, url, path, req.method ?? 'GET');
      } catch (err) {
        const code = codeOf(err);
        if (code === 'ERR_USAGE' || code === 'ERR_PROFILE_NOT_FOUND') {
          send(res, code === 'ERR_USAGE' ? 400 : 404, o.redact({ error: (err as HttpDestinationError).message, code }));
          return true;
        }
        throw err;
      }
    },
    async close() {
      series.stop();
      await o.api?.close();
    },
  };
}
