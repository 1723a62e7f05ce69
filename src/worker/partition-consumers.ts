/**
 * Pool mode: the durable consumers of a partition (`<durable>-p<n>-e<epoch>`), how they are
 * named and listed, and how a new owner of a partition takes over from the previous owner's.
 */
import { jetstreamManager, type ConsumerInfo, type JetStreamManager } from '@nats-io/jetstream';
import type { Logger } from '../observability/logger.js';
import type { NatsHandle } from '../streams/nats.js';
import { FencedError } from '../errors.js';
import { consumerResumePoint, createConsumer, deleteConsumer } from '../streams/jetstream-admin.js';

/**
 * The name every durable consumer of a partition starts with, `<durable>-p<n>`: its consumer
 * at lease epoch E is `<durable>-p<n>-e<E>` (`partitionConsumerName`). (The partition's one
 * consumer had this name before consumers were named per epoch; a new owner takes over from it
 * as from any earlier epoch's.) To find a partition's current consumer, use
 * `listPartitionConsumers`.
 */
export function partitionDurable(durable: string, partition: number): string {
  return `${durable}-p${partition}`;
}

/**
 * The durable consumer through which the owner of a partition's lease at `epoch` consumes it.
 * One per epoch, never reused: a pull request addresses a consumer by name, so a worker that
 * lost the lease (and does not know yet, e.g. just resumed from a pause) can only pull from its
 * own consumer, which the next owner deleted, never from the next owner's.
 */
export function partitionConsumerName(durable: string, partition: number, epoch: number): string {
  return `${partitionDurable(durable, partition)}-e${epoch}`;
}

/**
 * The lease epoch of a consumer of the partition, from its name: E for
 * `<durable>-p<n>-e<E>`, 0 for `<durable>-p<n>` (named before epochs), undefined for a
 * consumer of something else.
 */
export function partitionConsumerEpoch(durable: string, partition: number, name: string): number | undefined {
  const base = partitionDurable(durable, partition);
  if (name === base) return 0;
  if (!name.startsWith(`${base}-e`)) return undefined;
  const digits = name.slice(base.length + 2);
  if (!/^[1-9][0-9]*$/.test(digits)) return undefined;
  const epoch = Number(digits);
  return Number.isSafeInteger(epoch) ? epoch : undefined;
}

/** A consumer of a partition with its lease epoch. */
export interface PartitionConsumer {
  partition: number;
  epoch: number;
  info: ConsumerInfo;
}

/**
 * Every consumer of the pool's partitions on the stream (one API call, `CONSUMER.LIST`,
 * which reads every consumer's info), by partition, latest epoch first. The first of each
 * partition is its current consumer: the one its owner consumes, or its last owner consumed.
 * (The others are leftovers of an owner that stopped while taking the partition over; the
 * next owner deletes them.)
 */
export async function listPartitionConsumers(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  partitions: number,
): Promise<PartitionConsumer[][]> {
  const out: PartitionConsumer[][] = Array.from({ length: partitions }, () => []);
  const prefix = `${durable}-p`;
  for await (const info of jsm.consumers.list(stream)) {
    // nats-server 2.9 lists a consumer deleted while the list is read as null: skip it.
    if (!info?.name?.startsWith(prefix)) continue;
    const partition = Number.parseInt(info.name.slice(prefix.length), 10);
    if (!(partition >= 0 && partition < partitions)) continue;
    // (Exact: `…-p03`, `…-p3-x` are not the partition's.)
    const epoch = partitionConsumerEpoch(durable, partition, info.name);
    if (epoch === undefined) continue;
    out[partition].push({ partition, epoch, info });
  }
  for (const list of out) list.sort((a, b) => b.epoch - a.epoch);
  return out;
}

export interface TakeOverOptions {
  jsm: JetStreamManager;
  stream: string;
  /** The partition's subject, `<subject>.<n>`. */
  subject: string;
  durable: string;
  partition: number;
  /** The epoch of the lease this worker holds on the partition. */
  epoch: number;
  maxAckPending: number;
  ackWaitMs: number;
  /** Whether the lease at `epoch` is still this worker's, asked of Redis. */
  holdsLease: () => Promise<boolean>;
  /** Raises the partition's epoch counter in Redis to at least this (`PoolCoordinator.raiseEpoch`). */
  raiseEpoch: (atLeast: number) => Promise<void>;
}

/**
 * Makes the consumer of the partition at this lease epoch ready, taking over from the
 * partition's previous consumer: creates `<durable>-p<n>-e<epoch>` delivering from just
 * above the ack floor of the latest earlier epoch's consumer (everything when there is none),
 * so the messages its owner left unacknowledged come again first and in stream order; then
 * deletes the earlier epochs' consumers (a previous owner still pulling from its own consumer
 * gets nothing more). The floor is read once the previous owner has stopped — it released the
 * lease after its consumer stopped, or its lease expired — so a graceful handover (everything
 * acked) delivers nothing twice; after a crash, messages acked above the floor come again and
 * the snapshot store's watermark skips them. A consumer of this epoch already there (an
 * earlier attempt of this start) is kept as it is.
 *
 * The lease is checked in Redis before and after: a worker that lost it meanwhile (paused
 * while it ran) creates nothing, or leaves what it created to the next owner to take over
 * from (deleting it instead when the next owner's consumer is there already), and throws
 * `FencedError`. A consumer of a later epoch means the same (its owner took over), unless the
 * lease is still ours: then the pool's epoch counter went back (Redis lost its data): it is
 * raised past those consumers' epochs and `FencedError` asks for the partition to be taken
 * again (at a greater epoch).
 *
 * @throws FencedError (`ERR_FENCED`) as above; NatsError `ERR_JETSTREAM` / StoreError when
 * NATS or Redis fail (worth retrying).
 */
export async function takeOverPartitionConsumer(o: TakeOverOptions): Promise<ConsumerInfo> {
  const { jsm, stream, durable, partition, epoch } = o;
  const name = partitionConsumerName(durable, partition, epoch);
  const fenced = (why: string): FencedError => new FencedError(`pool: partition ${partition} at epoch ${epoch}: ${why}`);
  if (!(await o.holdsLease())) throw fenced('the lease is not held any more');
  // (Partitions 0..partition listed: the others are not needed.)
  const all = (await listPartitionConsumers(jsm, stream, durable, partition + 1))[partition];
  const later = all.filter((c) => c.epoch > epoch);
  if (later.length > 0) {
    if (!(await o.holdsLease())) throw fenced(`the lease is lost (consumer ${later[0].info.name} exists)`);
    await o.raiseEpoch(later[0].epoch);
    throw fenced(`consumers up to epoch ${later[0].epoch} exist: the epoch counter was behind, raised; the partition is taken again`);
  }
  const earlier = all.filter((c) => c.epoch < epoch);
  let mine = all.find((c) => c.epoch === epoch)?.info;
  if (!mine) {
    const previous = earlier[0];
    mine = await createConsumer({
      jsm,
      stream,
      subject: o.subject,
      durable: name,
      startSeq: previous ? consumerResumePoint(previous.info) : undefined,
      maxAckPending: o.maxAckPending,
      ackWaitMs: o.ackWaitMs,
    });
  }
  for (const c of earlier) await deleteConsumer(jsm, stream, c.info.name);
  // Paused after the first check, this worker may have lost the lease meanwhile. Its consumer
  // is then where the next owner must start from (the earlier ones are gone) unless a later
  // owner has created its own already (from what it listed before): only then is it deleted.
  if (!(await o.holdsLease())) {
    const now = (await listPartitionConsumers(jsm, stream, durable, partition + 1))[partition];
    if (now.some((c) => c.epoch > epoch)) await deleteConsumer(jsm, stream, name);
    throw fenced('the lease was lost while its consumer was being set up');
  }
  return mine;
}

/**
 * Deletes the consumers of earlier epochs of the partitions this worker consumes (`owned`:
 * partition → the epoch of its lease here), provided the consumer of that epoch exists (its
 * takeover is done: an earlier consumer's ack floor is no longer needed) and `holds(p, epoch)`
 * is still true. Such leftovers come from an owner that died while taking a partition over
 * (after creating its consumer, before deleting the earlier ones, or before learning it had
 * lost the lease); the takeover deletes them too, but only at the partition's next move.
 * Returns the names deleted.
 *
 * @throws NatsError `ERR_JETSTREAM` when NATS fails (the next pass tries again).
 */
export async function deleteStaleConsumers(o: {
  jsm: JetStreamManager;
  stream: string;
  durable: string;
  partitions: number;
  owned: ReadonlyMap<number, number>;
  holds: (partition: number, epoch: number) => boolean;
}): Promise<string[]> {
  if (o.owned.size === 0) return [];
  const all = await listPartitionConsumers(o.jsm, o.stream, o.durable, o.partitions);
  const deleted: string[] = [];
  for (const [p, epoch] of o.owned) {
    const list = all[p] ?? [];
    if (!list.some((c) => c.epoch === epoch)) continue;
    for (const c of list) {
      if (c.epoch >= epoch || !o.holds(p, epoch)) continue;
      if (await deleteConsumer(o.jsm, o.stream, c.info.name)) deleted.push(c.info.name);
    }
  }
  return deleted;
}

/**
 * Runs `deleteStaleConsumers` every `everyMs` over the partitions `owned()` returns (one pass at
 * a time; skipped while `nats()` is undefined). Returns the function that stops it.
 */
export function sweepStaleConsumersEvery(
  everyMs: number,
  o: {
    nats: () => NatsHandle | undefined;
    owned: () => ReadonlyMap<number, number>;
    holds: (partition: number, epoch: number) => boolean;
    stream: string;
    durable: string;
    partitions: number;
    logger: Logger;
  },
): () => void {
  let sweeping = false;
  const timer = setInterval(() => {
    const handle = o.nats();
    if (sweeping || !handle) return;
    const owned = o.owned();
    sweeping = true;
    void jetstreamManager(handle.nc)
      .then((jsm) => deleteStaleConsumers({ jsm, stream: o.stream, durable: o.durable, partitions: o.partitions, owned, holds: o.holds }))
      .then((names) => {
        if (names.length > 0) o.logger.info({ consumers: names }, 'pool: stale partition consumers deleted');
      })
      .catch((err: unknown) => o.logger.warn({ err }, 'pool: stale partition consumers not swept; trying again later'))
      .finally(() => (sweeping = false));
  }, everyMs);
  timer.unref?.();
  return () => clearInterval(timer);
}
