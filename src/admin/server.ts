/**
 * The admin server (SPEC §13): one port serving `/metrics` (Prometheus), `/healthz`
 * (liveness), `/readyz` (readiness: 200, or 503 with the failing checks) and a JSON API under
 * `/api/`. Read-only routes are open (bind to loopback, the default, or set `admin.token` to
 * bind elsewhere); actions need `Authorization: Bearer <admin.token>`. No response carries a
 * secret: API answers go through the redactor of the config's secrets.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { WorkerHealth } from '../observability/health.js';
import { consoleRoutes, type ConsoleApi } from './console-api.js';

/** What the JSON API reads and does; every method is optional (absent: 404). */
export interface AdminApi {
  /** `/api/dataflows`: the dataflow figures, as `status --json` prints them. */
  dataflows?(): Promise<unknown>;
  /** `/api/alerts`: the active alerts. */
  alerts?(): Promise<unknown>;
  /** `/api/failed?dataflow=&offset=&limit=`: stored failed requests, paged. */
  failed?(q: { dataflowId?: string; offset: number; limit: number }): Promise<{ total: number; items: unknown[] }>;
  /** `/api/partitions`: the pool's partitions, owners and lag. */
  partitions?(): Promise<unknown>;
  /** `POST /api/failed/replay?dataflow=` (action): replays stored failed requests. */
  replay?(q: { dataflowId?: string }): Promise<unknown>;
  /** The web console's own routes (`/`, `/api/console`, `/api/series`, …: console-api.ts). */
  console?: ConsoleApi;
}

export interface AdminServerOptions {
  /** @default 127.0.0.1 */
  host?: string;
  port: number;
  metrics: Metrics;
  health: WorkerHealth;
  api?: AdminApi;
  /** `admin.token`: required by actions (and by any non-loopback bind, checked by the caller). */
  token?: string;
  /** Masks secrets in API answers. @default identity */
  redact?: (value: unknown) => unknown;
  logger?: Logger;
}

export interface AdminServer {
  readonly server: Server;
  /** The bound port (useful with port 0). */
  readonly port: number;
  readonly host: string;
  close(): Promise<void>;
}

export const ADMIN_DEFAULTS = {
  host: '127.0.0.1',
  /** Page size of `/api/failed`, and its maximum. */
  pageSize: 50,
  maxPageSize: 500,
} as const;

/** Whether a host is a loopback address (binding there needs no token). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function nonNegativeInt(v: string | null, fallback: number, max: number): number {
  if (v === null || v === '') return fallback;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? Math.min(n, max) : fallback;
}

/**
 * Starts the admin server; resolves once it listens.
 *
 * @example
 * const admin = await startAdminServer({ port: 9464, metrics, health, api, token: config.admin?.token });
 * // curl 127.0.0.1:9464/readyz → {"ready":true,"checks":[…]}
 * await admin.close();
 */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const host = options.host ?? ADMIN_DEFAULTS.host;
  const api = options.api ?? {};
  const redact = options.redact ?? ((v: unknown) => v);
  const tokenDigest = options.token ? digest(options.token) : undefined;

  const authorized = (req: IncomingMessage): boolean => {
    if (!tokenDigest) return false;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(h);
    return m !== null && timingSafeEqual(digest(m[1].trim()), tokenDigest);
  };

  const json = async (res: ServerResponse, read: (() => Promise<unknown>) | undefined): Promise<void> => {
    if (!read) return send(res, 404, { error: 'not found' });
    send(res, 200, redact(await read()));
  };

  const web = consoleRoutes({ metrics: options.metrics, api: api.console, redact, actions: { enabled: tokenDigest !== undefined, authorized } });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    if (await web.handle(req, res, url, path)) return;
    const isAction = path === '/api/failed/replay';
    if (!isAction && method !== 'GET' && method !== 'HEAD') return send(res, 405, { error: 'method not allowed' }, { allow: 'GET' });
    switch (path) {
      case '/metrics':
        return send(res, 200, await options.metrics.render(), { 'content-type': options.metrics.contentType });
      case '/healthz': {
        const live = options.health.liveness();
        return send(res, live.ok ? 200 : 503, { status: live.ok ? 'ok' : 'fail', lagMs: live.lagMs, ...(live.reason ? { reason: live.reason } : {}) });
      }
      case '/readyz': {
        const checks = options.health.readiness();
        const failing = checks.filter((c) => !c.ok);
        const body = { ready: failing.length === 0, ...(failing.length ? { reason: failing.map((c) => `${c.name}: ${c.reason ?? 'not ok'}`).join('; ') } : {}), checks };
        return send(res, failing.length === 0 ? 200 : 503, redact(body));
      }
      case '/api/dataflows':
        return json(res, api.dataflows && (() => api.dataflows!()));
      case '/api/alerts':
        return json(res, api.alerts && (() => api.alerts!()));
      case '/api/partitions':
        return json(res, api.partitions && (() => api.partitions!()));
      case '/api/failed': {
        const dataflowId = url.searchParams.get('dataflow') ?? undefined;
        const offset = nonNegativeInt(url.searchParams.get('offset'), 0, Number.MAX_SAFE_INTEGER);
        const limit = Math.max(1, nonNegativeInt(url.searchParams.get('limit'), ADMIN_DEFAULTS.pageSize, ADMIN_DEFAULTS.maxPageSize));
        return json(res, api.failed && (async () => ({ offset, limit, ...(await api.failed!({ dataflowId, offset, limit })) })));
      }
      case '/api/failed/replay': {
        if (method !== 'POST') return send(res, 405, { error: 'method not allowed' }, { allow: 'POST' });
        if (!tokenDigest) return send(res, 403, { error: 'actions are disabled: set admin.token in the config' });
        if (!authorized(req)) return send(res, 401, { error: 'missing or wrong bearer token' }, { 'www-authenticate': 'Bearer' });
        const dataflowId = url.searchParams.get('dataflow') ?? undefined;
        return json(res, api.replay && (() => api.replay!({ dataflowId })));
      }
      default:
        return send(res, 404, { error: 'not found' });
    }
  };

  const server = createServer((req, res) => {
    // Drain any body (actions take their arguments from the query).
    req.resume();
    handle(req, res).catch((err: unknown) => {
      options.logger?.warn({ err, path: req.url }, 'admin: request failed');
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.end();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (err: unknown) => {
    await web.close();
    throw err;
  });
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    host,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await web.close();
    },
  };
}
