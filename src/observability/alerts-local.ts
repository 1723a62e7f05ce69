/**
 * The active alerts of one host on the embedded default (`store.kind: local`): the named
 * database `alerts` of the local store's LMDB environment, alert id → the active alert. Raising
 * and clearing are each one write transaction (LMDB: one writer at a time, across processes),
 * so a transition is claimed once; `status` in another process lists what the running `run`
 * raised, and a `run` started later clears what an earlier one left raised once the condition
 * no longer holds (as the pool's Redis hash does).
 */
import type { Database } from 'lmdb';
import { openLocalEnv, type LocalEnv } from '../stores/local-env.js';
import { isCleared, mayRaise, type ActiveAlert, type AlertRecord, type AlertStateStore } from './alerts.js';

/**
 * @example
 * const state = new LocalAlertStateStore({ path: config.store.path });
 * if (await state.raise(alert)) notify(alert);
 */
export class LocalAlertStateStore implements AlertStateStore {
  private readonly env: LocalEnv;
  private readonly db: Database<unknown, string>;

  constructor(options: { path: string }) {
    this.env = openLocalEnv(options.path);
    this.db = this.env.db('alerts');
  }

  async raise(alert: ActiveAlert, evaluatedAt: number): Promise<boolean> {
    let raised = false;
    await this.env.root.transaction(() => {
      if (!mayRaise(this.db.get(alert.alertId) as AlertRecord | undefined, evaluatedAt)) return;
      this.db.put(alert.alertId, alert);
      raised = true;
    });
    return raised;
  }

  async clear(alertId: string, evaluatedAt: number): Promise<ActiveAlert | undefined> {
    let removed: ActiveAlert | undefined;
    await this.env.root.transaction(() => {
      const current = this.db.get(alertId) as AlertRecord | undefined;
      if (current === undefined || isCleared(current)) return;
      removed = current;
      this.db.put(alertId, { clearedAt: evaluatedAt });
    });
    return removed;
  }

  async active(): Promise<ActiveAlert[]> {
    const out: ActiveAlert[] = [];
    for (const { value } of this.db.getRange()) if (!isCleared(value as AlertRecord)) out.push(value as ActiveAlert);
    return out.sort((a, b) => a.alertId.localeCompare(b.alertId));
  }

  close(): Promise<void> {
    return this.env.release();
  }
}
