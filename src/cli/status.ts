/**
 * `http-destination status --config F [--json]` (SPEC §10): per dataflow the figures of the
 * current one-hour run and in total (with the exports superseded by a newer state, SPEC §6), the last delivery time, the p50/p95 latency of the run,
 * and the active alerts. Pool-wide with `store.kind: redis` (the figures live there); on the
 * embedded default (`store.kind: local`) the host's, read from the local store's folder beside a
 * running `run` (LMDB: readers never blocked). With `store.kind: memory` the figures live only in
 * the running worker (exit 2, pointing at its admin API).
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { loadConfigFile, type AppConfig } from '../config/load.js';
import { UsageError } from '../errors.js';
import { readFiguresReport } from '../admin/api.js';
import { openFiguresStore, type FiguresReport } from '../observability/figures.js';
import { openAlertStateStore } from '../observability/alert-state.js';

const fmtMs = (ms: number | null): string => (ms === null ? '-' : ms >= 1000 ? `${(ms / 1000).toFixed(ms >= 10_000 ? 0 : 1)} s` : `${Math.round(ms)} ms`);

/** The readable table of a report. */
export function formatStatus(r: FiguresReport): string {
  const head = ['dataflow', 'received', 'exported', 'excluded', 'failed', 'superseded', 'p50', 'p95', 'last delivery'];
  const rows: string[][] = [];
  for (const d of r.dataflows) {
    rows.push([d.id, String(d.run.received), String(d.run.exported), String(d.run.excluded), String(d.run.failed), String(d.superseded.run), fmtMs(d.latencyMs.p50), fmtMs(d.latencyMs.p95), d.lastDeliveryAt ?? 'never']);
    rows.push(['  total', String(d.total.received), String(d.total.exported), String(d.total.excluded), String(d.total.failed), String(d.superseded.total), '', '', '']);
  }
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ').trimEnd();
  const out = [
    `run since ${r.runStart} (one-hour runs, UTC); rejected input events: ${r.rejected.run} this run, ${r.rejected.total} in total`,
    '',
    line(head),
    ...rows.map(line),
    '',
    r.alerts.length === 0 ? 'no active alerts' : `${r.alerts.length} active alert${r.alerts.length === 1 ? '' : 's'}:`,
  ];
  for (const a of r.alerts as Array<Record<string, unknown>>) out.push(`  ${String(a.alertId)}  since ${String(a.since ?? a.at)}  ${String(a.message ?? '')}`);
  return out.join('\n');
}

export async function status(o: { config: string; json?: boolean }): Promise<void> {
  const config: AppConfig = loadConfigFile(o.config);
  if (config.store.kind === 'memory') {
    throw new UsageError(
      'status reads the figures kept in the store (store.kind: local or redis); with store.kind: memory they live in the running worker: GET /api/dataflows on its admin port (run --metrics-port)',
    );
  }
  const figures = await openFiguresStore(config);
  const alerts = await openAlertStateStore(config);
  try {
    const report = await readFiguresReport(config, figures, alerts);
    process.stdout.write(`${o.json ? JSON.stringify(report) : formatStatus(report)}\n`);
  } finally {
    await Promise.allSettled([figures.close(), alerts.close()]);
  }
}

/** Registers `status` on the program (one line in main.ts). */
export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('dataflow monitoring: per dataflow the figures of the current run and in total, latency, active alerts (pool-wide with Redis, the host\'s with the local store)')
    .addOption(new Option('-c, --config <file>', 'configuration file (YAML or JSON)').makeOptionMandatory())
    .option('--json', 'one JSON object')
    .action(async (opts: { config: string; json?: boolean }) => {
      await status(opts);
    });
}
