/**
 * Pool mode: the JetStream source of one worker of a pool. The worker consumes exactly the
 * partitions whose lease it holds (see pool.ts), each through a durable consumer of that
 * partition and lease epoch (`<durable>-p<n>-e<epoch>`, filter `<subject>.<n>`), and every
 * message carries the lease as its fence, so a worker that lost a partition cannot write its
 * snapshots any more, nor pull the messages of the partition's next owner.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { Observable, Subject, takeUntil, type Subscription } from 'rxjs';
import type { SourceConfig } from '../config/load.js';
import { hasCode } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Source } from '../streams/file.js';
import { jetstreamSource, type JetStreamSource } from '../streams/jetstream.js';
import { connectNats, NatsError, type NatsHandle } from '../streams/nats.js';
import type { SourceMessage } from '../streams/types.js';
import { partitionConsumerName, sweepStaleConsumersEvery, takeOverPartitionConsumer } from './partition-consumers.js';
export { POOL_SOURCE_DEFAULTS, partitionShare } from './partition-share.js';
import { POOL_SOURCE_DEFAULTS, partitionShare } from './partition-share.js';
import { createPoolCoordinator, type PoolCoordinator } from './pool.js';
import { joinPool, onceEvery } from './pool-join.js';

export {
  listPartitionConsumers,
  partitionConsumerEpoch,
  partitionConsumerName,
  partitionDurable,
  takeOverPartitionConsumer,
  type PartitionConsumer,
  type TakeOverOptions,
} from './partition-consumers.js';

type JetStreamSourceConfig = Extract<SourceConfig, { kind: 'jetstream' }>;

export interface PoolSourceOptions {
  source: JetStreamSourceConfig;
  redisUrl: string;
  keyPrefix: string;
  /**
   * The worker's `maxInFlight`: shared among the partitions it consumes (see `partitionShare`),
   * which sets each partition consumer's `max_ack_pending` and pull size.
   */
  maxInFlight: number;
  /** Least `max_ack_pending` of a partition consumer (capped at `maxInFlight`). @default 64 */
  minAckPendingPerPartition?: number;
  /** How long acks of in-flight messages may still go out after a partition stops. */
  drainTimeoutMs: number;
  logger: Logger;
  /** @default `<host>-<pid>-<random>` */
  workerId?: string;
}

interface Partition {
  epoch: number;
  stop$: Subject<void>;
  sub?: Subscription;
  /** Emitted, not yet acked or nak'ed. */
  open: Set<SourceMessage>;
  /** Its consumer runs, or has not finished stopping (no more JetStream API calls). */
  fetching: boolean;
  draining: boolean;
  /** Bounds the drain of a revoked partition (`drainTimeoutMs`): see `drain`. */
  drainTimer?: ReturnType<typeof setTimeout>;
}

/**
 * Opens the pool-mode source. On `acquired` a partition's consumer starts; on `revoke` it
 * stops fetching, its in-flight messages finish (acked), and only then is the lease released;
 * on `lost` it stops at once (its writes are fenced; the new owner gets the messages again).
 * `stop()` drains every partition, then the stream completes; unsubscribing releases every lease.
 */
export function openPoolSource(options: PoolSourceOptions): Source & { coordinator: PoolCoordinator } {
  const { source: s, logger } = options;
  const workerId = options.workerId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const redis = new Redis(options.redisUrl, {
    // Well under the lease: a slow answer must not let a lease lapse unnoticed.
    commandTimeout: Math.max(200, Math.floor(s.leaseMs / 5)),
    maxRetriesPerRequest: 1,
    lazyConnect: false,
  });
  // Connection errors reach the log through the coordinator's onError; without a listener
  // ioredis would also print them raw.
  redis.on('error', () => {});
  // One warning per 5 s of each kind: an outage would otherwise log every retry.
  const redisWarnDue = onceEvery(5_000);
  const natsWarnDue = onceEvery(5_000);
  const coordinator = createPoolCoordinator({
    redis,
    keyPrefix: options.keyPrefix,
    pool: s.durable,
    workerId,
    partitions: s.partitions,
    leaseMs: s.leaseMs,
    onError: (err) => {
      if (redisWarnDue()) logger.warn({ err }, 'pool: coordination error');
    },
  });
  let stopping = false;
  let wakeStop: (() => void) | undefined;

  const messages$ = new Observable<SourceMessage>((subscriber) => {
    const parts = new Map<number, Partition>();
    /**
     * Per partition whose consumer here is still stopping (dropped at once when its lease was
     * lost, or draining): a new start of the partition waits for it.
     */
    const stoppingConsumers = new Map<number, Promise<void>>();
    /** Every consumer started and not yet closed: the shared connection closes after them. */
    const consumers = new Set<JetStreamSource>();
    /** Partitions acquired in the current tick, their consumers not started yet. */
    let acquired: Array<{ p: number; part: Partition }> = [];
    /** The one NATS connection of every partition consumer of this worker. */
    let nats: NatsHandle | undefined;
    let natsStatusSub: Subscription | undefined;
    let tornDown = false;
    const floor = options.minAckPendingPerPartition ?? POOL_SOURCE_DEFAULTS.minAckPendingPerPartition;
    const keepAliveMs = Math.max(50, Math.floor(s.ackWaitMs / 3));
    const keepAlive = setInterval(() => {
      for (const part of parts.values()) for (const m of part.open) m.working();
    }, keepAliveMs);

    // Every 4 × `leaseMs`: consumers of earlier epochs of the partitions consumed here, left by
    // an owner that died mid-takeover, are deleted.
    const stopSweep = sweepStaleConsumersEvery(4 * s.leaseMs, {
      nats: () => (tornDown ? undefined : nats),
      owned: () => new Map([...parts].filter(([, part]) => !part.draining).map(([p, part]) => [p, part.epoch])),
      holds: (p, e) => coordinator.holds(p, e),
      stream: s.stream,
      durable: s.durable,
      partitions: s.partitions,
      logger,
    });

    const maybeComplete = (): void => {
      if (stopping && parts.size === 0 && !subscriber.closed) subscriber.complete();
    };
    /**
     * A stopped partition whose in-flight work is settled and whose consumer makes no more
     * JetStream calls is released: the next owner reads this worker's consumer's ack floor
     * (and then deletes it) only once this worker is done with it.
     */
    const settle = (p: number, part: Partition): void => {
      if (!part.draining || part.fetching || part.open.size > 0) return;
      if (parts.get(p) !== part) return;
      parts.delete(p);
      if (part.drainTimer) clearTimeout(part.drainTimer);
      coordinator.release(p).catch(() => {
        // Redis unreachable: the lease expires by itself.
      });
      logger.info({ partition: p }, 'pool: partition released');
      maybeComplete();
    };
    const wrap = (p: number, part: Partition, m: SourceMessage, fence: NonNullable<SourceMessage['fence']>): SourceMessage => {
      const done = (): void => {
        part.open.delete(wrapped);
        settle(p, part);
      };
      const wrapped: SourceMessage = {
        data: m.data,
        key: m.key,
        seq: m.seq,
        watermark: m.seq,
        fence,
        ...(m.backfill && { backfill: m.backfill }),
        receivedAt: m.receivedAt,
        ack: () => {
          m.ack();
          done();
        },
        nak: (delayMs) => {
          m.nak(delayMs);
          done();
        },
        working: () => m.working(),
      };
      return wrapped;
    };
    /** The partition's consumer ended (stopped, or failed): once it is quiet, the partition may settle. */
    const consumerEnded = (p: number, part: Partition, js: JetStreamSource): void => {
      const quiet = js.stopped();
      const entry: Promise<void> = quiet.then(() => {
        if (stoppingConsumers.get(p) === entry) stoppingConsumers.delete(p);
        part.fetching = false;
        settle(p, part);
      });
      stoppingConsumers.set(p, entry);
    };
    const consume = (p: number, part: Partition, share: number): void => {
      if (parts.get(p) !== part || part.draining || !nats || tornDown) {
        // Lost or revoked before its consumer could start.
        part.fetching = false;
        settle(p, part);
        return;
      }
      const fence = { ...coordinator.fenceArgs(p, part.epoch), isCurrent: () => coordinator.holds(p, part.epoch) };
      const durable = partitionConsumerName(s.durable, p, part.epoch);
      logger.debug({ partition: p, consumer: durable, maxAckPending: share }, 'pool: partition consumer starting');
      const js = jetstreamSource({
        connection: nats,
        stream: s.stream,
        subject: `${s.subject}.${p}`,
        streamSubject: s.subject,
        durable,
        // The previous owner may have crashed with messages unacked: take them again in order.
        prepare: (jsm) =>
          takeOverPartitionConsumer({
            jsm,
            stream: s.stream,
            subject: `${s.subject}.${p}`,
            durable: s.durable,
            partition: p,
            epoch: part.epoch,
            maxAckPending: share,
            ackWaitMs: s.ackWaitMs,
            holdsLease: async () => coordinator.holds(p, part.epoch) && (await redis.get(fence.key)) === fence.value,
            raiseEpoch: (atLeast) => coordinator.raiseEpoch(p, atLeast),
          }),
        // Deleted under it: by the partition's next owner (this worker lost the lease). Taking
        // it again would consume behind the new owner's back.
        recreate: false,
        ackWaitMs: s.ackWaitMs,
        // A pull larger than max_ack_pending is refused (409) and stalls the consumer.
        batchSize: Math.max(1, Math.min(s.batchSize, share)),
        maxAckPending: share,
        closeGraceMs: options.drainTimeoutMs,
      });
      const statusSub = js.status$.subscribe((st) => logger.warn({ partition: p, kind: st.kind }, `jetstream: ${st.message}`));
      part.sub = js.messages$.pipe(takeUntil(part.stop$)).subscribe({
        next: (m) => {
          const w = wrap(p, part, m, fence);
          part.open.add(w);
          subscriber.next(w);
        },
        error: (err: unknown) => {
          statusSub.unsubscribe();
          if (hasCode(err, 'ERR_FENCED') || hasCode(err, 'ERR_JETSTREAM_CONSUMER_GONE')) {
            logger.warn({ err, partition: p }, 'pool: partition taken over by another worker; giving it up');
          } else logger.error({ err, partition: p }, 'pool: partition source failed; giving the partition up');
          part.draining = true;
          consumerEnded(p, part, js);
        },
        complete: () => {
          statusSub.unsubscribe();
          consumerEnded(p, part, js);
        },
      });
      consumers.add(js);
      void js.closed().then(() => consumers.delete(js));
    };
    const start = (p: number, epoch: number): void => {
      if (stopping || tornDown || parts.has(p)) return;
      const part: Partition = { epoch, stop$: new Subject<void>(), open: new Set(), fetching: true, draining: false };
      parts.set(p, part);
      logger.info({ partition: p, epoch }, 'pool: partition acquired');
      if (acquired.length === 0) queueMicrotask(() => void startAcquired());
      acquired.push({ p, part });
    };
    /**
     * Starts the consumers of the partitions acquired in one tick (emitted together), once their
     * share is known: `maxInFlight` over the partitions the assignment gives this worker (read
     * from Redis), or over those it consumes now when that is more or Redis does not answer.
     * (Counting only those held would give the first partitions taken in a rebalance, which
     * come one by one as their previous owners drain, a share far above their due.)
     */
    const startAcquired = async (): Promise<void> => {
      const batch = acquired;
      acquired = [];
      let desired = 0;
      try {
        const status = await coordinator.status();
        desired = status.partitions.filter((x) => x.desiredOwner === workerId).length;
      } catch {
        // Redis did not answer: the partitions consumed now are the best estimate.
      }
      let owned = 0;
      for (const part of parts.values()) if (!part.draining) owned++;
      const share = partitionShare(options.maxInFlight, Math.max(owned, desired), floor);
      for (const { p, part } of batch) {
        const previous = stoppingConsumers.get(p);
        if (previous) void previous.then(() => consume(p, part, share));
        else consume(p, part, share);
      }
    };
    const drain = (p: number): void => {
      const part = parts.get(p);
      if (!part || part.draining) return;
      part.draining = true;
      part.stop$.next();
      // A hanging send must not keep the partition from its next owner: past `drainTimeoutMs`
      // the partition is released with its messages still in flight. They stay unacked, so
      // JetStream gives them to the next owner (from this consumer's ack floor, which it reads
      // at takeover); this worker's late sends then fail the fence (the new owner's epoch).
      part.drainTimer = setTimeout(() => {
        if (parts.get(p) !== part) return;
        logger.warn(
          { partition: p, inFlight: part.open.size, drainTimeoutMs: options.drainTimeoutMs },
          'pool: partition drain timed out; releasing it with messages in flight',
        );
        part.open.clear();
        settle(p, part);
      }, options.drainTimeoutMs);
      part.drainTimer.unref?.();
      settle(p, part);
    };

    const ownership = coordinator.ownership$.subscribe((ev) => {
      if (ev.type === 'acquired') start(ev.partition, ev.epoch);
      else if (ev.type === 'revoke') {
        logger.info({ partition: ev.partition }, 'pool: partition moving to another worker; draining');
        drain(ev.partition);
      } else {
        const part = parts.get(ev.partition);
        if (!part || part.epoch !== ev.epoch) return;
        logger.warn({ partition: ev.partition, epoch: ev.epoch }, 'pool: partition lease lost; stopping it at once');
        parts.delete(ev.partition);
        part.stop$.next();
        maybeComplete();
      }
    });
    wakeStop = () => {
      for (const p of [...parts.keys()]) drain(p);
      maybeComplete();
    };
    joinPool({
      closed: () => subscriber.closed,
      connect: () => connectNats({ servers: s.servers, name: `http-destination:${s.durable}:${workerId}` }),
      connected: (handle) => {
        nats = handle;
        natsStatusSub = handle.status$.subscribe({
          next: (st) => logger.warn({ kind: st.kind }, `jetstream: ${st.message}`),
          // Closed for good, not by this source: its consumers cannot go on.
          complete: () => {
            if (!tornDown) subscriber.error(new NatsError('ERR_NATS_CLOSED', 'pool: the NATS connection closed'));
          },
        });
      },
      coordinator,
      warnNats: (err) => {
        if (natsWarnDue()) logger.warn({ err }, 'pool: cannot connect to NATS yet; retrying');
      },
      warnRedis: (err) => {
        if (redisWarnDue()) logger.warn({ err }, 'pool: cannot join yet (redis); retrying');
      },
    }).catch((err: unknown) => subscriber.error(err));

    return () => {
      tornDown = true;
      clearInterval(keepAlive);
      stopSweep();
      ownership.unsubscribe();
      for (const part of parts.values()) part.stop$.next();
      parts.clear();
      void coordinator
        .close()
        .catch(() => {})
        .finally(() => redis.disconnect());
      // Acks of messages already emitted still go out until every consumer closed (settled or
      // its grace passed); then the connection closes.
      void Promise.all([...consumers].map((js) => js.closed())).finally(() => {
        natsStatusSub?.unsubscribe();
        void nats?.close();
      });
    };
  });

  return {
    messages$,
    coordinator,
    stop: () => {
      stopping = true;
      wakeStop?.();
    },
  };
}
