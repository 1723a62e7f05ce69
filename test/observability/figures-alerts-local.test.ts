/**
 * Alerts on the embedded default: the alert engine over the local store's figures
 * (`LocalFiguresStore.window`) and its active alerts in the same LMDB folder
 * (`LocalAlertStateStore`): raised once, cleared once, kept for a later run (which clears it
 * rather than raising it again), and one claim per transition when two handles race.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { AlertsConfig } from '../../src/config/schema.js';
import { LocalAlertStateStore } from '../../src/observability/alerts-local.js';
import { openAlertStateStore } from '../../src/observability/alert-state.js';
import { startAlerts, type ActiveAlert, type AlertChannel, type AlertMessage } from '../../src/observability/alerts.js';
import { LocalFiguresStore } from '../../src/observability/figures-local.js';
import type { FiguresDelta } from '../../src/observability/figures.js';
import { createLogger } from '../../src/observability/logger.js';

const silent = createLogger({ level: 'silent' });
const dirs: string[] = [];
async function freshPath(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'figures-alerts-'));
  dirs.push(d);
  return join(d, 'state');
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A channel that keeps what it is sent. */
function recorder(): AlertChannel & { messages: AlertMessage[] } {
  const messages: AlertMessage[] = [];
  return { id: 'rec', messages, send: (m) => void messages.push(m), close: async () => {} };
}

const config: AlertsConfig = {
  channels: [],
  rules: [{ id: 'failures', kind: 'failedRequests', threshold: 3, windowMs: 60_000, channels: ['rec'] }],
  evaluateEveryMs: 5_000,
};
const failures = (n: number): FiguresDelta => ({
  rejected: 0,
  flows: [{ dataflowId: 'flow-1', counts: { received: n, exported: 0, excluded: 0, failed: n }, latency: {}, lastDeliveredAt: 0 }],
});

describe('alerts on the local store', () => {
  it('raises once and clears once over the local figures; a later run sees the alert active and clears it instead of raising it again', async () => {
    const path = await freshPath();
    let now = Date.UTC(2026, 11, 5, 10, 0, 0);
    const figures = new LocalFiguresStore({ path });
    const state = await openAlertStateStore({ store: { kind: 'local', path }, source: { kind: 'file' } });
    expect(state).toBeInstanceOf(LocalAlertStateStore);
    const rec = recorder();
    const engine = startAlerts({ config, dataflowIds: ['flow-1'], figures, state, channels: [rec], logger: silent, now: () => now, timer: false });
    await figures.add(failures(2), now);
    await engine.evaluate();
    expect(rec.messages).toEqual([]);
    await figures.add(failures(1), now + 1_000);
    now += 5_000;
    await engine.evaluate();
    await engine.evaluate();
    expect(rec.messages.map((m) => [m.state, m.value])).toEqual([['raised', 3]]);
    await engine.close();
    await Promise.all([figures.close(), state.close()]);

    // A later run on the same folder: the alert is still active there; nothing raised again.
    const figures2 = new LocalFiguresStore({ path });
    const state2 = new LocalAlertStateStore({ path });
    expect((await state2.active()).map((a) => a.alertId)).toEqual(['failures:flow-1']);
    const rec2 = recorder();
    const engine2 = startAlerts({ config, dataflowIds: ['flow-1'], figures: figures2, state: state2, channels: [rec2], logger: silent, now: () => now, timer: false });
    await engine2.evaluate();
    expect(rec2.messages).toEqual([]);
    // The failures leave the 60 s window: cleared once.
    now += 70_000;
    await engine2.evaluate();
    await engine2.evaluate();
    expect(rec2.messages.map((m) => [m.alertId, m.state])).toEqual([['failures:flow-1', 'cleared']]);
    expect(await state2.active()).toEqual([]);
    await engine2.close();
    await Promise.all([figures2.close(), state2.close()]);
  });

  it('claims a raise and a clear once when two handles race', async () => {
    const path = await freshPath();
    const a = new LocalAlertStateStore({ path });
    const b = new LocalAlertStateStore({ path });
    const alert: ActiveAlert = { alertId: 'x:flow-1', rule: 'x', kind: 'failedRequests', dataflowId: 'flow-1', since: new Date(0).toISOString(), value: 1, threshold: 1, windowMs: 60_000, message: 'm' };
    try {
      const raised = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).raise({ ...alert, value: i }, 1_000)));
      expect(raised.filter(Boolean)).toHaveLength(1);
      expect(await b.active()).toEqual([{ ...alert, value: raised.indexOf(true) }]);
      const cleared = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).clear(alert.alertId, 2_000)));
      expect(cleared.filter((c) => c !== undefined)).toHaveLength(1);
      expect(await a.active()).toEqual([]);
      // A raise from an evaluation that started before that clear is stale: refused; a later one raises.
      expect(await b.raise(alert, 1_999)).toBe(false);
      expect(await a.active()).toEqual([]);
      expect(await b.raise(alert, 2_001)).toBe(true);
      expect(await a.active()).toEqual([alert]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
