/**
 * The real backbone, loaded only when a config asks for it: JetStream source and stores,
 * Redis snapshots, `publish` and `audiences import`.
 */
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type ConsumerInfo, type JetStreamManager } from '@nats-io/jetstream';
import { Subject, takeUntil } from 'rxjs';
import type { AppConfig, DataflowConfig, FailedRequestsConfig, SourceConfig, StoreConfig } from '../config/load.js';
import { partitionSubject } from '../domain/partition.js';
import { StartupError, UsageError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { openJetStreamStores } from '../sinks/failed-jetstream-store.js';
import { RedisSnapshotStore } from '../stores/redis-snapshot-store.js';
import type { SnapshotStore } from '../stores/types.js';
import { csvToEvents } from '../streams/audience-import.js';
import type { Source } from '../streams/file.js';
import { jetstreamSource } from '../streams/jetstream.js';
import { connectNats } from '../streams/nats.js';
import { Redis } from 'ioredis';
import { redisSendSlots } from '../stores/redis-rate-limiter.js';
import type { RateLimiter } from '../stores/rate-limiter.js';
import { listPartitionConsumers, openPoolSource } from './pool-source.js';
import { keepAlive } from './keep-alive.js';
import { readBackfillStatus, type BackfillStatus } from '../cli/pool-status.js';
import { poolKeys, readPoolStatus, type PoolCoordinator, type PoolStatus } from './pool.js';
import { publishJsonl, type PublishJsonlResult, type PublishStats } from '../streams/publish.js';
import type { FailureStores } from './runtime.js';

type JetStreamSourceConfig = Extract<SourceConfig, { kind: 'jetstream' }>;

export async function openJetStreamFailureStores(f: Extract<FailedRequestsConfig, { kind: 'jetstream' }>): Promise<FailureStores> {
  return openJetStreamStores({ servers: f.servers, stream: f.stream, rejectedStream: f.rejectedStream });
}

export async function openRedisSnapshotStore(
  s: Extract<StoreConfig, { kind: 'redis' }>,
  logger?: Logger,
  options: { maxSnapshotBytes?: number } = {},
): Promise<SnapshotStore> {
  let warned = 0;
  return new RedisSnapshotStore({
    url: s.url,
    keyPrefix: s.keyPrefix,
    maxSnapshotBytes: options.maxSnapshotBytes,
    onStoreLost: (err) => logger?.error({ code: err.code }, err.message),
    onStoreRestored: () => logger?.warn('redis snapshot store re-initialised by pool reset-state: applying and exporting again'),
    onConnectionError: (err) => {
      if (Date.now() - warned < 5_000) return;
      warned = Date.now();
      logger?.warn({ err }, 'redis connection error; reconnecting');
    },
  });
}

/**
 * The JetStream source as a `Source`: `stop()` stops fetching, and the stream completes once
 * the pipeline has drained (acks of messages already emitted still go out). With `once`, the
 * source stops by itself when the durable consumer has nothing left: no message pending
 * delivery and none awaiting an ack.
 */
export async function openJetStreamSource(
  s: JetStreamSourceConfig,
  options: { once: boolean; maxInFlight: number; drainTimeoutMs: number; logger: Logger; endWhen?: () => Promise<boolean> },
): Promise<Source> {
  const js = jetstreamSource({
    servers: s.servers,
    stream: s.stream,
    // One worker: every partition through one consumer.
    subject: `${s.subject}.>`,
    streamSubject: s.subject,
    resumeInOrder: true,
    durable: s.durable,
    ackWaitMs: s.ackWaitMs,
    batchSize: s.batchSize,
    maxAckPending: options.maxInFlight,
    closeGraceMs: options.drainTimeoutMs,
  });
  const stop$ = new Subject<void>();
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    stop$.next();
    stop$.complete();
  };
  const statusSub = js.status$.subscribe((st) => {
    if (st.fatal) options.logger.error({ kind: st.kind }, `jetstream: ${st.message}`);
    else options.logger.warn({ kind: st.kind }, `jetstream: ${st.message}`);
  });
  if (options.once) void watchForEnd(s, { durables: [s.durable] }, () => stopped, stop, options.logger, options.endWhen);
  return {
    messages$: js.messages$.pipe(keepAlive(Math.max(50, Math.floor(s.ackWaitMs / 3))), takeUntil(stop$)),
    stop: () => {
      stop();
      statusSub.unsubscribe();
    },
  };
}

/** Timing of the `run --once` end detection (`watchForEnd`). */
const END_WATCH = {
  /** First wait, and the wait before the confirming poll. */
  minPollMs: 200,
  /** Longest wait between polls while work is left (the wait doubles up to it). */
  maxPollMs: 1_000,
  /** Pool mode: while work is left, the partitions' current consumers are listed again after this. */
  relistMs: 5_000,
} as const;

/**
 * The consumers `watchForEnd` watches: fixed durables, or each partition's current consumer
 * (its name changes when the partition changes owner: `listPartitionConsumers`).
 */
type Watched = { durables: string[] } | { current: (jsm: JetStreamManager) => Promise<Array<ConsumerInfo | undefined>> };

/**
 * Polls until none of the durable consumers (one, or each partition's current one in pool
 * mode) has anything pending or unacked, then calls `stop`.
 *
 * Cheap on nats-server, which computes every consumer info: each poll reads the stream's info
 * once, and consumer infos only of the durables not yet seen idle since the stream last grew
 * (a consumer with nothing pending or unacked gets work only from new messages), stopping at
 * the first busy one. While work is left the wait between polls doubles up to 1 s. The end is
 * confirmed by a second poll 200 ms after the first quiet one that reads every durable again.
 * In pool mode the partitions' consumers are listed (one call that reads every consumer's
 * info) when one is not known yet or is gone (the partition moved), every 5 s while work is
 * left, and for the confirming poll.
 */
async function watchForEnd(
  s: JetStreamSourceConfig,
  watched: Watched,
  isStopped: () => boolean,
  stop: () => void,
  logger: Logger,
  /** Also required for the end (the backfills of the config are published): false keeps polling. */
  endWhen?: () => Promise<boolean>,
): Promise<void> {
  const nats = await connectNats({ servers: s.servers, name: 'http-destination:once' });
  try {
    const jsm = await jetstreamManager(nats.nc);
    /** Durables seen idle while the stream's last sequence was `idleAt`. */
    const idle = new Set<string>();
    let idleAt = -1;
    let quiet = 0;
    let wait: number = END_WATCH.minPollMs;
    /** The consumers to read (undefined: a partition without one yet), and when they were listed. */
    let durables: Array<string | undefined> = 'durables' in watched ? watched.durables : [];
    let listedAt = -Infinity;
    while (!isStopped()) {
      await new Promise((r) => setTimeout(r, wait));
      try {
        // A backfill still publishing is work to come: read before the consumers, so every
        // item it published is counted by them.
        if (endWhen && !(await endWhen())) {
          quiet = 0;
          wait = END_WATCH.minPollMs;
          continue;
        }
        const last = (await jsm.streams.info(s.stream)).state.last_seq;
        // New messages may be work for any of them; the confirming poll reads them all again.
        if (last !== idleAt || quiet > 0) {
          idle.clear();
          idleAt = last;
        }
        let busy = false;
        const relist =
          'current' in watched &&
          (quiet > 0 || durables.length === 0 || durables.includes(undefined) || Date.now() - listedAt > END_WATCH.relistMs);
        if (relist) {
          const infos = await watched.current(jsm);
          listedAt = Date.now();
          durables = infos.map((info) => info?.name);
          for (const info of infos) {
            if (!info || info.num_pending !== 0 || info.num_ack_pending !== 0) {
              busy = true;
              break;
            }
            idle.add(info.name);
          }
        }
        for (const durable of relist ? [] : durables) {
          if (durable === undefined) {
            busy = true;
            break;
          }
          if (idle.has(durable)) continue;
          let info: ConsumerInfo;
          try {
            info = await jsm.consumers.info(s.stream, durable);
          } catch (err) {
            // The partition moved to a consumer of a later epoch: list them again.
            if ('current' in watched && err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound) durables = [];
            throw err;
          }
          if (info.num_pending !== 0 || info.num_ack_pending !== 0) {
            busy = true;
            break;
          }
          idle.add(durable);
        }
        // Two quiet polls in a row: everything was delivered and all is acked.
        quiet = busy ? 0 : quiet + 1;
        if (quiet >= 2) stop();
      } catch {
        quiet = 0; // the stream or a consumer is being created, or the server restarts: keep polling
      }
      wait = quiet > 0 ? END_WATCH.minPollMs : Math.min(END_WATCH.maxPollMs, wait * 2);
    }
  } catch (err) {
    logger.warn({ err }, 'jetstream: cannot watch the consumer for the end of the backlog');
  } finally {
    await nats.close().catch(() => {});
  }
}

/** The profileId of a parsed event, or '' (the worker rejects such an event; any partition will do). */
function profileIdOf(event: unknown): string {
  if (event !== null && typeof event === 'object' && 'profileId' in event && typeof event.profileId === 'string') return event.profileId;
  return '';
}

/**
 * Pool mode (JetStream + Redis): this worker consumes the partitions it holds the lease of.
 * With `once`, it stops when every partition's consumer is drained.
 */
export async function openJetStreamPoolSource(
  s: JetStreamSourceConfig,
  store: Extract<StoreConfig, { kind: 'redis' }>,
  options: { once: boolean; maxInFlight: number; drainTimeoutMs: number; logger: Logger; endWhen?: () => Promise<boolean> },
): Promise<Source & { coordinator: PoolCoordinator }> {
  const pool = openPoolSource({
    source: s,
    redisUrl: store.url,
    keyPrefix: store.keyPrefix,
    maxInFlight: options.maxInFlight,
    drainTimeoutMs: options.drainTimeoutMs,
    logger: options.logger,
  });
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    pool.stop();
  };
  if (options.once) {
    const current = async (jsm: JetStreamManager) =>
      (await listPartitionConsumers(jsm, s.stream, s.durable, s.partitions)).map((list) => list[0]?.info);
    void watchForEnd(s, { current }, () => stopped, stop, options.logger, options.endWhen);
  }
  return { messages$: pool.messages$, stop, coordinator: pool.coordinator };
}

/** The pool-wide rate limiters (one Redis schedule of send slots per dataflow) and their client. */
export function openRedisLimiters(store: Extract<StoreConfig, { kind: 'redis' }>, logger: Logger): {
  limiterFor: (flow: DataflowConfig) => RateLimiter;
  close(): Promise<void>;
} {
  const redis = new Redis(store.url, { maxRetriesPerRequest: 1, enableAutoPipelining: true });
  let warned = 0;
  redis.on('error', () => {});
  const limiters: Array<{ close(): void }> = [];
  return {
    limiterFor: (flow) => {
      const l = redisSendSlots({
        redis,
        key: `${store.keyPrefix}rl:${flow.id}`,
        rate: flow.rateLimit,
        onError: (err) => {
          if (Date.now() - warned < 5_000) return;
          warned = Date.now();
          logger.warn({ err, dataflowId: flow.id }, 'rate limiter: redis unavailable; holding requests');
        },
      });
      limiters.push(l);
      return l;
    },
    async close() {
      for (const l of limiters) l.close();
      redis.disconnect();
    },
  };
}

export interface PoolReport extends PoolStatus {
  /**
   * Per partition, of its current consumer (`<durable>-p<n>-e<epoch>`, the latest epoch's; none
   * before the partition was first taken): messages not yet delivered to it, and delivered but
   * unacked.
   */
  lag: Array<{ partition: number; consumer?: string; pending?: number; ackPending?: number }>;
  /** The backfills of the config's mappings: published / total, done. */
  backfills: BackfillStatus[];
  /** The worker holding the backfiller lock (publishing a backfill now), if any. */
  backfiller?: { owner: string; token: number };
}

/** `pool status`: workers, partition owners (Redis) and the lag of each partition's current consumer (JetStream). */
export async function poolStatus(config: AppConfig): Promise<PoolReport> {
  const s = requireJetStream(config, 'pool status');
  if (config.store.kind !== 'redis') throw new UsageError('pool status needs store.kind: redis (a pool coordinates through Redis)');
  const redis = new Redis(config.store.url, { maxRetriesPerRequest: 1, lazyConnect: true });
  redis.on('error', () => {});
  const nats = await connectNats({ servers: s.servers, name: 'http-destination:pool-status' });
  try {
    await redis.connect();
    const status = await readPoolStatus({ redis, keyPrefix: config.store.keyPrefix, pool: s.durable, partitions: s.partitions });
    const jsm = await jetstreamManager(nats.nc);
    const partitions = status.recordedPartitions ?? s.partitions;
    const consumers = await listPartitionConsumers(jsm, s.stream, s.durable, partitions).catch(() => undefined);
    const lag: PoolReport['lag'] = [];
    for (let p = 0; p < partitions; p++) {
      const info = consumers?.[p][0]?.info;
      lag.push(info ? { partition: p, consumer: info.name, pending: info.num_pending, ackPending: info.num_ack_pending } : { partition: p });
    }
    const backfill = await readBackfillStatus({ redis, keyPrefix: config.store.keyPrefix, pool: s.durable, dataflows: config.dataflows });
    return { ...status, lag, ...backfill };
  } finally {
    redis.disconnect();
    await nats.close().catch(() => {});
  }
}

/**
 * `pool reset-partitions`: forgets the pool's recorded partition count (only when no worker is
 * live), so the workers can start with another one. Epoch counters are kept (fencing).
 */
export async function resetPoolPartitions(config: AppConfig): Promise<{ previous?: number }> {
  const s = requireJetStream(config, 'pool reset-partitions');
  if (config.store.kind !== 'redis') throw new UsageError('pool reset-partitions needs store.kind: redis');
  const redis = new Redis(config.store.url, { maxRetriesPerRequest: 1, lazyConnect: true });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const status = await readPoolStatus({ redis, keyPrefix: config.store.keyPrefix, pool: s.durable });
    const live = status.workers.filter((w) => w.live);
    if (live.length > 0) {
      throw new UsageError(`pool ${s.durable} still has ${live.length} live worker(s) (${live.map((w) => w.id).join(', ')}): stop every worker first`);
    }
    const keys = poolKeys({ keyPrefix: config.store.keyPrefix, pool: s.durable });
    await redis.del(keys.partitions);
    return { previous: status.recordedPartitions };
  } finally {
    redis.disconnect();
  }
}

function requireJetStream(config: AppConfig, command: string): JetStreamSourceConfig {
  if (config.source.kind !== 'jetstream') {
    throw new UsageError(`${command} needs source.kind: jetstream in the config (it is ${config.source.kind})`);
  }
  return config.source;
}

/** `publish`: JSON Lines → the configured subject, with publish acks. */
export async function publishEvents(config: AppConfig, file: string, options: { stats?: PublishStats } = {}): Promise<PublishJsonlResult> {
  const s = requireJetStream(config, 'publish');
  return publishJsonl({
    stats: options.stats,
    servers: s.servers,
    stream: s.stream,
    subject: s.subject,
    file,
    subjectFor: (event) => partitionSubject(s.subject, profileIdOf(event), s.partitions),
  });
}

/**
 * `audiences import`: a CSV custom upload becomes membership events for the audience, sent
 * through the source like any other update (published to JetStream, or appended to the
 * JSON Lines source file).
 */
export async function importAudience(
  config: AppConfig,
  audienceId: string,
  csvFile: string,
  options: { delimiter?: string; stats?: PublishStats } = {},
): Promise<{ imported: number; duplicates: number; rows: number; bad: Array<{ line: number; reason: string }> }> {
  const audience = config.audiences.find((a) => a.id === audienceId);
  if (!audience) throw new UsageError(`--audience: unknown audience "${audienceId}" (declare it under audiences)`);
  if (audience.origin !== 'upload') {
    throw new UsageError(`--audience: audience "${audienceId}" has origin ${audience.origin}; custom uploads go to audiences with origin: upload`);
  }
  let text: string;
  try {
    text = await readFile(csvFile, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${csvFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const { events, bad, rows } = csvToEvents(text, { audienceId, delimiter: options.delimiter });
  const lines = events.map((e) => JSON.stringify(e)).join('\n') + (events.length > 0 ? '\n' : '');
  if (events.length === 0) return { imported: 0, duplicates: 0, rows, bad };
  if (config.source.kind === 'file') {
    await appendFile(config.source.path, lines);
    return { imported: events.length, duplicates: 0, rows, bad };
  }
  const dir = await mkdtemp(join(tmpdir(), 'hd-import-'));
  try {
    const file = join(dir, 'events.jsonl');
    await writeFile(file, lines);
    const r = await publishEvents(config, file, { stats: options.stats });
    return { imported: r.published, duplicates: r.duplicates, rows, bad };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export { StartupError };
export { waitForBackbone } from './backbone-startup.js';
