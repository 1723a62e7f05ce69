/**
 * What each command of the CLI does. Output for people goes to stdout; logs (JSON) go to
 * stderr; secrets are masked everywhere.
 */
import { stringify as toYaml } from 'yaml';
import { requireEnv, type UnsetVariable } from '../config/env.js';
import { loadConfigFile, type AppConfig } from '../config/load.js';
import { ConfigError, HttpDestinationError, UsageError } from '../errors.js';
import { workerApi } from '../admin/api.js';
import { ADMIN_DEFAULTS, isLoopback, startAdminServer, type AdminServer } from '../admin/server.js';
import { Health } from '../observability/health.js';
import { openFiguresStore, startFiguresFlush } from '../observability/figures.js';
import { startAlerts, type AlertEngine } from '../observability/alerts.js';
import { lagTotals } from '../observability/source-lag.js';
import { openAlertChannels } from '../observability/alert-channels.js';
import { openAlertStateStore } from '../observability/alert-state.js';
import type { Logger } from '../observability/logger.js';
import { createLogger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { createRedactor, MASK } from '../observability/redact.js';
import { replayFailedRequests, type ReplaySummary } from '../sinks/replay.js';
import type { PublishStats } from '../streams/publish.js';
import { count, startProgress, wantsProgress, type ProgressFigures } from './progress.js';
import type { FailedRequest } from '../sinks/types.js';
import { openFailureStores, openSinks } from '../worker/runtime.js';
import { openMarks } from '../worker/retry-queue-stores.js';
import type { DeliveredMarks } from '../stores/retry-queue.js';
import { FILE_STORE_DEPRECATED, startWorker, type RunSummary, type WorkerHandle } from '../worker/worker.js';

let secrets: readonly string[] = [];

/**
 * Loads the config of a command. `needs: 'all'` (commands that send or write: `run`,
 * `failed replay`): every `${ENV}` must be set. A list of field paths (commands that only
 * read, SPEC §12): unset variables are allowed, except under those paths (what the command
 * connects to); they are shown as unset.
 */
export function loadConfig(file: string, needs: 'all' | readonly string[] = 'all'): AppConfig {
  const config = loadConfigFile(file, { allowUnsetEnv: needs !== 'all' });
  secrets = config.secrets;
  if (needs !== 'all') requireEnv(config.unsetEnv, needs);
  return config;
}
const load = loadConfig;

/** What a read-only command connects to: the failed-request stores (their servers may default to the source's). */
const FAILED_STORES = ['failedRequests', 'source.servers'] as const;

/** `${NAME} (unset)`: how an unset variable is shown. */
export function unsetLabel(u: UnsetVariable): string {
  return `\${${u.name}} (unset)`;
}

/**
 * `redacted` (a redacted copy of `original`) with every string of `original` that is
 * exactly the placeholder of an unset variable shown as `${NAME} (unset)` instead.
 */
export function showUnset(original: unknown, redacted: unknown, unset: readonly UnsetVariable[] | undefined): unknown {
  if (!unset || unset.length === 0) return redacted;
  const byPlaceholder = new Map(unset.map((u) => [u.placeholder, u]));
  const walk = (o: unknown, r: unknown): unknown => {
    if (typeof o === 'string') {
      const u = byPlaceholder.get(o);
      return u ? unsetLabel(u) : r;
    }
    if (Array.isArray(o) && Array.isArray(r)) return r.map((x, i) => walk(o[i], x));
    if (o !== null && typeof o === 'object' && r !== null && typeof r === 'object' && !Array.isArray(r)) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(r)) out[k] = walk((o as Record<string, unknown>)[k], x);
      return out;
    }
    return r;
  };
  return walk(original, redacted);
}

/**
 * Starts a progress reporter when wanted (`--progress`, or stderr is a terminal).
 * `HTTP_DESTINATION_PROGRESS_MS` shortens the 2 s between lines (for tests of short runs).
 */
function progress(flag: boolean | undefined, label: string, read: () => ProgressFigures): { stop(): void } {
  if (!wantsProgress(flag)) return { stop: () => undefined };
  const every = Number(process.env.HTTP_DESTINATION_PROGRESS_MS);
  return startProgress({ label, read, everyMs: Number.isInteger(every) && every > 0 && every < 2_000 ? every : undefined });
}

/** Parses `--since`: an ISO time, or a duration before now like `90s`, `15m`, `1h`, `2d`. */
export function parseSince(v: string, now: number = Date.now()): number {
  const rel = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(v.trim());
  if (rel) {
    const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
    return now - Number(rel[1]) * unit;
  }
  const t = /^\d{4}-\d{2}-\d{2}/.test(v.trim()) ? Date.parse(v) : Number.NaN;
  if (Number.isNaN(t)) throw new UsageError(`--since: not an ISO time or a duration like 1h, 30m, 2d: ${v}`);
  return t;
}

/** Nothing could be imported (`audiences import`): exit 1 after the bad rows are listed. */
export class NothingImportedError extends HttpDestinationError {
  constructor(message: string) {
    super('ERR_NOTHING_IMPORTED', message);
  }
}

const out = (s: string): void => {
  process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
};

function formatSummary(s: RunSummary): string {
  const lines = [
    `events read        ${s.eventsRead}`,
    `events rejected    ${s.rejected}`,
    ...(s.backfilled > 0 ? [`backfill profiles   ${s.backfilled}`] : []),
    `exports delivered  ${s.delivered}`,
    `exports failed     ${s.failed}${s.failed > 0 ? '  (stored: see `http-destination failed list`)' : ''}`,
    ...(s.superseded > 0 ? [`exports superseded ${s.superseded}  (a newer state of the profile went instead)`] : []),
  ];
  for (const [id, c] of Object.entries(s.dataflows)) lines.push(`  ${id}: delivered ${c.delivered}, failed ${c.failed}${c.superseded > 0 ? `, superseded ${c.superseded}` : ''}`);
  if (s.abandoned > 0) lines.push(`unfinished         ${s.abandoned}  (drain timed out; they will be redelivered)`);
  lines.push(`took               ${(s.durationMs / 1000).toFixed(2)} s`);
  return lines.join('\n');
}

/** Warns about a figures store that cannot be written, at most every 10 s. */
function figuresError(logger: Logger): (err: unknown) => void {
  let last = 0;
  return (err) => {
    if (Date.now() - last < 10_000) return;
    last = Date.now();
    logger.warn({ err }, 'dataflow figures: cannot write to the store; kept and retried');
  };
}

function describeFailed(r: FailedRequest, superseded = false): string {
  const status = r.lastStatus !== undefined ? `HTTP ${r.lastStatus}` : r.lastErrorCode;
  return `${r.failedAt}  ${r.dataflowId}  ${r.profileId}  ${status}  attempts=${r.attempts}${r.replays ? ` replays=${r.replays}` : ''}${superseded ? '  SUPERSEDED' : ''}  ${r.idempotencyKey}\n    ${r.lastError}`;
}

/** Whether a newer state of the record's (dataflow, profile) was delivered (SPEC §6): replay will not send it. */
async function isSuperseded(marks: DeliveredMarks | undefined, r: FailedRequest): Promise<boolean> {
  if (marks === undefined || r.version === undefined) return false;
  const delivered = await marks.get(r.dataflowId, r.profileId);
  return delivered !== undefined && delivered >= r.version;
}

export const commands = {
  knownSecrets: (): readonly string[] => secrets,

  async run(o: { config: string; once?: boolean; json?: boolean; metricsPort?: number; metricsHost?: string }): Promise<void> {
    const config = load(o.config);
    const logger = createLogger({ level: config.log.level, secrets: config.secrets });
    const metrics = new Metrics({ defaultMetrics: o.metricsPort !== undefined });
    const health = new Health();
    const host = o.metricsHost ?? ADMIN_DEFAULTS.host;
    if (o.metricsHost !== undefined && o.metricsPort === undefined) throw new UsageError('--metrics-host: needs --metrics-port');
    if (!isLoopback(host) && !config.admin?.token) {
      throw new UsageError(`--metrics-host ${host}: serving the admin server beyond loopback needs admin.token in the config (admin: { token: "\${ADMIN_TOKEN}" })`);
    }
    let admin: AdminServer | undefined;
    let worker: WorkerHandle | undefined;
    const figures = await openFiguresStore(config);
    const flush = startFiguresFlush({ metrics, store: figures, onError: figuresError(logger) });
    const alertState = config.alerts && config.alerts.rules.length > 0 ? await openAlertStateStore(config) : undefined;
    let alerts: AlertEngine | undefined;
    const closeMonitoring = async (): Promise<void> => {
      await admin?.close();
      await health.close();
      await alerts?.close();
      await flush.close();
      await Promise.allSettled([figures.close(), alertState?.close()]);
    };
    try {
      if (o.metricsPort !== undefined) {
        admin = await startAdminServer({
          host,
          port: o.metricsPort,
          metrics,
          health,
          token: config.admin?.token,
          redact: createRedactor(config.secrets).value,
          logger,
          api: workerApi({ config, logger, figures, flush: () => flush.flush(), alerts: alertState, failed: () => worker?.failed, marks: () => worker?.marks, source: () => worker }),
        });
        logger.info({ host, port: admin.port }, 'admin server listening');
      }
      worker = await startWorker({ config, logger, once: o.once, metrics, health: admin ? health : undefined });
      if (config.alerts && alertState) {
        const channels = openAlertChannels(config.alerts.channels, { logger, natsServers: config.source.kind === 'jetstream' ? config.source.servers : undefined });
        const lag = worker.lag;
        const delay = lag && (async () => {
          const reading = await lag.measure(0);
          return reading && { ...lagTotals(reading), at: reading.at };
        });
        alerts = startAlerts({ config: config.alerts, dataflowIds: config.dataflows.map((d) => d.id), figures, state: alertState, channels, logger, metrics, flush: () => flush.flush(), delay });
      }
    } catch (err) {
      await closeMonitoring();
      if (err instanceof HttpDestinationError && err.code === 'ERR_POOL_PARTITIONS') throw new ConfigError('source.partitions', err.message);
      throw err;
    }
    const running = worker;
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        logger.warn({ signal: sig }, 'second signal: exiting without draining');
        process.exit(1);
      }
      logger.info({ signal: sig }, 'signal received');
      running.stop();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    if (!o.once) logger.info({ dataflows: config.dataflows.map((d) => d.id), source: config.source.kind }, 'worker started');
    try {
      const summary = await running.done;
      if (o.once) out(o.json ? JSON.stringify(summary) : formatSummary(summary));
      else logger.info({ summary }, 'worker stopped');
    } catch (err) {
      // Stop what may still run (the --once end watcher, the source) so nothing keeps the process alive.
      running.stop();
      // The pool's partition count differs from this worker's: a config error (exit 2, no restart loop).
      if (err instanceof HttpDestinationError && err.code === 'ERR_POOL_PARTITIONS') throw new ConfigError('source.partitions', err.message);
      throw err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await closeMonitoring();
    }
  },

  async failedList(o: { config: string; dataflow?: string; json?: boolean }): Promise<void> {
    const config = load(o.config, FAILED_STORES);
    const stores = await openFailureStores(config);
    const marks = await openMarks(config);
    try {
      const list = await stores.failed.list({ dataflowId: o.dataflow });
      const redact = createRedactor(config.secrets);
      const flags = await Promise.all(list.map((r) => isSuperseded(marks, r)));
      if (o.json) list.forEach((r, i) => out(JSON.stringify(redact.value(flags[i] ? { ...r, superseded: true } : r))));
      else {
        const n = flags.filter(Boolean).length;
        out(`${list.length} failed request${list.length === 1 ? '' : 's'}${n > 0 ? ` (${n} superseded: a newer state was delivered; replay will not send them)` : ''}`);
        list.forEach((r, i) => out(redact.text(describeFailed(r, flags[i]))));
      }
    } finally {
      await marks?.close();
      await stores.close();
    }
  },

  async failedReplay(o: { config: string; dataflow?: string; limit?: number; since?: string; concurrency?: number; progress?: boolean; queue?: boolean }): Promise<void> {
    const config = load(o.config);
    if (o.dataflow !== undefined && !config.dataflows.some((d) => d.id === o.dataflow)) {
      throw new UsageError(`--dataflow: unknown dataflow "${o.dataflow}"`);
    }
    const since = o.since === undefined ? undefined : parseSince(o.since);
    const logger = createLogger({ level: config.log.level, secrets: config.secrets });
    if (config.failedRequests.kind === 'file') logger.warn({ field: 'failedRequests.kind' }, FILE_STORE_DEPRECATED);
    if (o.queue && (config.store.kind !== 'redis' || config.source.kind !== 'jetstream')) {
      throw new UsageError('--queue: needs a pool (store.kind: redis and source.kind: jetstream); the embedded default replays from this command');
    }
    // A pool with --queue: the records go to the Redis retry queues (src/cli/replay-pool.ts).
    // Otherwise this command sends them, the Redis / local marks dropping superseded ones.
    if (o.queue && config.store.kind === 'redis' && config.source.kind === 'jetstream') {
      const { replayToPoolQueues } = await import('./replay-pool.js');
      let reading: () => ProgressFigures = () => ({ done: 0, total: 0 });
      const stop = progress(o.progress, 'failed replay', () => reading());
      try {
        out(await replayToPoolQueues(config, config.store, config.source.partitions, { dataflow: o.dataflow, limit: o.limit, since, onStats: (read) => (reading = read) }));
      } finally {
        stop.stop();
      }
      return;
    }
    const stores = await openFailureStores(config);
    const sinks = openSinks(config, { failed: stores.failed, logger, storeFailures: false });
    const marks = await openMarks(config);
    const stats: ReplaySummary = { stored: 0, selected: 0, replayed: 0, delivered: 0, failed: 0, skipped: 0, superseded: 0 };
    const reporter = progress(o.progress, 'failed replay', () => ({
      done: stats.replayed + stats.skipped + (stats.superseded ?? 0),
      total: stats.selected,
      detail: `delivered ${count(stats.delivered)}, failed ${count(stats.failed)}, skipped ${count(stats.skipped)}${stats.superseded ? `, superseded ${count(stats.superseded)}` : ''}`,
    }));
    try {
      const r = await replayFailedRequests({
        store: stores.failed,
        sinkFor: (id) => sinks.get(id),
        dataflowId: o.dataflow,
        limit: o.limit,
        since,
        concurrency: o.concurrency,
        stats,
        marks,
      });
      reporter.stop();
      const left = r.stored - r.selected;
      out(
        `replayed ${r.replayed}: delivered ${r.delivered}, failed ${r.failed} (kept in the store), ` +
          `skipped ${r.skipped} of unknown dataflows${r.superseded ? `, superseded ${r.superseded} (not sent: a newer state was delivered; removed)` : ''}; ${r.stored} stored${left > 0 ? `, ${left} not selected (--since/--limit)` : ''}`,
      );
    } finally {
      reporter.stop();
      await sinks.close();
      await marks?.close();
      await stores.close();
    }
  },

  async rejectedList(o: { config: string; json?: boolean }): Promise<void> {
    const config = load(o.config, FAILED_STORES);
    const stores = await openFailureStores(config);
    try {
      const list = await stores.rejected.list();
      if (o.json) for (const r of list) out(JSON.stringify(r));
      else {
        out(`${list.length} rejected event${list.length === 1 ? '' : 's'}`);
        for (const r of list) out(`${r.rejectedAt}  ${r.sourceKey}  ${r.code}  ${r.reason}`);
      }
    } finally {
      await stores.close();
    }
  },

  async validate(o: { config: string }): Promise<void> {
    const config = load(o.config, []);
    const redact = createRedactor(config.secrets);
    const view = {
      source: config.source,
      store: config.store,
      failedRequests: config.failedRequests,
      audiences: config.audiences,
      destinations: config.destinations.map((d) => ({
        ...d,
        tls: d.tls && {
          cert: d.tls.cert ? 'loaded' : undefined,
          key: d.tls.key ? MASK : undefined,
          ca: d.tls.ca ? 'loaded' : undefined,
          passphrase: d.tls.passphrase ? MASK : undefined,
          rejectUnauthorized: d.tls.rejectUnauthorized,
        },
        signing: d.signing && { secrets: d.signing.secrets.map((x) => (config.unsetEnv?.some((u) => u.placeholder === x) ? x : MASK)) },
      })),
      dataflows: config.dataflows,
      worker: config.worker,
      admin: config.admin && { token: config.admin.token ? MASK : undefined },
      alerts: config.alerts,
    };
    out(`config ${o.config} is valid\n`);
    for (const d of config.destinations) {
      if (d.tls && !d.tls.rejectUnauthorized) out(`WARNING: destinations ${d.id}: tls.rejectUnauthorized is false: the server certificate is not verified\n`);
    }
    for (const u of config.unsetEnv ?? []) {
      out(`WARNING: ${u.path}: environment variable ${u.name} is not set (shown as ${unsetLabel(u)}); run and failed replay need it\n`);
    }
    const plain = JSON.parse(JSON.stringify(view)) as unknown;
    out(toYaml(showUnset(plain, redact.value(plain), config.unsetEnv)));
  },

  async publish(o: { config: string; events: string; progress?: boolean }): Promise<void> {
    const config = load(o.config, ['source']);
    const { publishEvents } = await import('../worker/backbone.js');
    const stats: PublishStats = { lines: 0, published: 0, duplicates: 0, skipped: 0 };
    const reporter = progress(o.progress, 'publish', () => ({ done: stats.lines, detail: publishCounts(stats) }));
    try {
      const r = await publishEvents(config, o.events, { stats });
      reporter.stop();
      out(`${publishCounts({ published: r.published, duplicates: r.duplicates, skipped: r.skipped.length })} in ${(r.ms / 1000).toFixed(2)} s${r.skipped.length ? '; bad lines:' : ''}`);
      for (const s of r.skipped) out(`  line ${s.line}: ${s.reason}`);
    } finally {
      reporter.stop();
    }
  },

  async poolStatus(o: { config: string; json?: boolean }): Promise<void> {
    const config = load(o.config, ['source', 'store']);
    const { poolStatus } = await import('../worker/backbone.js');
    const r = await poolStatus(config);
    if (o.json) {
      out(JSON.stringify(r));
      return;
    }
    const live = r.workers.filter((w) => w.live);
    out(`pool ${r.pool}: ${live.length} live worker${live.length === 1 ? '' : 's'}, ${r.recordedPartitions ?? '?'} partitions`);
    for (const w of r.workers) {
      out(`  ${w.live ? 'live' : 'gone'}  ${w.id}  last seen ${w.lastSeenMs ?? '?'} ms ago  partitions [${w.partitions.join(',')}]`);
    }
    out('  partition  owner  epoch  lease-ms  pending  unacked');
    for (const p of r.partitions) {
      const lag = r.lag.find((l) => l.partition === p.partition);
      const moving = p.desiredOwner && p.desiredOwner !== p.owner ? `  → ${p.desiredOwner}` : '';
      out(`  ${String(p.partition).padStart(9)}  ${p.owner ?? '-'}  ${p.epoch ?? '-'}  ${p.ttlMs ?? '-'}  ${lag?.pending ?? '-'}  ${lag?.ackPending ?? '-'}${moving}`);
    }
    out(`backfiller: ${r.backfiller ? `${r.backfiller.owner} (lock token ${r.backfiller.token})` : 'none (no backfill is being published)'}`);
    for (const b of r.backfills) {
      const state = b.done ? 'done' : b.pending ? 'not begun' : 'publishing';
      out(`  backfill ${b.id}  ${state}  published ${b.published}/${b.total ?? '?'}`);
    }
  },

  async poolResetPartitions(o: { config: string }): Promise<void> {
    const config = load(o.config, ['source', 'store']);
    const { resetPoolPartitions } = await import('../worker/backbone.js');
    const r = await resetPoolPartitions(config);
    out(`partition count forgotten (was ${r.previous ?? 'not recorded'}); start the workers with the new source.partitions`);
  },

  async audiencesImport(o: { config: string; audience: string; csv: string; delimiter?: string; progress?: boolean }): Promise<void> {
    const config = load(o.config, ['source']);
    const { importAudience } = await import('../worker/backbone.js');
    const stats: PublishStats = { lines: 0, published: 0, duplicates: 0, skipped: 0 };
    const reporter = progress(o.progress, 'audiences import', () => ({ done: stats.lines, detail: publishCounts(stats) }));
    let r: Awaited<ReturnType<typeof importAudience>>;
    try {
      r = await importAudience(config, o.audience, o.csv, { delimiter: o.delimiter, stats });
    } finally {
      reporter.stop();
    }
    const fresh = r.imported - r.duplicates;
    out(
      `imported ${r.imported} profiles into ${o.audience} (${fresh} new, ${r.duplicates} duplicates) of ${r.rows} rows; ` +
        `${r.bad.length} bad row${r.bad.length === 1 ? '' : 's'}${r.bad.length ? ':' : ''}`,
    );
    for (const b of r.bad) out(`  line ${b.line}: ${b.reason}`);
    if (r.imported === 0) throw new NothingImportedError(`nothing imported from ${o.csv}: ${r.bad.length ? 'every row is bad (see above)' : 'no data rows'}`);
  },
};

/** `published 3, duplicates 308, skipped 0`: published counts new events only. */
function publishCounts(s: Pick<PublishStats, 'published' | 'duplicates' | 'skipped'>): string {
  return `published ${count(s.published - s.duplicates)}, duplicates ${count(s.duplicates)}, skipped ${count(s.skipped)}`;
}
