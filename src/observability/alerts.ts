/**
 * Alerts (SPEC §10): rules over the pool's dataflow figures (`FiguresStore.window`), evaluated
 * every `alerts.evaluateEveryMs` (≤ 5 s); an alert is raised once when its condition holds at
 * an evaluation and cleared once when it no longer does. In a pool every worker evaluates the
 * same pool-wide figures, and the transition is claimed atomically in the alert state store
 * (Redis): only the worker that wins it logs and notifies, so there is one alert per condition.
 * Notifications go to the log (warning on raise, info on clear) and to the rule's channels
 * (`alert-channels.ts`) without ever waiting on them.
 */
import type { AlertRuleConfig, AlertsConfig } from '../config/schema.js';
import { latencyQuantileMs, type FiguresStore, type WindowFigures } from './figures.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** An active alert, as the state store keeps it and `status` shows it. */
export interface ActiveAlert {
  alertId: string;
  rule: string;
  kind: AlertRuleConfig['kind'];
  dataflowId: string;
  /** ISO time it was raised. */
  since: string;
  value: number;
  threshold: number;
  windowMs?: number;
  message: string;
}

/** The JSON message sent to channels (SPEC §10). */
export interface AlertMessage {
  alertId: string;
  rule: string;
  kind: AlertRuleConfig['kind'];
  dataflowId: string;
  state: 'raised' | 'cleared';
  at: string;
  value: number;
  threshold: number;
  windowMs?: number;
  message: string;
}

/** Where active alerts live; `raise`/`clear` are atomic claims (true: this caller made the transition). */
export interface AlertStateStore {
  raise(alert: ActiveAlert): Promise<boolean>;
  /** Removes the alert; the removed record when this caller removed it. */
  clear(alertId: string): Promise<ActiveAlert | undefined>;
  active(): Promise<ActiveAlert[]>;
  close(): Promise<void>;
}

export class MemoryAlertStateStore implements AlertStateStore {
  private readonly alerts = new Map<string, ActiveAlert>();
  async raise(alert: ActiveAlert): Promise<boolean> {
    if (this.alerts.has(alert.alertId)) return false;
    this.alerts.set(alert.alertId, alert);
    return true;
  }
  async clear(alertId: string): Promise<ActiveAlert | undefined> {
    const a = this.alerts.get(alertId);
    this.alerts.delete(alertId);
    return a;
  }
  async active(): Promise<ActiveAlert[]> {
    return [...this.alerts.values()].sort((a, b) => a.alertId.localeCompare(b.alertId));
  }
  async close(): Promise<void> {}
}

/** A channel: `send` never throws and never blocks the caller for long (it queues and retries). */
export interface AlertChannel {
  readonly id: string;
  send(message: AlertMessage): void;
  close(): Promise<void>;
}

/** A rule's reading for one dataflow: the value, whether it breaks the threshold, and why. */
export interface RuleReading {
  value: number;
  threshold: number;
  firing: boolean;
  message: string;
}

/** Minimum settled exports in the window before `failureRate` can fire (SPEC §10). */
export const FAILURE_RATE_MIN_EXPORTS = 20;

/** Evaluates a windowed rule against the window's figures; undefined: not enough data to judge. */
export function readRule(rule: AlertRuleConfig, w: WindowFigures): RuleReading | undefined {
  const secs = 'windowMs' in rule ? `${Math.round(rule.windowMs / 1000)} s` : '';
  switch (rule.kind) {
    case 'failedRequests':
      return { value: w.failed, threshold: rule.threshold, firing: w.failed >= rule.threshold, message: `${w.failed} requests stored as failed in the last ${secs}` };
    case 'failureRate': {
      const settled = w.exported + w.failed;
      if (settled < FAILURE_RATE_MIN_EXPORTS) return { value: settled ? w.failed / settled : 0, threshold: rule.threshold, firing: false, message: `only ${settled} exports ended in the last ${secs}` };
      const rate = w.failed / settled;
      return { value: rate, threshold: rule.threshold, firing: rate > rule.threshold, message: `${(rate * 100).toFixed(1)}% of ${settled} exports failed in the last ${secs}` };
    }
    case 'latencyP95': {
      const p95 = latencyQuantileMs(w.latency, 0.95);
      if (p95 === undefined) return { value: 0, threshold: rule.thresholdMs, firing: false, message: `no delivery in the last ${secs}` };
      return { value: p95, threshold: rule.thresholdMs, firing: p95 > rule.thresholdMs, message: `p95 latency ${Math.round(p95)} ms over the last ${secs}` };
    }
    case 'delay':
      return undefined; // refused by the config loader (not supported yet)
  }
}

export interface AlertEngine {
  /** One evaluation of every rule (the timer calls it too). */
  evaluate(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts evaluating `config.rules` every `config.evaluateEveryMs`.
 *
 * @example
 * const engine = startAlerts({ config: config.alerts, dataflowIds, figures, state, channels, logger, metrics });
 * await engine.close();
 */
export function startAlerts(o: {
  config: AlertsConfig;
  dataflowIds: readonly string[];
  figures: FiguresStore;
  state: AlertStateStore;
  channels: readonly AlertChannel[];
  logger: Logger;
  metrics?: Metrics;
  /** Flushes this worker's figures first (so an evaluation sees its last second). */
  flush?: () => Promise<void>;
  now?: () => number;
  /** Evaluate on a timer. @default true */
  timer?: boolean;
}): AlertEngine {
  const now = o.now ?? Date.now;
  const byId = new Map(o.channels.map((c) => [c.id, c]));
  let running: Promise<void> | undefined;
  let lastError = 0;

  const notify = (rule: AlertRuleConfig, msg: AlertMessage): void => {
    const fields = { alertId: msg.alertId, rule: msg.rule, kind: msg.kind, dataflowId: msg.dataflowId, value: msg.value, threshold: msg.threshold };
    if (msg.state === 'raised') o.logger.warn(fields, `alert raised: ${msg.message}`);
    else o.logger.info(fields, `alert cleared: ${msg.message}`);
    for (const id of rule.channels) byId.get(id)?.send(msg);
  };

  const once = async (): Promise<void> => {
    await o.flush?.();
    const t = now();
    const at = new Date(t).toISOString();
    const active = new Map((await o.state.active()).map((a) => [a.alertId, a]));
    for (const rule of o.config.rules) {
      if (!('windowMs' in rule)) continue;
      const ids = rule.dataflows ?? o.dataflowIds;
      const windows = await o.figures.window(ids, t - rule.windowMs, t + 1);
      for (const dataflowId of ids) {
        const reading = readRule(rule, windows[dataflowId] ?? { exported: 0, failed: 0, latency: {} });
        if (!reading) continue;
        const alertId = `${rule.id}:${dataflowId}`;
        const base = { alertId, rule: rule.id, kind: rule.kind, dataflowId, value: reading.value, threshold: reading.threshold, windowMs: rule.windowMs, message: reading.message };
        if (reading.firing && !active.has(alertId)) {
          if (await o.state.raise({ ...base, since: at })) notify(rule, { ...base, state: 'raised', at });
        } else if (!reading.firing && active.has(alertId)) {
          if (await o.state.clear(alertId)) notify(rule, { ...base, state: 'cleared', at });
        }
      }
    }
    o.metrics?.setAlertsActive((await o.state.active()).length);
  };

  const evaluate = (): Promise<void> => {
    running ??= once()
      .catch((err: unknown) => {
        if (Date.now() - lastError > 30_000) {
          lastError = Date.now();
          o.logger.warn({ err }, 'alerts: evaluation failed; trying again at the next one');
        }
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };

  const timer = o.timer === false ? undefined : setInterval(() => void evaluate(), o.config.evaluateEveryMs);
  timer?.unref();
  return {
    evaluate,
    async close() {
      if (timer) clearInterval(timer);
      await running;
      await Promise.allSettled(o.channels.map((c) => c.close()));
    },
  };
}
