/**
 * Startup of a worker on the backbone: wait until NATS and Redis answer (`waitForBackbone`),
 * then exit 1 after `worker.startupTimeoutMs` so a supervisor restarts it.
 */
import { Redis } from 'ioredis';
import type { AppConfig } from '../config/load.js';
import { StartupError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { connectNats } from '../streams/nats.js';

/** Backoff of `waitForBackbone`. */
const STARTUP_RETRY = { firstDelayMs: 250, maxDelayMs: 5_000, connectTimeoutMs: 2_000 } as const;

/**
 * Waits until every server the config needs answers: NATS (a JetStream source or failed-request
 * stores) and Redis (the store). Retries with a doubling delay (250 ms → 5 s), logging each
 * failed try, for `worker.startupTimeoutMs`; then throws `StartupError` (exit 1, so a
 * supervisor restarts the worker). Every probe connection is closed before it returns.
 */
export async function waitForBackbone(config: AppConfig, logger: Logger): Promise<void> {
  const deadline = Date.now() + config.worker.startupTimeoutMs;
  const nats = new Set<string>();
  if (config.source.kind === 'jetstream') nats.add(config.source.servers.join(','));
  if (config.failedRequests.kind === 'jetstream') nats.add(config.failedRequests.servers.join(','));
  const redisUrl = config.store.kind === 'redis' ? config.store.url : undefined;
  const missing = async (): Promise<string[]> => {
    const down: string[] = [];
    for (const servers of nats) {
      try {
        const h = await connectNats({ servers, name: 'http-destination:startup', connectTimeoutMs: STARTUP_RETRY.connectTimeoutMs });
        await h.close().catch(() => {});
      } catch (err) {
        down.push(err instanceof Error ? err.message : String(err));
      }
    }
    if (redisUrl !== undefined) {
      const redis = new Redis(redisUrl, {
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        enableOfflineQueue: false,
        connectTimeout: STARTUP_RETRY.connectTimeoutMs,
        // A Redis that accepts the connection but does not answer (stopped, overloaded) is a
        // failed try too: logged and retried, not waited for without end.
        commandTimeout: STARTUP_RETRY.connectTimeoutMs,
        retryStrategy: () => null,
      });
      redis.on('error', () => {});
      try {
        await redis.connect();
        await redis.ping();
      } catch (err) {
        down.push(`cannot reach redis at ${redactRedisUrl(redisUrl)}: ${(err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err))}`);
      } finally {
        redis.disconnect();
      }
    }
    return down;
  };
  let delay: number = STARTUP_RETRY.firstDelayMs;
  for (let attempt = 1; ; attempt++) {
    const down = await missing();
    if (down.length === 0) {
      if (attempt > 1) logger.info({ attempt }, 'startup: the backbone answers');
      return;
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new StartupError(`gave up after ${attempt} tries in ${config.worker.startupTimeoutMs} ms (worker.startupTimeoutMs): ${down.join('; ')}`);
    }
    const wait = Math.min(delay, left);
    logger.warn({ attempt, retryInMs: wait, down }, 'startup: backbone not reachable yet; retrying');
    await new Promise((r) => setTimeout(r, wait));
    delay = Math.min(delay * 2, STARTUP_RETRY.maxDelayMs);
  }
}

function redactRedisUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//');
}
