/**
 * Pool mode: the JetStream source of one worker of a pool. The worker consumes exactly the
 * partitions whose lease it holds (see pool.ts), each through that partition's own durable
 * consumer (`<durable>-p<n>`, filter `<subject>.<n>`), and every message carries the lease as
 * its fence, so a worker that lost a partition cannot write its snapshots any more.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { Observable, Subject, takeUntil, type Subscription } from 'rxjs';
import type { SourceConfig } from '../config/load.js';
import type { Logger } from '../observability/logger.js';
import type { Source } from '../streams/file.js';
import { jetstreamSource } from '../streams/jetstream.js';
import type { SourceMessage } from '../streams/types.js';
import { createPoolCoordinator, PoolConfigError, type PoolCoordinator } from './pool.js';

type JetStreamSourceConfig = Extract<SourceConfig, { kind: 'jetstream' }>;

export interface PoolSourceOptions {
  source: JetStreamSourceConfig;
  redisUrl: string;
  keyPrefix: string;
  /** Unacknowledged messages per partition at most. */
  maxAckPendingPerPartition: number;
  /** How long acks of in-flight messages may still go out after a partition stops. */
  drainTimeoutMs: number;
  logger: Logger;
  /** @default `<host>-<pid>-<random>` */
  workerId?: string;
}

/** The durable consumer of one partition. */
export function partitionDurable(durable: string, partition: number): string {
  return `${durable}-p${partition}`;
}

interface Partition {
  epoch: number;
  stop$: Subject<void>;
  sub?: Subscription;
  /** Emitted, not yet acked or nak'ed. */
  open: Set<SourceMessage>;
  fetching: boolean;
  draining: boolean;
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
  let lastRedisWarn = 0;
  const coordinator = createPoolCoordinator({
    redis,
    keyPrefix: options.keyPrefix,
    pool: s.durable,
    workerId,
    partitions: s.partitions,
    leaseMs: s.leaseMs,
    onError: (err) => {
      if (Date.now() - lastRedisWarn < 5_000) return;
      lastRedisWarn = Date.now();
      logger.warn({ err }, 'pool: coordination error');
    },
  });
  let stopping = false;
  let wakeStop: (() => void) | undefined;

  const messages$ = new Observable<SourceMessage>((subscriber) => {
    const parts = new Map<number, Partition>();
    const keepAliveMs = Math.max(50, Math.floor(s.ackWaitMs / 3));
    const keepAlive = setInterval(() => {
      for (const part of parts.values()) for (const m of part.open) m.working();
    }, keepAliveMs);

    const maybeComplete = (): void => {
      if (stopping && parts.size === 0 && !subscriber.closed) subscriber.complete();
    };
    /** A stopped partition whose in-flight work is settled is released. */
    const settle = (p: number, part: Partition): void => {
      if (!part.draining || part.fetching || part.open.size > 0) return;
      if (parts.get(p) !== part) return;
      parts.delete(p);
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
    const start = (p: number, epoch: number): void => {
      if (stopping || parts.has(p)) return;
      const part: Partition = { epoch, stop$: new Subject<void>(), open: new Set(), fetching: true, draining: false };
      parts.set(p, part);
      const fence = { ...coordinator.fenceArgs(p, epoch), isCurrent: () => coordinator.holds(p, epoch) };
      const js = jetstreamSource({
        servers: s.servers,
        stream: s.stream,
        subject: `${s.subject}.${p}`,
        streamSubject: s.subject,
        // The previous owner may have crashed with messages unacked: take them again in order.
        resumeInOrder: true,
        durable: partitionDurable(s.durable, p),
        ackWaitMs: s.ackWaitMs,
        batchSize: Math.max(1, Math.min(s.batchSize, options.maxAckPendingPerPartition)),
        maxAckPending: options.maxAckPendingPerPartition,
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
          logger.error({ err, partition: p }, 'pool: partition source failed; giving the partition up');
          part.fetching = false;
          part.draining = true;
          settle(p, part);
        },
        complete: () => {
          statusSub.unsubscribe();
          part.fetching = false;
          settle(p, part);
        },
      });
      logger.info({ partition: p, epoch }, 'pool: partition acquired');
    };
    const drain = (p: number): void => {
      const part = parts.get(p);
      if (!part || part.draining) return;
      part.draining = true;
      part.stop$.next();
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
    // Redis not answering yet is not a reason to exit: keep trying to join. A partition count
    // that differs from the pool's is (it needs an operator).
    const join = async (): Promise<void> => {
      for (let delay = 250; !subscriber.closed; delay = Math.min(delay * 2, 5_000)) {
        try {
          await coordinator.start();
          return;
        } catch (err) {
          if (err instanceof PoolConfigError) throw err;
          if (Date.now() - lastRedisWarn > 5_000) {
            lastRedisWarn = Date.now();
            logger.warn({ err }, 'pool: cannot join yet (redis); retrying');
          }
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    };
    join().catch((err: unknown) => subscriber.error(err));

    return () => {
      clearInterval(keepAlive);
      ownership.unsubscribe();
      for (const part of parts.values()) part.stop$.next();
      parts.clear();
      void coordinator
        .close()
        .catch(() => {})
        .finally(() => redis.disconnect());
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
