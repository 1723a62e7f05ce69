/**
 * The alert state store of a config, each kind loaded only when the config asks for it (the
 * Redis client is not loaded on one host).
 */
import { openByStoreKind, type StoreKindConfig } from '../stores/store-kind.js';
import type { AlertStateStore } from './alerts.js';

/** The alert state store of a config: Redis for a pool, the local store's folder on one host, else one in this process. */
export function openAlertStateStore(config: StoreKindConfig): Promise<AlertStateStore> {
  return openByStoreKind<AlertStateStore>(config, {
    redis: async (o) => new (await import('./alerts-redis.js')).RedisAlertStateStore(o),
    local: async (o) => new (await import('./alerts-local.js')).LocalAlertStateStore(o),
    memory: async () => new (await import('./alerts.js')).MemoryAlertStateStore(),
  });
}
