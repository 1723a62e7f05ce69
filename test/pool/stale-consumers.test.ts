/**
 * A consumer of an earlier epoch of a partition, left by an owner that died mid-takeover
 * (issue 15), is deleted by the partition's current owner without waiting for the partition to
 * move: made by hand here (`<durable>-p<n>-e<epoch>`, or `<durable>-p<n>` for epoch 0) while a
 * worker consumes the partition. (The takeover's own deletion of earlier consumers is tested in
 * thief.test.ts.)
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { createConsumer } from '../../src/streams/jetstream.js';
import { fullyOwnedBy, partitionConsumers, stopGracefully, usePoolFixture } from '../support/pool.js';

describe('pool: stale partition consumers', () => {
  const pool = usePoolFixture();

  it("the owner deletes a consumer of an earlier epoch of its partition; its own stays", async () => {
    const { bb, rx } = pool;
    const s = pool.flow({ name: 'st' });
    await s.prime();
    const probe = s.probe;
    const w1 = s.start();
    const nc = await connect({ servers: bb.nats.url, timeout: 5_000 });
    try {
      await probe.waitFor((x) => fullyOwnedBy(x, [w1]) === '', 45_000, 'w1 owning every partition', { workers: [w1] });
      const p = 5;
      // w1's consumer of the partition, at the epoch of its lease (the takeover is done).
      const acquiredLine = () => w1.logs().find((l) => l.msg === 'pool: partition acquired' && l.partition === p);
      await rx.waitFor(() => acquiredLine() !== undefined, 30_000, `w1 logging partition ${p} acquired`);
      const acquired = acquiredLine();
      expect(acquired, 'w1 acquiring the partition (its log)').toBeDefined();
      const mine = `${s.durable}-p${p}-e${acquired?.epoch as number}`;
      let current = (await partitionConsumers(bb, s))[p];
      const deadline = Date.now() + 30_000;
      while (current.map((c) => c.info.name).join() !== mine && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        current = (await partitionConsumers(bb, s))[p];
      }
      expect(current.map((c) => c.info.name), 'the partition consumer of w1').toEqual([mine]);
      const epoch = current[0].epoch;
      const staleName = epoch > 1 ? `${s.durable}-p${p}-e${epoch - 1}` : `${s.durable}-p${p}`;
      const jsm = await jetstreamManager(nc);
      await createConsumer({ jsm, stream: s.stream, subject: `${s.subject}.${p}`, durable: staleName });
      expect((await partitionConsumers(bb, s))[p].map((c) => c.info.name)).toContain(staleName);

      await rx.waitFor(
        () => w1.logs().some((l) => l.msg === 'pool: stale partition consumers deleted' && (l.consumers as string[]).includes(staleName)),
        30_000,
        `w1 deleting ${staleName}`,
      );
      expect((await partitionConsumers(bb, s))[p].map((c) => c.info.name)).toEqual([current[0].info.name]);
      expect(await stopGracefully(w1), w1.stderr.slice(-2_000)).toBe(0);
    } finally {
      await nc.close();
    }
  }, 120_000);
});
