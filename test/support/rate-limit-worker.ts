/**
 * One worker of a pool, for the pool-wide rate limit test: a `redisSendSlots` on its own
 * ioredis client, asked for permits as fast as it hands them out, for a fixed time.
 *
 * Run as `node --import tsx test/support/rate-limit-worker.ts '<json config>'` with the config
 * `{ url, key, rate, durationMs, concurrency?, stall? }`. Protocol on stdio: the worker prints
 * `ready` once its client answers, starts when a line `go` arrives on stdin, and at the end
 * prints one JSON line `{ "times": [grant times, ms since the epoch, sub-ms], "errors": n,
 * "stallsMs": [the loop's stalls over 10 ms, with `stall`] }` and exits 0.
 */
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { Redis } from 'ioredis';
import { Agent, request } from 'undici';
import type { Subscription } from 'rxjs';
import { redisSendSlots } from '../../src/stores/redis-rate-limiter.js';
import { watchLoopStalls } from './loop-stalls.js';

interface WorkerConfig {
  url: string;
  key: string;
  rate: number;
  durationMs: number;
  /** Permits asked for at once. @default 64 */
  concurrency?: number;
  /**
   * Stalls of the event loop (a busy wait, as a CPU-starved worker): after `firstMs`, one of
   * `blocksMs` (in turn) every `everyMs`. @default none
   */
  stall?: { blocksMs: number[]; everyMs: number; firstMs?: number };
  /**
   * Send a small POST to this URL on every permit (keep-alive, up to 64 sockets), as a worker
   * does: the receiver then measures what an endpoint sees. @default none
   */
  sendTo?: string;
}

/**
 * Blocks the event loop for `blocksMs[0]`, `blocksMs[1]`, … ms (in turn), one every `everyMs`
 * (from the start of one to the next), first after `firstMs`, until the returned stop is called.
 * Stop returns every stall of the loop longer than 10 ms, these and any other (a loaded machine
 * adds its own), as seen by a 2-ms ticker.
 */
export function stallEventLoop(stall: { blocksMs: number[]; everyMs: number; firstMs?: number }): () => number[] {
  let stopped = false;
  let n = 0;
  let timer: NodeJS.Timeout;
  const watch = watchLoopStalls(10);
  const block = (): void => {
    if (stopped) return;
    const ms = stall.blocksMs[n++ % stall.blocksMs.length];
    const start = performance.now();
    while (performance.now() - start < ms) {
      // busy: nothing else runs in this process meanwhile
    }
    timer = setTimeout(block, Math.max(1, stall.everyMs - ms));
  };
  timer = setTimeout(block, stall.firstMs ?? 0);
  return () => {
    stopped = true;
    clearTimeout(timer);
    return watch.stop();
  };
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
  const limiter = redisSendSlots({ redis, key: config.key, rate: config.rate, onError: () => errors++ });

  const lines = createInterface({ input: process.stdin });
  const go = new Promise<void>((resolve) => lines.on('line', (line) => line.trim() === 'go' && resolve()));
  process.stdout.write('ready\n');
  await go;
  lines.close();

  const times: number[] = [];
  const end = wallClock() + config.durationMs;
  const agent = config.sendTo ? new Agent({ connections: 64, pipelining: 1 }) : undefined;
  const sends: Array<Promise<unknown>> = [];
  const send = (): void => {
    if (!config.sendTo || !agent) return;
    sends.push(
      request(config.sendTo, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' }, dispatcher: agent })
        .then((res) => res.body.dump())
        .catch(() => errors++),
    );
  };
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
      if (now < end) {
        times.push(now);
        send();
      }
      ask();
    });
    if (!done) open.add(sub);
  };
  for (let i = 0; i < (config.concurrency ?? 64); i++) ask();
  const stopStalls = config.stall ? stallEventLoop(config.stall) : (): number[] => [];
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, end - wallClock())));
  const stallsMs = stopStalls();
  stopped = true;
  for (const sub of open) sub.unsubscribe();
  limiter.close();
  await Promise.all(sends);
  await agent?.close();
  process.stdout.write(`${JSON.stringify({ times, errors, stallsMs })}\n`);
  await redis.quit();
}

// Run only as a script: the test imports `stallEventLoop` from here too.
if (process.argv[1]?.endsWith('rate-limit-worker.ts')) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
