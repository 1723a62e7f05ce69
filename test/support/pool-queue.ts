/**
 * Test support for the pool's retry queues (test/pool/retry-queue.test.ts): a pool config with
 * TWO dataflows on the same updates (`flow-ok` → `rx.url/<name>-ok`, `flow-bad` →
 * `rx.url/<name>-bad`, both mapping `aud-1` with `bench.pid` and `bench.seq`), readers of the
 * Redis queue and marks, and a wait on a worker's log.
 *
 * Builds on test/support/backbone.ts and test/support/pool.ts (servers, receiver, workload).
 */
import { Redis } from 'ioredis';
import { AUD_1, backboneConfig, runOnce, sleep, spawnCli, type Backbone, type CliProcess, type RecordingReceiver } from './backbone.js';
import { createStream, parseLogs, POOL, type LogLine } from './pool.js';

export interface TwoFlowPool {
  cfg: string;
  name: string;
  prefix: string;
  okPath: string;
  badPath: string;
  start(): CliProcess;
  /** The stream made as `publish` does, then an empty `run --once` (partition count recorded). */
  prime(): Promise<void>;
}

/**
 * A pool (`source.partitions` 16, `leaseMs` 1500) of two dataflows on the same updates; the
 * destination of `flow-bad` has `bad` (e.g. a short `timeoutMs`).
 */
export function twoFlowPool(o: { bb: Backbone; rx: RecordingReceiver; name: string; bad?: object; worker?: object }): TwoFlowPool {
  const dest = (id: string, extra: object = {}) => ({ id, endpoint: `${o.rx.url}/${o.name}-${id}`, retry: POOL.retry, ...extra });
  const flow = (id: string, destination: string) => ({
    id,
    destination,
    audiences: [{ id: 'aud-1', mappingCreatedAt: 10, mappingUpdatedAt: 11 }],
    attributes: ['bench.pid', 'bench.seq'],
  });
  const config = backboneConfig({
    bb: o.bb,
    name: o.name,
    audiences: [AUD_1],
    destinations: [dest('ok'), dest('bad', o.bad)],
    dataflows: [flow('flow-ok', 'ok'), flow('flow-bad', 'bad')],
    ackWaitMs: POOL.ackWaitMs,
    worker: { drainTimeoutMs: 5_000, ...(o.worker ?? {}) },
    logLevel: 'info',
  });
  const source = config.source as Record<string, unknown>;
  Object.assign(source, { partitions: POOL.partitions, leaseMs: POOL.leaseMs });
  const cfg = o.bb.writeFile(`${o.name}.json`, config);
  return {
    cfg,
    name: o.name,
    prefix: `${o.name}:`,
    okPath: `/${o.name}-ok`,
    badPath: `/${o.name}-bad`,
    start: () => spawnCli(['run', '--config', cfg]),
    async prime() {
      await createStream(o.bb, source.stream as string, source.subject as string);
      const r = await runOnce(cfg);
      if (r.eventsRead !== 0) throw new Error(`prime: expected an empty run, got ${JSON.stringify(r)}`);
    },
  };
}

/** Entries in the Redis retry queue of a dataflow (`<prefix>rq:e:<dataflow>`). */
export async function queuedCount(redisUrl: string, prefix: string, dataflowId: string): Promise<number> {
  const r = new Redis(redisUrl);
  try {
    return await r.hlen(`${prefix}rq:e:${dataflowId}`);
  } finally {
    r.disconnect();
  }
}

/** Polls a worker's log until a line matches (throws after `timeoutMs`). */
export async function waitForLog(w: CliProcess, pred: (l: LogLine) => boolean, timeoutMs: number, what: string): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = parseLogs(w.stderr).find(pred);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; log tail:\n${w.stderr.slice(-3_000)}`);
    await sleep(50);
  }
}

/** Polls `pred` until true (throws after `timeoutMs`). */
export async function until(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Per profile, the `bench.seq` of the last body the receiver accepted on `path` (arrival
 * order): the profile's state at the endpoint. Bodies carry `bench.pid` and `bench.seq`.
 */
export function newestSeq(rx: RecordingReceiver, path: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of rx.delivered(path)) {
    const b = (r.body as { bench: { pid: string; seq: number } }).bench;
    m.set(b.pid, b.seq);
  }
  return m;
}
