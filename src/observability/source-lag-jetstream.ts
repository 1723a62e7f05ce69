/**
 * The lag of a JetStream source (`source-lag.ts`): one durable consumer for a single worker,
 * each partition's current consumer (the latest epoch's) in a pool. Every worker of a pool
 * measures the whole stream, so each sees the pool's lag (and the `delay` rule judges the
 * same condition everywhere; its transition is claimed once in the alert state).
 *
 * Cost per measurement: one consumer info (single) or one consumer listing (pool), plus one
 * stream message read per consumer that has something waiting, and one stream info when a
 * partition has no consumer yet.
 */
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type ConsumerInfo, type JetStreamManager, type MsgRequest } from '@nats-io/jetstream';
import { consumerResumePoint } from '../streams/jetstream.js';
import { connectNats, type NatsHandle } from '../streams/nats.js';
import { listPartitionConsumers } from '../worker/pool-source.js';
import type { LagMeter, PartitionLag, SourceLag } from './source-lag.js';

export interface JetStreamLagOptions {
  servers: string | string[];
  stream: string;
  /** The source subject; partition n is `<subject>.<n>`, a single worker reads `<subject>.>`. */
  subject: string;
  /** The durable consumer (single worker), or the pool's name (its partitions' consumers start with it). */
  durable: string;
  /** Pool mode: the partition count. Absent: one consumer, `durable`. */
  partitions?: number;
}

/** The first message at or after `seq` on `subject` (a pattern), as the stream stores it. */
async function firstMessageAt(jsm: JetStreamManager, stream: string, subject: string, seq: number): Promise<number | undefined> {
  // STREAM.MSG.GET takes `next_by_subj` (nats-server 2.9+); the client's type lists only seq/last_by_subj.
  const query = { seq, next_by_subj: subject } as unknown as MsgRequest;
  const m = await jsm.streams.getMessage(stream, query);
  return m ? m.time.getTime() : undefined;
}

/** A consumer's lag: its counts, and the arrival of the first message above its ack floor. */
async function consumerLag(jsm: JetStreamManager, stream: string, info: ConsumerInfo, fallbackSubject: string, partition?: number): Promise<PartitionLag> {
  const lag: PartitionLag = { ...(partition !== undefined ? { partition } : {}), consumer: info.name, pending: info.num_pending, ackPending: info.num_ack_pending };
  if (lag.pending + lag.ackPending === 0) return lag;
  const subject = info.config.filter_subject ?? info.config.filter_subjects?.[0] ?? fallbackSubject;
  const oldestAt = await firstMessageAt(jsm, stream, subject, consumerResumePoint(info));
  return oldestAt === undefined ? lag : { ...lag, oldestAt };
}

/**
 * @example
 * const meter = jetstreamLagMeter({ servers, stream: 'PROFILES', subject: 'profiles.updates', durable: 'hd', partitions: 16 });
 * const lag = await meter.measure();
 */
export function jetstreamLagMeter(o: JetStreamLagOptions): LagMeter {
  let nats: Promise<NatsHandle> | undefined;
  let jsm: Promise<JetStreamManager> | undefined;
  let closed = false;
  const manager = (): Promise<JetStreamManager> => {
    if (closed) return Promise.reject(new Error('source lag: the meter is closed'));
    nats ??= connectNats({ servers: o.servers, name: 'http-destination:lag' });
    jsm ??= nats.then((h) => jetstreamManager(h.nc));
    return jsm.catch((err: unknown) => {
      // Not connected at all yet (a reconnect is the client's business once it is): try again next time.
      nats = undefined;
      jsm = undefined;
      throw err;
    });
  };

  /** Messages of `subject.<p>` per partition p, for partitions without a consumer. */
  const perSubject = async (m: JetStreamManager): Promise<Record<string, number>> => {
    const info = await m.streams.info(o.stream, { subjects_filter: `${o.subject}.>` });
    return info.state.subjects ?? {};
  };

  /** A partition (or source) nobody consumed yet: everything on its subject waits. */
  const unconsumed = async (m: JetStreamManager, subject: string, count: number, partition?: number): Promise<PartitionLag> => {
    const lag: PartitionLag = { ...(partition !== undefined ? { partition } : {}), pending: count, ackPending: 0 };
    if (count === 0) return lag;
    const oldestAt = await firstMessageAt(m, o.stream, subject, 1);
    return oldestAt === undefined ? lag : { ...lag, oldestAt };
  };

  return {
    source: 'jetstream',
    async measure(): Promise<SourceLag> {
      const m = await manager();
      const at = Date.now();
      if (o.partitions === undefined) {
        let info: ConsumerInfo | undefined;
        try {
          info = await m.consumers.info(o.stream, o.durable);
        } catch (err) {
          if (!(err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.ConsumerNotFound || err.code === JetStreamApiCodes.StreamNotFound))) throw err;
        }
        if (info) return { source: 'jetstream', at, partitions: [await consumerLag(m, o.stream, info, `${o.subject}.>`)] };
        const subjects = await perSubject(m).catch(() => ({}) as Record<string, number>);
        const count = Object.values(subjects).reduce((a, b) => a + b, 0);
        return { source: 'jetstream', at, partitions: [await unconsumed(m, `${o.subject}.>`, count)] };
      }
      const consumers = await listPartitionConsumers(m, o.stream, o.durable, o.partitions);
      const subjects = consumers.some((list) => list.length === 0) ? await perSubject(m) : {};
      const partitions = await Promise.all(
        consumers.map((list, p) => {
          const current = list[0]?.info;
          const subject = `${o.subject}.${p}`;
          return current ? consumerLag(m, o.stream, current, subject, p) : unconsumed(m, subject, subjects[subject] ?? 0, p);
        }),
      );
      return { source: 'jetstream', at, partitions };
    },
    async close() {
      closed = true;
      const h = nats;
      nats = undefined;
      jsm = undefined;
      await h?.then((x) => x.close()).catch(() => {});
    },
  };
}
