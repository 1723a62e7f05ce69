/**
 * Waiting for the end of a pool run's work: the partition consumers idle and the receiver
 * quiet; the consumers' state for failure messages.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { listPartitionConsumers, type PartitionConsumer } from '../../../src/worker/pool-source.js';
import { consumerState, settleWhenIdle, type Backbone, type RecordingReceiver } from '../backbone.js';
import { POOL, type PoolSetup } from './config.js';

/**
 * Waits until `done()` holds, or every partition's consumer is idle (nothing pending, nothing
 * unacked) and no request arrived for `quietMs`, or `timeoutMs` passed. Never throws.
 */
export async function settlePool(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  setup: PoolSetup;
  done: () => boolean;
  quietMs?: number;
  timeoutMs: number;
}): Promise<void> {
  await settleWhenIdle({ ...o, idle: () => poolIdle(o.bb, o.setup) });
}

/**
 * Every consumer of each partition (`<durable>-p<n>-e<epoch>`), the current one (latest
 * epoch) first; an empty list for a partition never taken.
 */
export async function partitionConsumers(bb: Backbone, setup: PoolSetup): Promise<PartitionConsumer[][]> {
  const nc = await connect({ servers: bb.nats.url, timeout: 5_000 });
  try {
    return await listPartitionConsumers(await jetstreamManager(nc), setup.stream, setup.durable, POOL.partitions);
  } finally {
    await nc.close();
  }
}

/** True when every partition's current consumer has nothing pending and nothing unacked. */
export async function poolIdle(bb: Backbone, setup: PoolSetup): Promise<boolean> {
  const all = await partitionConsumers(bb, setup).catch(() => null);
  return all !== null && all.every((list) => list.length > 0 && list[0].info.num_pending === 0 && list[0].info.num_ack_pending === 0);
}

/** `p<n>=<num_redelivered>` of each partition's consumers with redeliveries (for failure logs). */
export async function redeliveries(bb: Backbone, setup: PoolSetup): Promise<string> {
  const out: string[] = [];
  for (let p = 0; p < POOL.partitions; p++) {
    const st = await consumerState(bb.nats.url, setup.stream, `${setup.durable}-p${p}`).catch(() => null);
    if (st && st.redelivered > 0) out.push(`p${p}=${st.redelivered}`);
  }
  return out.join(' ') || 'none';
}
