/**
 * One worker of a pool, for the pool-wide rate limit test: a `redisTokenBucket` on its own
 * ioredis client, asked for permits as fast as it hands them out, for a fixed time.
 *
 * Run as `node --import tsx test/support/rate-limit-worker.ts '<json config>'` with the config
 * `{ url, key, rate, durationMs, concurrency? }`. Protocol on stdio: the worker prints
 * `ready` once its client answers, starts when a line `go` arrives on stdin, and at the end
 * prints one JSON line `{ "times": [grant times, ms since the epoch, sub-ms], "errors": n }`
 * and exits 0.
 */
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import type { Subscription } from 'rxjs';
import { redisTokenBucket } from '../../src/stores/redis-rate-limiter.js';

interface WorkerConfig {
  url: string;
  key: string;
  rate: number;
  durationMs: number;
  /** Permits asked for at once. @default 64 */
  concurrency?: number;
}

/** Wall-clock time in ms with sub-ms precision, comparable across processes of one host. */
const wallClock = (): number => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '') as WorkerConfig;
  const redis = new Redis(config.url, {
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(times * 50, 1_000),
  });
  let errors = 0;
  redis.on('error', () => {});
  await redis.ping();
  const limiter = redisTokenBucket({ redis, key: config.key, rate: config.rate, onError: () => errors++ });

  const lines = createInterface({ input: process.stdin });
  const go = new Promise<void>((resolve) => lines.on('line', (line) => line.trim() === 'go' && resolve()));
  process.stdout.write('ready\n');
  await go;
  lines.close();

  const times: number[] = [];
  const end = wallClock() + config.durationMs;
  const open = new Set<Subscription>();
  let stopped = false;
  const ask = (): void => {
    if (stopped) return;
    let sub: Subscription | undefined;
    let done = false;
    sub = limiter.acquire().subscribe(() => {
      done = true;
      if (sub) open.delete(sub);
      const now = wallClock();
      if (now < end) times.push(now);
      ask();
    });
    if (!done) open.add(sub);
  };
  for (let i = 0; i < (config.concurrency ?? 64); i++) ask();
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, end - wallClock())));
  stopped = true;
  for (const sub of open) sub.unsubscribe();
  limiter.close();
  process.stdout.write(`${JSON.stringify({ times, errors })}\n`);
  await redis.quit();
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
