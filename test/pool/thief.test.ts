/**
 * A worker that lost a partition without knowing it yet must not take the new owner's
 * messages. A worker paused past its lease (SIGSTOP, a long GC or CPU stall) runs its event
 * loop again before its coordinator ticks and finds the lease gone; meanwhile its pull
 * consumer may pull again (a refill as it reads the messages delivered during the pause, a
 * restart on the "consumer deleted" the takeover sent it). Pull requests address a consumer by
 * name: if the new owner's consumer had the old one's name, the fenced worker would take a
 * batch of the new owner's messages, nak them (its writes are refused), and they would come
 * back to the new owner after newer updates of the same profiles were applied: skipped as stale
 * by the watermark, lost.
 *
 * Here the window is stretched so the test is deterministic rather than a race of
 * milliseconds: worker A (in process, a long lease: it ticks every 3 s) holds the only
 * partition with messages in flight; right after one of its renewals its lease is deleted, as
 * if it had expired while A was paused, and worker B (the partition's desired owner) takes it
 * over at once. A does not learn it from its coordinator for 3 s while its consumer runs (and
 * restarts on "consumer deleted"). Updates then flow: B must get every one, in stream order,
 * and A none. (With one consumer name per partition, A took about half of them and ~45
 * updates were lost, in every run.)
 *
 * The "store" is the real one's rule on one profile: a message is applied only while its
 * fence (the lease `<worker>:<epoch>`) is current in Redis, and only when its stream sequence
 * is above the watermark (the sequence of the last update applied); a fenced message is
 * nak'ed with a delay, as the worker's pipeline does.
 */
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { Writable } from 'node:stream';
import { concatMap, from, type Subscription } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import type { SourceMessage } from '../../src/streams/types.js';
import { createConsumer } from '../../src/streams/jetstream.js';
import { listPartitionConsumers, openPoolSource, takeOverPartitionConsumer, type TakeOverOptions } from '../../src/worker/pool-source.js';
import { poolKeys, rendezvousWeight } from '../../src/worker/pool.js';
import { sleep, type Backbone } from '../support/backbone.js';
import { createStream, parseLogs, usePoolFixture, type LogLine } from '../support/pool.js';

const STREAM = 'THIEF';
const SUBJECT = 'thief.updates';
const DURABLE = 'thief';
const PREFIX = 'thief:';
/** A's lease: it ticks (renews, notices a lost lease) every leaseMs / 5 = 3 s. */
const A_LEASE_MS = 15_000;
/** B's lease: it acquires within 300 ms of joining. */
const B_LEASE_MS = 1_500;

/** Two worker ids of which the second is the desired owner of partition 0 (rendezvous hashing). */
function workerIds(): { a: string; b: string } {
  for (let i = 0; ; i++) {
    const a = `thief-a-${i}`;
    const b = `thief-b-${i}`;
    if (rendezvousWeight(b, 0) > rendezvousWeight(a, 0)) return { a, b };
  }
}

/** The pool source of one worker, with its log lines kept. */
function openWorker(bb: Backbone, workerId: string, leaseMs: number) {
  let text = '';
  const logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString();
        done();
      },
    }),
  });
  const source = openPoolSource({
    source: {
      kind: 'jetstream',
      servers: [bb.nats.url],
      stream: STREAM,
      subject: SUBJECT,
      durable: DURABLE,
      ackWaitMs: 2_000,
      batchSize: 8,
      partitions: 1,
      leaseMs,
    },
    redisUrl: bb.redis.url,
    keyPrefix: PREFIX,
    maxInFlight: 512,
    drainTimeoutMs: 1_000,
    logger,
    workerId,
  });
  return { source, logs: (): LogLine[] => parseLogs(text) };
}

interface Received {
  worker: 'A' | 'B';
  seq: number;
  at: number;
  outcome: 'applied' | 'stale' | 'fenced' | 'held';
}

const pool = usePoolFixture();
let nc: NatsConnection;
let redis: Redis;

beforeAll(async () => {
  nc = await connect({ servers: pool.bb.nats.url, timeout: 5_000 });
  redis = new Redis(pool.bb.redis.url, { maxRetriesPerRequest: 1 });
});
// Before the fixture stops the servers (after-hooks run in reverse order).
afterAll(async () => {
  redis?.disconnect();
  await nc?.close();
});

describe('pool: a worker that lost its partition without knowing it', () => {

  it('takes no message from the new owner: the new owner gets every update, in stream order', async () => {
    await createStream(pool.bb, STREAM, SUBJECT);
    const js = jetstream(nc);
    let published = 0;
    const publish = async (n: number, gapMs = 0): Promise<void> => {
      for (let i = 0; i < n; i++) {
        await js.publish(`${SUBJECT}.0`, new TextEncoder().encode(JSON.stringify({ i: published })));
        published++;
        if (gapMs > 0) await sleep(gapMs);
      }
    };
    const ids = workerIds();
    const leaseKey = poolKeys({ keyPrefix: PREFIX, pool: DURABLE }).lease(0);

    // The store: one profile, its watermark, and the fence checked in Redis.
    let watermark = 0;
    const applied = new Set<number>();
    const received: Received[] = [];
    /** While set, A keeps what it receives in flight (it is "paused" mid-work). */
    let aHolding = false;
    const held: SourceMessage[] = [];
    const settle = async (worker: 'A' | 'B', m: SourceMessage): Promise<void> => {
      const seq = m.seq;
      if (worker === 'A' && aHolding) {
        held.push(m);
        received.push({ worker, seq, at: Date.now(), outcome: 'held' });
        return;
      }
      const fence = m.fence;
      const current = fence !== undefined && (await redis.get(fence.key)) === fence.value;
      if (!current) {
        received.push({ worker, seq, at: Date.now(), outcome: 'fenced' });
        m.nak(200);
        return;
      }
      if (seq > watermark) {
        watermark = seq;
        applied.add(seq);
        received.push({ worker, seq, at: Date.now(), outcome: 'applied' });
      } else {
        received.push({ worker, seq, at: Date.now(), outcome: 'stale' });
      }
      m.ack();
    };
    const consume = (worker: 'A' | 'B', w: ReturnType<typeof openWorker>): Subscription =>
      w.source.messages$.pipe(concatMap((m) => from(settle(worker, m)))).subscribe({ error: () => {} });

    const a = openWorker(pool.bb, ids.a, A_LEASE_MS);
    const subA = consume('A', a);
    let b: ReturnType<typeof openWorker> | undefined;
    let subB: Subscription | undefined;
    const story: string[] = [];
    const t0 = Date.now();
    const mark = (what: string): void => void story.push(`+${Date.now() - t0} ms ${what}`);
    try {
      await publish(20);
      await waitFor(() => applied.size === 20, 20_000, 'A applying the first 20 updates');
      mark('A applied 1..20');
      // A "pauses" mid-work: 8 more updates delivered to it and left in flight.
      aHolding = true;
      await publish(8);
      await waitFor(() => held.length === 8, 10_000, 'A receiving 21..28');
      // Right after one of A's renewals, its lease disappears as if it had expired while A was
      // paused; B, the desired owner, joins and takes the partition over within ~300 ms.
      let ttl = await redis.pttl(leaseKey);
      for (let last = ttl; ; last = ttl) {
        ttl = await redis.pttl(leaseKey);
        if (ttl > last) break;
        await sleep(5);
      }
      await redis.del(leaseKey);
      mark(`A's lease deleted ${A_LEASE_MS - ttl} ms after its last renewal`);
      b = openWorker(pool.bb, ids.b, B_LEASE_MS);
      subB = consume('B', b);
      await waitFor(() => [21, 22, 23, 24, 25, 26, 27, 28].every((s) => applied.has(s)), 10_000, 'B applying 21..28');
      mark('B applied 21..28');
      // A goes on: what it held is fenced now (nak'ed, as the worker's pipeline does).
      aHolding = false;
      for (const m of held.splice(0)) void settle('A', m);
      // Updates flow while A still believes it holds the partition (its next tick is ≥ 1.5 s
      // away), its consumer still running.
      await sleep(300);
      const firstNew = published + 1;
      await publish(120, 3);
      mark(`published ${firstNew}..${published}`);
      // The window was open throughout: A's coordinator had not ticked since (it would have
      // found the lease gone). (A may have given the partition up already, its consumer gone.)
      expect(a.logs().filter((l) => l.msg.startsWith('pool: partition lease lost')), 'A told by its coordinator').toEqual([]);
      await waitFor(() => applied.size === published || Date.now() - t0 > 30_000, 30_000, 'every update applied');
      // Nak'ed messages come back after 200 ms: leave them time to.
      await sleep(1_000);

      const all = Array.from({ length: published }, (_, i) => i + 1);
      const lost = all.filter((s) => !applied.has(s));
      const stolen = received.filter((r) => r.worker === 'A' && r.seq >= firstNew);
      const byB = received.filter((r) => r.worker === 'B').map((r) => r.seq);
      const outOfOrder = byB.filter((s, i) => i > 0 && s < byB[i - 1]);
      const why =
        `\n${story.join('\n')}` +
        `\nA received after the takeover: ${stolen.map((r) => `${r.seq}(${r.outcome})`).join(' ') || 'nothing'}` +
        `\nB received: ${byB.join(' ')}` +
        `\nA's pool log: ${a.logs().filter((l) => l.msg.startsWith('pool:') || l.level >= 40).map((l) => l.msg).join(' | ')}`;
      console.log(`[thief]${why.replace(/\nB received: .*/, '')}`);
      expect.soft(stolen.map((r) => r.seq), `messages of the new owner's consumer taken by A${why}`).toEqual([]);
      expect.soft(outOfOrder, `B got these after a higher sequence${why}`).toEqual([]);
      expect(lost, `updates never applied (skipped as stale or never delivered)${why}`).toEqual([]);
      // A found out and gave the partition up.
      await waitFor(() => a.source.coordinator.held().length === 0, 10_000, 'A giving partition 0 up');
    } finally {
      subA.unsubscribe();
      subB?.unsubscribe();
      a.source.stop();
      b?.source.stop();
      await sleep(200);
    }
  }, 60_000);
});

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

describe('takeOverPartitionConsumer', () => {
  const stream = 'TAKEOVER';
  const subject = 'takeover.updates';
  const durable = 'tk';
  let jsm: JetStreamManager;

  beforeAll(async () => {
    await createStream(pool.bb, stream, subject);
    jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    for (let i = 0; i < 10; i++) {
      await js.publish(`${subject}.3`, new TextEncoder().encode(`p3-${i}`));
      await js.publish(`${subject}.4`, new TextEncoder().encode(`p4-${i}`));
    }
  });

  const options = (partition: number, epoch: number, over: Partial<TakeOverOptions> = {}): TakeOverOptions => ({
    jsm,
    stream,
    subject: `${subject}.${partition}`,
    durable,
    partition,
    epoch,
    maxAckPending: 64,
    ackWaitMs: 30_000,
    holdsLease: async () => true,
    raiseEpoch: async () => {
      throw new Error('raiseEpoch not expected');
    },
    ...over,
  });
  const names = async (partition: number): Promise<string[]> =>
    (await listPartitionConsumers(jsm, stream, durable, 5))[partition].map((c) => c.info.name);
  /** Fetches `n` messages of a consumer, acking the first `ack` of them; their stream sequences. */
  const take = async (name: string, n: number, ack: number): Promise<number[]> => {
    const consumer = await jetstream(nc).consumers.get(stream, name);
    const seqs: number[] = [];
    for await (const m of await consumer.fetch({ max_messages: n, expires: 2_000 })) {
      if (seqs.length < ack) m.ack();
      seqs.push(m.info.streamSequence);
      if (seqs.length === n) break;
    }
    // The acks reach the server before the next consumer info.
    await nc.flush();
    return seqs;
  };

  it('creates the epoch\'s consumer from the ack floor of the latest earlier one, then deletes the earlier ones', async () => {
    const first = await takeOverPartitionConsumer(options(3, 1));
    expect(first.name).toBe('tk-p3-e1');
    expect(first.config.deliver_policy).toBe(DeliverPolicy.All);
    const got = await take('tk-p3-e1', 4, 3);
    expect(got).toHaveLength(4);
    // A leftover of an older epoch does not set the start: the latest earlier one does.
    await createConsumer({ jsm, stream, subject: `${subject}.3`, durable: 'tk-p3' });
    const next = await takeOverPartitionConsumer(options(3, 4));
    expect(next.name).toBe('tk-p3-e4');
    expect(next.config.opt_start_seq).toBe(got[3]);
    expect(await names(3)).toEqual(['tk-p3-e4']);
    expect(await take('tk-p3-e4', 1, 0)).toEqual([got[3]]);
    // Taken again at the same epoch (an earlier attempt's answer lost): kept as it is.
    expect((await takeOverPartitionConsumer(options(3, 4))).config.opt_start_seq).toBe(got[3]);
  });

  it('takes over from a consumer named before epochs (`<durable>-p<n>`)', async () => {
    await createConsumer({ jsm, stream, subject: `${subject}.4`, durable: 'tk-p4' });
    const got = await take('tk-p4', 2, 2);
    const next = await takeOverPartitionConsumer(options(4, 7));
    expect(next.config.opt_start_seq).toBe(got[1] + 1);
    expect(await names(4)).toEqual(['tk-p4-e7']);
  });

  it('a worker whose lease is gone creates and deletes nothing', async () => {
    const before = await names(3);
    await expect(takeOverPartitionConsumer(options(3, 5, { holdsLease: async () => false }))).rejects.toMatchObject({ code: 'ERR_FENCED' });
    expect(await names(3)).toEqual(before);
  });

  it('a consumer of a later epoch: fenced; with the lease still held (the counter went back), the counter is raised past it', async () => {
    const before = await names(3); // tk-p3-e4
    await expect(takeOverPartitionConsumer(options(3, 2, { holdsLease: async () => false }))).rejects.toMatchObject({ code: 'ERR_FENCED' });
    const raised: number[] = [];
    await expect(
      takeOverPartitionConsumer(options(3, 2, { raiseEpoch: async (e) => void raised.push(e) })),
    ).rejects.toMatchObject({ code: 'ERR_FENCED' });
    expect(raised).toEqual([4]);
    expect(await names(3)).toEqual(before);
  });

  it('the lease lost while it ran: its consumer stays for the next owner, unless the next owner\'s is there', async () => {
    // Lost after the first check, nobody else yet: the consumer stays, the earlier one is gone.
    let calls = 0;
    await expect(takeOverPartitionConsumer(options(3, 6, { holdsLease: async () => ++calls === 1 }))).rejects.toMatchObject({ code: 'ERR_FENCED' });
    expect(await names(3)).toEqual(['tk-p3-e6']);
    // Lost, and the next owner created its consumer meanwhile: its own is deleted.
    calls = 0;
    const lateNext = async (): Promise<boolean> => {
      if (++calls === 1) return true;
      await createConsumer({ jsm, stream, subject: `${subject}.3`, durable: 'tk-p3-e9', startSeq: 1 });
      return false;
    };
    await expect(takeOverPartitionConsumer(options(3, 8, { holdsLease: lateNext }))).rejects.toMatchObject({ code: 'ERR_FENCED' });
    expect(await names(3)).toEqual(['tk-p3-e9']);
  });
});
