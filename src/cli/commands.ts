/**
 * What each command of the CLI does. Output for people goes to stdout; logs (JSON) go to
 * stderr; secrets are masked everywhere.
 */
import { stringify as toYaml } from 'yaml';
import { loadConfigFile, type AppConfig } from '../config/load.js';
import { ConfigError, HttpDestinationError, UsageError } from '../errors.js';
import { workerApi } from '../admin/api.js';
import { ADMIN_DEFAULTS, isLoopback, startAdminServer, type AdminServer } from '../admin/server.js';
import { Health } from '../observability/health.js';
import { openFiguresStore, startFiguresFlush } from '../observability/figures.js';
import { startAlerts, type AlertEngine } from '../observability/alerts.js';
import { openAlertChannels } from '../observability/alert-channels.js';
import { openAlertStateStore } from '../observability/alerts-redis.js';
import type { Logger } from '../observability/logger.js';
import { createLogger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { createRedactor, MASK } from '../observability/redact.js';
import { replayFailedRequests } from '../sinks/replay.js';
import type { FailedRequest } from '../sinks/types.js';
import { openFailureStores, openSinks } from '../worker/runtime.js';
import { startWorker, type RunSummary, type WorkerHandle } from '../worker/worker.js';

let secrets: readonly string[] = [];

function load(file: string): AppConfig {
  const config = loadConfigFile(file);
  secrets = config.secrets;
  return config;
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
  ];
  for (const [id, c] of Object.entries(s.dataflows)) lines.push(`  ${id}: delivered ${c.delivered}, failed ${c.failed}`);
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

function describeFailed(r: FailedRequest): string {
  const status = r.lastStatus !== undefined ? `HTTP ${r.lastStatus}` : r.lastErrorCode;
  return `${r.failedAt}  ${r.dataflowId}  ${r.profileId}  ${status}  attempts=${r.attempts}${r.replays ? ` replays=${r.replays}` : ''}  ${r.idempotencyKey}\n    ${r.lastError}`;
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
          api: workerApi({ config, logger, figures, flush: () => flush.flush(), alerts: alertState, failed: () => worker?.failed }),
        });
        logger.info({ host, port: admin.port }, 'admin server listening');
      }
      worker = await startWorker({ config, logger, once: o.once, metrics, health: admin ? health : undefined });
      if (config.alerts && alertState) {
        const channels = openAlertChannels(config.alerts.channels, { logger, natsServers: config.source.kind === 'jetstream' ? config.source.servers : undefined });
        alerts = startAlerts({ config: config.alerts, dataflowIds: config.dataflows.map((d) => d.id), figures, state: alertState, channels, logger, metrics, flush: () => flush.flush() });
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
    const config = load(o.config);
    const stores = await openFailureStores(config);
    try {
      const list = await stores.failed.list({ dataflowId: o.dataflow });
      const redact = createRedactor(config.secrets);
      if (o.json) for (const r of list) out(JSON.stringify(redact.value(r)));
      else {
        out(`${list.length} failed request${list.length === 1 ? '' : 's'}`);
        for (const r of list) out(redact.text(describeFailed(r)));
      }
    } finally {
      await stores.close();
    }
  },

  async failedReplay(o: { config: string; dataflow?: string }): Promise<void> {
    const config = load(o.config);
    if (o.dataflow !== undefined && !config.dataflows.some((d) => d.id === o.dataflow)) {
      throw new UsageError(`--dataflow: unknown dataflow "${o.dataflow}"`);
    }
    const logger = createLogger({ level: config.log.level, secrets: config.secrets });
    const stores = await openFailureStores(config);
    const sinks = openSinks(config, { failed: stores.failed, logger, storeFailures: false });
    try {
      const r = await replayFailedRequests({ store: stores.failed, sinkFor: (id) => sinks.get(id), dataflowId: o.dataflow });
      out(`replayed ${r.replayed}: delivered ${r.delivered}, failed ${r.failed} (kept in the store)${r.skipped ? `, skipped ${r.skipped} of unknown dataflows` : ''}`);
    } finally {
      await sinks.close();
      await stores.close();
    }
  },

  async rejectedList(o: { config: string; json?: boolean }): Promise<void> {
    const config = load(o.config);
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
    const config = load(o.config);
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
        signing: d.signing && { secrets: d.signing.secrets.map(() => MASK) },
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
    out(toYaml(redact.value(JSON.parse(JSON.stringify(view)) as unknown)));
  },

  async publish(o: { config: string; events: string }): Promise<void> {
    const config = load(o.config);
    const { publishEvents } = await import('../worker/backbone.js');
    const r = await publishEvents(config, o.events);
    out(`published ${r.published} events in ${(r.ms / 1000).toFixed(2)} s${r.skipped.length ? `; skipped ${r.skipped.length} bad lines:` : ''}`);
    for (const s of r.skipped) out(`  line ${s.line}: ${s.reason}`);
  },

  async poolStatus(o: { config: string; json?: boolean }): Promise<void> {
    const config = load(o.config);
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
  },

  async poolResetPartitions(o: { config: string }): Promise<void> {
    const config = load(o.config);
    const { resetPoolPartitions } = await import('../worker/backbone.js');
    const r = await resetPoolPartitions(config);
    out(`partition count forgotten (was ${r.previous ?? 'not recorded'}); start the workers with the new source.partitions`);
  },

  async audiencesImport(o: { config: string; audience: string; csv: string }): Promise<void> {
    const config = load(o.config);
    const { importAudience } = await import('../worker/backbone.js');
    const r = await importAudience(config, o.audience, o.csv);
    out(`imported ${r.imported} profiles into ${o.audience}${r.bad.length ? `; ${r.bad.length} bad rows:` : ''}`);
    for (const b of r.bad) out(`  line ${b.line}: ${b.reason}`);
  },
};
