/**
 * Readers of what a backbone run left in Redis (snapshots, audience members) and JetStream
 * (a consumer's state).
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import type { ProfileSnapshot } from '../../../src/domain/types.js';

/** Reads snapshots `<prefix>p:<id>` field `s` (parsed) with ioredis. */
export async function readSnapshots(
  url: string,
  prefix: string,
  profileIds: readonly string[],
): Promise<Map<string, ProfileSnapshot | null>> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: false });
  try {
    const out = new Map<string, ProfileSnapshot | null>();
    const pipe = redis.pipeline();
    for (const id of profileIds) pipe.hget(`${prefix}p:${id}`, 's');
    const replies = (await pipe.exec()) ?? [];
    profileIds.forEach((id, i) => {
      const [err, raw] = replies[i] ?? [null, null];
      if (err) throw err;
      out.set(id, typeof raw === 'string' ? (JSON.parse(raw) as ProfileSnapshot) : null);
    });
    return out;
  } finally {
    redis.disconnect();
  }
}

/** Members of `<prefix>a:<audienceId>`. */
export async function readMembers(url: string, prefix: string, audienceId: string): Promise<string[]> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    return (await redis.smembers(`${prefix}a:${audienceId}`)).sort();
  } finally {
    redis.disconnect();
  }
}

/**
 * `num_pending` and `num_ack_pending` summed over the stream's consumers whose name is
 * `durable` or starts with `durable-` (a single worker's consumer, or a pool's per-partition
 * consumers `<durable>-p<n>`); null when there is none.
 */
export async function consumerState(
  natsUrl: string,
  stream: string,
  durable: string,
): Promise<{ pending: number; ackPending: number; redelivered: number; consumers: number } | null> {
  const nc = await connect({ servers: natsUrl, reconnect: false, timeout: 2_000 });
  try {
    const jsm = await jetstreamManager(nc);
    const out = { pending: 0, ackPending: 0, redelivered: 0, consumers: 0 };
    for await (const info of jsm.consumers.list(stream)) {
      // nats-server 2.9 lists a consumer deleted while the list is read as null
      if (!info) continue;
      const name = info.name;
      if (name !== durable && !name.startsWith(`${durable}-`)) continue;
      out.consumers++;
      out.pending += info.num_pending;
      out.ackPending += info.num_ack_pending;
      out.redelivered += info.num_redelivered;
    }
    return out.consumers > 0 ? out : null;
  } finally {
    await nc.close();
  }
}
