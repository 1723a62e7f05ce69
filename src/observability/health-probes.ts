/**
 * Readiness probes of the real backbone (loaded only when a config uses it): Redis answers
 * PING, NATS answers a flush, the pool worker holds a lease or is a live member.
 * Each probe has its own small connection, so what it reports does not depend on (or load) the
 * connections that carry the work.
 */
import { Redis } from 'ioredis';
import { connectNats, redactServer, serverList, type NatsHandle } from '../streams/nats.js';
import type { PoolCoordinator } from '../worker/pool.js';
import type { AppConfig } from '../config/load.js';
import { periodicCheck, type HealthCheck } from './health.js';

/** A URL without its credentials, for a reason shown on /readyz. */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return 'redis';
  }
}

/** Redis answers PING (its own connection, no offline queue: a gone server fails at once). */
export function redisCheck(url: string, options: { intervalMs?: number } = {}): HealthCheck {
  const redis = new Redis(url, {
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1_000,
    retryStrategy: () => 500,
  });
  redis.on('error', () => {});
  const where = safeUrl(url);
  return periodicCheck(
    'redis',
    async () => {
      try {
        await redis.ping();
      } catch {
        throw new Error(`redis ${where} does not answer (${redis.status})`);
      }
    },
    { intervalMs: options.intervalMs, onClose: () => void redis.disconnect() },
  );
}

/** NATS answers a flush (a PING/PONG round trip) on a connection of its own. */
export function natsCheck(servers: string | string[], options: { intervalMs?: number } = {}): HealthCheck {
  const where = serverList(servers).map(redactServer).join(',');
  let handle: NatsHandle | undefined;
  let connecting: Promise<void> | undefined;
  let closed = false;
  const connect = (): Promise<void> =>
    (connecting ??= connectNats({ servers, name: 'http-destination:health', connectTimeoutMs: 1_000, reconnectTimeWaitMs: 500, pingIntervalMs: 2_000 })
      .then((h) => {
        if (closed) void h.close();
        else handle = h;
      })
      .finally(() => {
        connecting = undefined;
      }));
  return periodicCheck(
    'nats',
    async () => {
      if (!handle) {
        await connect().catch(() => {
          throw new Error(`nats ${where} does not answer`);
        });
      }
      if (!handle || handle.nc.isClosed()) throw new Error(`nats ${where} does not answer`);
      await handle.nc.flush().catch(() => {
        throw new Error(`nats ${where} does not answer`);
      });
    },
    {
      intervalMs: options.intervalMs,
      timeoutMs: 1_000,
      onClose: async () => {
        closed = true;
        await handle?.close().catch(() => {});
      },
    },
  );
}

/**
 * Pool: this worker holds at least one partition lease, or is a live member of the pool (a
 * healthy join: with more workers than partitions some hold none).
 */
export function poolCheck(coordinator: PoolCoordinator, options: { intervalMs?: number } = {}): HealthCheck {
  return periodicCheck(
    'pool',
    async () => {
      if (coordinator.held().length > 0) return;
      const status = await coordinator.status();
      const me = status.workers.find((w) => w.id === coordinator.workerId);
      if (!me?.live) throw new Error(`worker ${coordinator.workerId} holds no partition and is not a live member of pool ${status.pool}`);
    },
    { intervalMs: options.intervalMs },
  );
}

/**
 * The readiness checks of a config: Redis (store), NATS (JetStream source and failed stores,
 * once per server list), the pool lease state; a file source and the memory store need none.
 */
export function checksFor(
  config: Pick<AppConfig, 'source' | 'store' | 'failedRequests'>,
  deps: { coordinator?: PoolCoordinator; intervalMs?: number } = {},
): HealthCheck[] {
  const checks: HealthCheck[] = [];
  const o = { intervalMs: deps.intervalMs };
  if (config.store.kind === 'redis') checks.push(redisCheck(config.store.url, o));
  const natsLists = new Set<string>();
  if (config.source.kind === 'jetstream') natsLists.add(config.source.servers.join(','));
  if (config.failedRequests.kind === 'jetstream') natsLists.add(config.failedRequests.servers.join(','));
  for (const servers of natsLists) checks.push(natsCheck(servers, o));
  if (deps.coordinator) checks.push(poolCheck(deps.coordinator, o));
  return checks;
}
