/**
 * The worker config of a bench run (written as JSON, loaded by `http-destination run`), and
 * the same dataflows as domain rules for the ceilings that rebuild export bodies.
 */
import type { Audience, DataflowRules } from '../src/domain/types.js';
import { join } from 'node:path';
import { AUDIENCES, flowAttributes } from './events.js';

export const BENCH_TOKEN = 'bench-token-0123456789';

export interface WorkerConfigOptions {
  natsUrl: string;
  redisUrl: string;
  stream: string;
  subject: string;
  durable: string;
  keyPrefix: string;
  receiverPort: number;
  /** Number of dataflows, all to the one destination, all mapped to aud-1 and aud-2. */
  flows: number;
  rateLimit: number;
  connections: number;
  maxInFlight: number;
  batchSize: number;
  /** source.partitions (pool mode: jetstream + redis). */
  partitions: number;
  /** Suffix of the failed-request / rejected-event stream names. */
  tag: string;
  /** worker.httpThread; undefined: the config default. */
  httpThread?: boolean;
}

export function workerConfig(o: WorkerConfigOptions): object {
  return {
    source: { kind: 'jetstream', servers: o.natsUrl, stream: o.stream, subject: o.subject, durable: o.durable, batchSize: o.batchSize, partitions: o.partitions },
    store: { kind: 'redis', url: o.redisUrl, keyPrefix: o.keyPrefix },
    failedRequests: { kind: 'jetstream', stream: `HD_BENCH_FAILED_${o.tag}`, rejectedStream: `HD_BENCH_REJECTED_${o.tag}` },
    ...commonConfig(o),
  };
}

/** The embedded default's store: `memory`, or `local` (durable files on this host, issue 12). */
export type EmbeddedStore = 'memory' | 'local';

export interface EmbeddedConfigOptions {
  /** The JSON Lines file the worker reads (and follows, without `--once`). */
  file: string;
  store: EmbeddedStore;
  /** Folder for the store's files and the failed/rejected records. */
  dataDir: string;
  receiverPort: number;
  flows: number;
  rateLimit: number;
  connections: number;
  maxInFlight: number;
  /** worker.httpThread; undefined: the config default. */
  httpThread?: boolean;
}

/**
 * The embedded default (no NATS, no Redis): file source, `memory` or `local` store, failed
 * requests beside it. `local` is passed through as `store: { kind: local, path }` and
 * `failedRequests: { kind: local }`; a build without the local store refuses the config.
 */
export function embeddedConfig(o: EmbeddedConfigOptions): object {
  return {
    source: { kind: 'file', path: o.file },
    store: o.store === 'local' ? { kind: 'local', path: join(o.dataDir, 'store') } : { kind: 'memory' },
    failedRequests:
      o.store === 'local'
        ? { kind: 'local' }
        : { kind: 'file', path: join(o.dataDir, 'failed.jsonl'), rejectedPath: join(o.dataDir, 'rejected.jsonl') },
    ...commonConfig(o),
  };
}

function commonConfig(o: { receiverPort: number; flows: number; rateLimit: number; connections: number; maxInFlight: number; httpThread?: boolean }): object {
  return {
    audiences: AUDIENCES.map((a) => ({ ...a, origin: 'segmentation' })),
    destinations: [
      {
        id: 'receiver',
        name: 'bench receiver',
        endpoint: `http://127.0.0.1:${o.receiverPort}/export`,
        headers: { 'x-tenant': 'bench' },
        auth: { type: 'bearer', token: BENCH_TOKEN },
        includeSegmentNames: true,
        includeSegmentTimestamps: true,
        retry: { minDelayMs: 100, maxDelayMs: 1000 },
        timeoutMs: 10_000,
        connections: o.connections,
      },
    ],
    dataflows: dataflowIds(o.flows).map((id, i) => ({
      id,
      destination: 'receiver',
      audiences: [
        { id: 'aud-1', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570000 },
        { id: 'aud-2', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570000 },
      ],
      attributes: flowAttributes(i + 1),
      rateLimit: o.rateLimit,
    })),
    worker: { maxInFlight: o.maxInFlight, drainTimeoutMs: 30_000, ...(o.httpThread === undefined ? {} : { httpThread: o.httpThread }) },
    log: { level: 'warn' },
  };
}

export function dataflowIds(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `flow-${i + 1}`);
}

/** The bench dataflows as domain rules (what buildPayload needs). */
export function dataflowRules(n: number): DataflowRules[] {
  return dataflowIds(n).map((id, i) => ({
    id,
    destinationId: 'receiver',
    audiences: [
      { id: 'aud-1', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570000 },
      { id: 'aud-2', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570000 },
    ],
    attributes: flowAttributes(i + 1),
    includeSegmentNames: true,
    includeSegmentTimestamps: true,
  }));
}

export const benchAudiences: Audience[] = AUDIENCES.map((a) => ({ ...a, origin: 'segmentation' }));
