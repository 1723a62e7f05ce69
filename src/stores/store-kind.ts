/**
 * The one dispatch on a config's store kind for what lives beside the snapshots (the dataflow
 * figures, the alert state): each opener loads its module only when called, so one host never
 * loads the Redis client.
 */

/** What of a config the dispatch reads. */
export interface StoreKindConfig {
  store: { kind: string; url?: string; keyPrefix?: string; path?: string };
  source: { kind: string; durable?: string };
}

/** How to open the thing for each store kind. */
export interface StoreKindOpeners<T> {
  /** A pool: Redis at `url`; `pool` is its name, the JetStream durable. */
  redis(o: { url: string; keyPrefix?: string; pool?: string }): Promise<T>;
  /** One host, durable: the local store's folder. */
  local(o: { path: string }): Promise<T>;
  /** Anything else (`memory`): in this process. */
  memory(): Promise<T>;
}

/**
 * Opens what `config`'s store kind asks for: Redis for a pool, the local store's folder on one
 * host, else one in this process.
 *
 * @example
 * openByStoreKind(config, { redis: async (o) => new RedisX(o), local: async (o) => new LocalX(o), memory: async () => new MemoryX() })
 */
export function openByStoreKind<T>(config: StoreKindConfig, open: StoreKindOpeners<T>): Promise<T> {
  const s = config.store;
  if (s.kind === 'redis' && s.url !== undefined) return open.redis({ url: s.url, keyPrefix: s.keyPrefix, pool: config.source.durable });
  if (s.kind === 'local' && s.path !== undefined) return open.local({ path: s.path });
  return open.memory();
}
