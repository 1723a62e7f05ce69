/**
 * Backbone configs: a full config (JetStream source, Redis store, JetStream failed stores) isolated
 * by a name, and the one-destination, one-dataflow setup most backbone tests use.
 *
 * Every setup is isolated by its `name`: stream `<NAME>_UPDATES`, subject `<name>.updates`,
 * durable `<name>-worker`, Redis prefix `<name>:`, receiver path `/<name>`.
 */
import type { Audience, DataflowRules } from '../../../src/domain/types.js';
import { type CliProcess, publish, runOnce, spawnCli } from './cli.js';
import { rulesOf } from './oracle.js';
import type { RecordingReceiver } from './receiver.js';
import type { Backbone } from './servers.js';

export interface ConfigOptions {
  bb: Backbone;
  /** Names the stream, subject, durable, Redis prefix and failed streams: isolates a test. */
  name: string;
  audiences: Audience[];
  destinations: object[];
  dataflows: object[];
  /** @default 2000 */
  ackWaitMs?: number;
  /** More `source` settings (e.g. `leaseMs`). */
  source?: object;
  /** @default `{ kind: 'redis', … }` on the backbone's Redis */
  store?: object;
  worker?: object;
  /** @default 'warn' */
  logLevel?: string;
}

/** A full backbone config (JetStream source, Redis store, JetStream failed stores). */
export function backboneConfig(o: ConfigOptions): Record<string, unknown> {
  const up = o.name.toUpperCase().replace(/[^A-Z0-9]/g, '_');
  return {
    source: {
      kind: 'jetstream',
      servers: o.bb.nats.url,
      stream: `${up}_UPDATES`,
      subject: `${o.name}.updates`,
      durable: `${o.name}-worker`,
      ackWaitMs: o.ackWaitMs ?? 2_000,
      ...(o.source ?? {}),
    },
    store: o.store ?? { kind: 'redis', url: o.bb.redis.url, keyPrefix: `${o.name}:` },
    // servers left out on purpose: they default to the source's.
    failedRequests: { kind: 'jetstream', stream: `${up}_FAILED`, rejectedStream: `${up}_REJECTED` },
    audiences: o.audiences,
    destinations: o.destinations,
    dataflows: o.dataflows,
    worker: { drainTimeoutMs: 5_000, ...(o.worker ?? {}) },
    log: { level: o.logLevel ?? 'warn' },
  };
}

/** The small retry delays every backbone destination uses. */
export const FAST_RETRY = { minDelayMs: 50, maxDelayMs: 200 } as const;

/** One audience `aud-1` (merge policy mp-1) for the single-flow setups. */
export const AUD_1: Audience = { id: 'aud-1', name: 'Audience one', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'segmentation' };

export interface FlowSetup {
  /** Path of the config file. */
  cfg: string;
  config: Record<string, unknown>;
  /** The dataflow's rules, for the oracle. */
  rules: DataflowRules;
  audiences: Audience[];
  /** Receiver path of this setup's destination (`/<name>`). */
  path: string;
  stream: string;
  durable: string;
  /** Redis key prefix (`<name>:`). */
  prefix: string;
  /** Starts `run --config cfg` (no --once). */
  start(): CliProcess;
  /**
   * Creates the stream (`publish` of nothing), then `run --once` on the still empty stream and
   * store: the dataflow's backfill finishes with nothing to send, so no backfill export mixes
   * with what a test checks afterwards.
   */
  prime(): Promise<void>;
}

/**
 * A config with one destination (`rx.url/<name>`) and one dataflow `flow-1` mapping `aud-1`
 * with `person.name.firstName`, on its own stream, durable and Redis prefix.
 */
export function singleFlow(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  name: string;
  ackWaitMs?: number;
  source?: object;
  worker?: object;
  rateLimit?: number;
}): FlowSetup {
  const audiences = [AUD_1];
  const dest = { id: 'dest-1', endpoint: `${o.rx.url}/${o.name}`, retry: FAST_RETRY, includeSegmentNames: true };
  const flow = {
    id: 'flow-1',
    destination: 'dest-1',
    audiences: [{ id: 'aud-1', mappingCreatedAt: 10, mappingUpdatedAt: 11 }],
    attributes: ['person.name.firstName'],
    ...(o.rateLimit !== undefined ? { rateLimit: o.rateLimit } : {}),
  };
  const config = backboneConfig({
    bb: o.bb,
    name: o.name,
    audiences,
    destinations: [dest],
    dataflows: [flow],
    ackWaitMs: o.ackWaitMs,
    source: o.source,
    worker: { drainTimeoutMs: 3_000, ...(o.worker ?? {}) },
  });
  const source = config.source as { stream: string; durable: string };
  const cfg = o.bb.writeFile(`${o.name}.json`, config);
  return {
    cfg,
    config,
    rules: rulesOf(flow, dest),
    audiences,
    path: `/${o.name}`,
    stream: source.stream,
    durable: source.durable,
    prefix: `${o.name}:`,
    start: () => spawnCli(['run', '--config', cfg]),
    async prime() {
      // `publish` of nothing creates the stream (see the round-trip test for `run` creating it).
      await publish(o.bb, cfg, `${o.name}-empty.jsonl`, []);
      const r = await runOnce(cfg);
      if (r.eventsRead !== 0 || r.delivered !== 0) throw new Error(`prime: expected an empty run, got ${JSON.stringify(r)}`);
    },
  };
}
