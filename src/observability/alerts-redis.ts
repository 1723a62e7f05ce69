/**
 * The pool's active alerts in Redis: one hash `<keyPrefix>alerts:<pool>`, alert id → JSON.
 * Raising is HSETNX and clearing a compare-free HDEL whose reply says who removed it, so of all
 * the workers that see a condition start or end, exactly one notifies.
 */
import { Redis } from 'ioredis';
import type { ActiveAlert, AlertStateStore } from './alerts.js';

/** KEYS[1] hash; ARGV[1] alert id. Returns the removed value, or false. */
const CLEAR_LUA = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
`;

export class RedisAlertStateStore implements AlertStateStore {
  private readonly redis: Redis;
  private readonly key: string;
  constructor(o: { url: string; keyPrefix?: string; pool?: string }) {
    this.redis = new Redis(o.url, { maxRetriesPerRequest: 1 });
    this.redis.on('error', () => {});
    this.key = `${o.keyPrefix ?? 'hd:'}alerts:${o.pool ?? 'default'}`;
  }
  async raise(alert: ActiveAlert): Promise<boolean> {
    return (await this.redis.hsetnx(this.key, alert.alertId, JSON.stringify(alert))) === 1;
  }
  async clear(alertId: string): Promise<ActiveAlert | undefined> {
    const v = (await this.redis.eval(CLEAR_LUA, 1, this.key, alertId)) as string | null;
    return v ? (JSON.parse(v) as ActiveAlert) : undefined;
  }
  async active(): Promise<ActiveAlert[]> {
    const all = await this.redis.hgetall(this.key);
    return Object.values(all)
      .map((v) => JSON.parse(v) as ActiveAlert)
      .sort((a, b) => a.alertId.localeCompare(b.alertId));
  }
  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

/** The alert state store of a config: Redis for a pool, the local store's folder on one host, else one in this process. */
export async function openAlertStateStore(config: {
  store: { kind: string; url?: string; keyPrefix?: string; path?: string };
  source: { kind: string; durable?: string };
}): Promise<AlertStateStore> {
  if (config.store.kind === 'redis' && config.store.url !== undefined) {
    return new RedisAlertStateStore({ url: config.store.url, keyPrefix: config.store.keyPrefix, pool: config.source.durable });
  }
  if (config.store.kind === 'local' && config.store.path !== undefined) {
    const { LocalAlertStateStore } = await import('./alerts-local.js');
    return new LocalAlertStateStore({ path: config.store.path });
  }
  const { MemoryAlertStateStore } = await import('./alerts.js');
  return new MemoryAlertStateStore();
}
