/**
 * The pool tests' settings (`POOL`: partitions, short leases) and their setup: a pool config
 * (JetStream source with partitions, Redis store) with its stream, workers and keys.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { Audience, DataflowRules } from '../../../src/domain/types.js';
import { ensureStream } from '../../../src/streams/jetstream.js';
import { poolKeys } from '../../../src/worker/pool.js';
import { AUD_1, backboneConfig, rulesOf, runOnce, spawnCli, type Backbone, type RecordingReceiver } from '../backbone.js';
import { type PoolWorker, asPoolWorker } from './workers.js';

/** The pool settings every pool test uses: failover within seconds. */
export const POOL = {
  partitions: 16,
  /** `source.leaseMs` */
  leaseMs: 1_500,
  /** The coordinator's tick: leaseMs / 5. */
  tickMs: 300,
  /** `source.ackWaitMs` */
  ackWaitMs: 2_000,
  /** Small retry delays of the destination. */
  retry: { minDelayMs: 20, maxDelayMs: 100 },
} as const;

export interface PoolSetup {
  cfg: string;
  config: Record<string, unknown>;
  rules: DataflowRules;
  /** With `secondFlow`: the rules of `flow-2`. */
  rules2?: DataflowRules;
  audiences: Audience[];
  /** Receiver path of the destination. */
  path: string;
  /** With `secondFlow`: receiver path of `flow-2`'s destination. */
  path2?: string;
  stream: string;
  subject: string;
  durable: string;
  /** Redis key prefix (`<name>:`); the pool's keys are `<prefix>pool:<durable>:…`. */
  prefix: string;
  /** Redis key of a partition's lease. */
  leaseKey(partition: number): string;
  /** Starts `run --config cfg` (no --once) as worker `w<n>`. */
  start(): PoolWorker;
  /** `run --once` on the empty stream: backfill marked done, partition count recorded. */
  prime(): Promise<void>;
}

/**
 * One destination (`rx.url/<name>`) and one dataflow `flow-1` mapping `aud-1` with
 * `bench.pid` and `bench.seq`, on its own stream, durable and Redis prefix, in pool mode
 * (`source.partitions` 16, `leaseMs` 1500, `ackWaitMs` 2000), logging at info.
 */
export function poolFlow(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  name: string;
  rateLimit?: number;
  /** `source.ackWaitMs`. @default POOL.ackWaitMs (2000) */
  ackWaitMs?: number;
  worker?: object;
  /** Destination extras (e.g. `connections`). */
  destination?: object;
  /**
   * A second dataflow `flow-2` with its own rate limit, mapping `aud-2` (same attributes) to
   * `rx.url/<name>-2`: updates entering `aud-2` export to it only.
   */
  secondFlow?: { rateLimit: number };
}): PoolSetup {
  const aud2: Audience = { ...AUD_1, id: 'aud-2', name: 'Audience two' };
  const audiences = o.secondFlow ? [AUD_1, aud2] : [AUD_1];
  const dest = { id: 'dest-1', endpoint: `${o.rx.url}/${o.name}`, retry: POOL.retry, ...(o.destination ?? {}) };
  const flow = {
    id: 'flow-1',
    destination: 'dest-1',
    audiences: [{ id: 'aud-1', mappingCreatedAt: 10, mappingUpdatedAt: 11 }],
    attributes: ['bench.pid', 'bench.seq'],
    ...(o.rateLimit !== undefined ? { rateLimit: o.rateLimit } : {}),
  };
  const dest2 = { ...dest, id: 'dest-2', endpoint: `${o.rx.url}/${o.name}-2` };
  const flow2 = { ...flow, id: 'flow-2', destination: 'dest-2', audiences: [{ id: 'aud-2', mappingCreatedAt: 10, mappingUpdatedAt: 11 }], rateLimit: o.secondFlow?.rateLimit };
  const config = backboneConfig({
    bb: o.bb,
    name: o.name,
    audiences,
    destinations: o.secondFlow ? [dest, dest2] : [dest],
    dataflows: o.secondFlow ? [flow, flow2] : [flow],
    ackWaitMs: o.ackWaitMs ?? POOL.ackWaitMs,
    worker: { drainTimeoutMs: 5_000, ...(o.worker ?? {}) },
    logLevel: 'info',
  });
  const source = config.source as Record<string, unknown>;
  Object.assign(source, { partitions: POOL.partitions, leaseMs: POOL.leaseMs });
  const cfg = o.bb.writeFile(`${o.name}.json`, config);
  const prefix = `${o.name}:`;
  const durable = source.durable as string;
  const keys = poolKeys({ keyPrefix: prefix, pool: durable });
  let started = 0;
  return {
    cfg,
    config,
    rules: rulesOf(flow, dest),
    ...(o.secondFlow ? { rules2: rulesOf(flow2, dest2), path2: `/${o.name}-2` } : {}),
    audiences,
    path: `/${o.name}`,
    stream: source.stream as string,
    subject: source.subject as string,
    durable,
    prefix,
    leaseKey: (p) => keys.lease(p),
    start: () => asPoolWorker(spawnCli(['run', '--config', cfg]), `w${++started}`),
    async prime() {
      // The stream first, as `publish` makes it (`<subject>` and `<subject>.>`): a stream
      // that pool workers create covers only `<subject>.<n>` subjects, and `publish` then
      // fails (see the stream test in ownership.test.ts).
      await createStream(o.bb, source.stream as string, source.subject as string);
      const r = await runOnce(cfg);
      if (r.eventsRead !== 0 || r.delivered !== 0) throw new Error(`prime: expected an empty run, got ${JSON.stringify(r)}`);
    },
  };
}

/** Creates the stream as `publish` does: covering `subject` and `subject.>`. */
export async function createStream(bb: Backbone, stream: string, subject: string): Promise<string[]> {
  const nc = await connect({ servers: bb.nats.url, timeout: 5_000 });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await ensureStream({ jsm, stream, subject });
    return info.config.subjects ?? [];
  } finally {
    await nc.close();
  }
}

/** The subjects a stream covers. */
export async function streamSubjects(bb: Backbone, stream: string): Promise<string[]> {
  const nc = await connect({ servers: bb.nats.url, timeout: 5_000 });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(stream)).config.subjects ?? [];
  } finally {
    await nc.close();
  }
}
