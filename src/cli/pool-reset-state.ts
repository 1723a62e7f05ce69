/**
 * `http-destination pool reset-state --config F`: the operator action after a store loss
 * (issue 13; README, Operations: store loss). Workers that found the Redis store's epoch
 * marker missing or changed stop applying and exporting (`ERR_STORE_LOST`); this writes a new
 * marker, and they resume within about a second, over what Redis holds now.
 */
import { Option, type Command } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { StoreError, UsageError } from '../errors.js';
import { createRedactor } from '../observability/redact.js';

/** Adds `reset-state` to the `pool` command. */
export function registerPoolResetState(pool: Command): void {
  pool
    .command('reset-state')
    .description("after a store loss (ERR_STORE_LOST): re-initialise the Redis store's epoch marker so the workers apply and export again")
    .addOption(new Option('-c, --config <file>', 'configuration file (YAML or JSON)').makeOptionMandatory())
    .action(async (o: { config: string }) => {
      const r = await poolResetState(o);
      process.stdout.write(
        `store epoch re-initialised (was ${r.previous ?? 'missing'}, now ${r.epoch}); the workers resume within about a second.\n` +
          'Next: have every profile of every mapped audience sent again (README, Operations: store loss).\n',
      );
    });
}

/** Writes a new epoch marker in the config's Redis store; returns the one it replaced. */
export async function poolResetState(o: { config: string }): Promise<{ previous: string | null; epoch: string }> {
  const config = loadConfigFile(o.config);
  if (config.store.kind !== 'redis') {
    throw new UsageError(`pool reset-state needs store.kind: redis in the config (it is ${config.store.kind})`);
  }
  // Loaded here, not with the command line: only a pool needs the Redis client.
  const [{ Redis }, { resetStoreEpoch }] = await Promise.all([import('ioredis'), import('../stores/redis-snapshot-store.js')]);
  const redis = new Redis(config.store.url, { maxRetriesPerRequest: 1, lazyConnect: true });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return await resetStoreEpoch(redis, config.store.keyPrefix);
  } catch (err) {
    const reason = createRedactor(config.secrets).text(err instanceof Error ? err.message : String(err));
    throw new StoreError(`pool reset-state: ${reason}`);
  } finally {
    redis.disconnect();
  }
}
