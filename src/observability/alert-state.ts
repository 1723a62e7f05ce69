/**
 * The alert state store of a config, each kind loaded only when the config asks for it (the
 * Redis client is not loaded on one host).
 */
import type { AlertStateStore } from './alerts.js';

/** The alert state store of a config: Redis for a pool, the local store's folder on one host, else one in this process. */
export async function openAlertStateStore(config: {
  store: { kind: string; url?: string; keyPrefix?: string; path?: string };
  source: { kind: string; durable?: string };
}): Promise<AlertStateStore> {
  if (config.store.kind === 'redis' && config.store.url !== undefined) {
    const { RedisAlertStateStore } = await import('./alerts-redis.js');
    return new RedisAlertStateStore({ url: config.store.url, keyPrefix: config.store.keyPrefix, pool: config.source.durable });
  }
  if (config.store.kind === 'local' && config.store.path !== undefined) {
    const { LocalAlertStateStore } = await import('./alerts-local.js');
    return new LocalAlertStateStore({ path: config.store.path });
  }
  const { MemoryAlertStateStore } = await import('./alerts.js');
  return new MemoryAlertStateStore();
}
