/**
 * Alerts (SPEC §10): rules over the pool's dataflow figures (`FiguresStore.window`), evaluated
 * every `alerts.evaluateEveryMs` (≤ 5 s); an alert is raised once when its condition holds at
 * an evaluation and cleared once when it no longer does. In a pool every worker evaluates the
 * same pool-wide figures, and the transition is claimed atomically in the alert state store
 * (Redis): only the worker that wins it logs and notifies, so there is one alert per condition.
 * Notifications go to the log (warning on raise, info on clear) and to the rule's channels
 * (`alert-channels.ts`) without ever waiting on them.
 *
 * `delay` rules read the source lag instead (`source-lag.ts`): the age of the oldest update
 * waiting in the source, unacknowledged or not yet read. A source message is acknowledged once
 * every export it caused has settled, so that age is the same for every dataflow of the rule
 * (each gets its alert, as with the other rules). In a pool every worker measures the whole
 * stream, so each judges the pool's condition, and the claim makes it one alert.
 */
import type { AlertRuleConfig, AlertsConfig } from '../config/schema.js';
import { latencyQuantileMs, type FiguresStore, type WindowFigures } from './figures.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { LagTotals } from './source-lag.js';

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

/**
 * Where active alerts live; `raise`/`clear` are atomic claims (true: this caller made the
 * transition). A clear leaves the time of its evaluation behind, and a raise from an evaluation
 * that started before it is refused: in a pool, a worker whose reading predates another
 * worker's clear cannot raise the alert again from that stale reading (no flapping).
 */
export interface AlertStateStore {
  /** @param evaluatedAt when the data the evaluation judged was observed (its start, or the source-lag measurement's time; ms since the epoch) */
  raise(alert: ActiveAlert, evaluatedAt: number): Promise<boolean>;
  /** Removes the alert; the removed record when this caller removed it. @param evaluatedAt as for `raise` */
  clear(alertId: string, evaluatedAt: number): Promise<ActiveAlert | undefined>;
  active(): Promise<ActiveAlert[]>;
  close(): Promise<void>;
}

/** What a state store keeps per alert id: the active alert, or when it was last cleared. */
export type AlertRecord = ActiveAlert | { clearedAt: number };

export const isCleared = (r: AlertRecord | undefined): r is { clearedAt: number } => r !== undefined && 'clearedAt' in r;

/** Whether a raise from an evaluation started at `evaluatedAt` may replace `current`. */
export const mayRaise = (current: AlertRecord | undefined, evaluatedAt: number): boolean =>
  current === undefined || (isCleared(current) && current.clearedAt < evaluatedAt);

export class MemoryAlertStateStore implements AlertStateStore {
  private readonly alerts = new Map<string, AlertRecord>();
  async raise(alert: ActiveAlert, evaluatedAt: number): Promise<boolean> {
    if (!mayRaise(this.alerts.get(alert.alertId), evaluatedAt)) return false;
    this.alerts.set(alert.alertId, alert);
    return true;
  }
  async clear(alertId: string, evaluatedAt: number): Promise<ActiveAlert | undefined> {
    const a = this.alerts.get(alertId);
    if (a === undefined || isCleared(a)) return undefined;
    this.alerts.set(alertId, { clearedAt: evaluatedAt });
    return a;
  }
  async active(): Promise<ActiveAlert[]> {
    return [...this.alerts.values()].filter((a): a is ActiveAlert => !isCleared(a)).sort((a, b) => a.alertId.localeCompare(b.alertId));
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
      return undefined; // read from the source lag (`readDelay`), not from the figures
  }
}

/** Evaluates a `delay` rule against the source lag. */
export function readDelay(rule: Extract<AlertRuleConfig, { kind: 'delay' }>, lag: LagTotals): RuleReading {
  const age = lag.oldestWaitingMs;
  const waiting = `${lag.pending} not yet read, ${lag.ackPending} unacknowledged`;
  return {
    value: age,
    threshold: rule.thresholdMs,
    firing: age > rule.thresholdMs,
    message: lag.pending + lag.ackPending === 0 ? 'no update waiting' : `the oldest update waiting is ${(age / 1000).toFixed(1)} s old (${waiting})`,
  };
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
  /**
   * The source lag for `delay` rules, once per evaluation, with when it was measured (`at`, ms);
   * undefined (or a throw): unknown now, the rules' alerts keep their state. Without it `delay`
   * rules never fire.
   */
  delay?: () => Promise<(LagTotals & { at?: number }) | undefined>;
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
    let lag: Promise<(LagTotals & { at?: number }) | undefined> | undefined;
    /** The rule's readings per dataflow, and when the data they judge was observed. */
    const readings = async (rule: AlertRuleConfig, ids: readonly string[]): Promise<{ observedAt: number; byFlow: Map<string, RuleReading> }> => {
      const byFlow = new Map<string, RuleReading>();
      if (rule.kind === 'delay') {
        lag ??= o.delay ? o.delay().catch(() => undefined) : Promise.resolve(undefined);
        const totals = await lag;
        if (totals) for (const id of ids) byFlow.set(id, readDelay(rule, totals));
        return { observedAt: Math.min(t, totals?.at ?? t), byFlow };
      }
      const windows = await o.figures.window(ids, t - rule.windowMs, t + 1);
      for (const id of ids) {
        const reading = readRule(rule, windows[id] ?? { exported: 0, failed: 0, latency: {} });
        if (reading) byFlow.set(id, reading);
      }
      return { observedAt: t, byFlow };
    };
    for (const rule of o.config.rules) {
      const ids = rule.dataflows ?? o.dataflowIds;
      const { observedAt, byFlow } = await readings(rule, ids);
      for (const [dataflowId, reading] of byFlow) {
        const alertId = `${rule.id}:${dataflowId}`;
        const base = { alertId, rule: rule.id, kind: rule.kind, dataflowId, value: reading.value, threshold: reading.threshold, ...('windowMs' in rule ? { windowMs: rule.windowMs } : {}), message: reading.message };
        if (reading.firing && !active.has(alertId)) {
          if (await o.state.raise({ ...base, since: at }, observedAt)) notify(rule, { ...base, state: 'raised', at });
        } else if (!reading.firing && active.has(alertId)) {
          if (await o.state.clear(alertId, observedAt)) notify(rule, { ...base, state: 'cleared', at });
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
