/**
 * Source lag measured from the source itself: a real JSON Lines file (lines not yet read, read
 * and not settled, and when the oldest waiting one arrived, from the file's modification
 * time), and a real nats-server (a single durable consumer, and a pool's partition consumers
 * with one partition nobody consumed yet); `startSourceLag` publishes each measurement to the
 * gauges; the delay rule reads it.
 */
import { appendFileSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { readDelay } from '../../src/observability/alerts.js';
import { Metrics } from '../../src/observability/metrics.js';
import { fileLagMeter, lagTotals, startSourceLag, type LagMeter, type SourceLag } from '../../src/observability/source-lag.js';
import { jetstreamLagMeter } from '../../src/observability/source-lag-jetstream.js';
import type { FileProgress } from '../../src/streams/file.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';

const dir = mkdtempSync(join(tmpdir(), 'source-lag-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const line = (i: number): string => `${JSON.stringify({ profileId: `p-${i}` })}\n`;

describe('file lag', () => {
  it('counts lines not yet read and read but not settled, and dates the oldest waiting one from the file', async () => {
    const path = join(dir, 'events.jsonl');
    writeFileSync(path, Array.from({ length: 5 }, (_, i) => line(i)).join(''));
    const t0 = Date.UTC(2026, 11, 5, 9, 0, 0);
    utimesSync(path, t0 / 1000, t0 / 1000);
    const len = line(0).length;
    let progress: FileProgress | undefined;
    const now = t0 + 60_000;
    const meter = fileLagMeter({ path, progress: () => progress, now: () => now });
    // Not reading yet: unknown.
    expect((await meter.measure()).partitions).toEqual([]);
    // Two lines read, none settled.
    progress = { offset: 0, line: 0, readOffset: 2 * len, readLine: 2 };
    expect(await meter.measure()).toEqual({ source: 'file', at: now, partitions: [{ pending: 3, ackPending: 2, oldestAt: t0 }] });
    // Two more lines appended later: they arrived at the new modification time.
    appendFileSync(path, line(5) + line(6));
    const t1 = t0 + 30_000;
    utimesSync(path, t1 / 1000, t1 / 1000);
    expect((await meter.measure()).partitions).toEqual([{ pending: 5, ackPending: 2, oldestAt: t0 }]);
    // Everything of the first write settled, one line of the second read: the oldest waiting arrived at t1.
    progress = { offset: 5 * len, line: 5, readOffset: 6 * len, readLine: 6 };
    const lag = await meter.measure();
    expect(lag.partitions).toEqual([{ pending: 1, ackPending: 1, oldestAt: t1 }]);
    expect(lagTotals(lag)).toEqual({ pending: 1, ackPending: 1, oldestWaitingMs: 30_000 });
    // All settled: nothing waits.
    progress = { offset: 7 * len, line: 7, readOffset: 7 * len, readLine: 7 };
    expect((await meter.measure()).partitions).toEqual([{ pending: 0, ackPending: 0 }]);
    // The file replaced by a shorter one, read from its start: counted again.
    writeFileSync(path, line(0));
    progress = { offset: 0, line: 0, readOffset: 0, readLine: 0 };
    expect((await meter.measure()).partitions).toMatchObject([{ pending: 1, ackPending: 0 }]);
  });

  it('feeds the gauges at each interval and drops them when the source cannot be measured', async () => {
    const metrics = new Metrics();
    let fail = false;
    let n = 0;
    const meter: LagMeter = {
      source: 'file',
      measure: async () => {
        n++;
        if (fail) throw new Error('gone');
        return { source: 'file', at: Date.now(), partitions: [{ pending: n, ackPending: 0 }] };
      },
      close: async () => {},
    };
    const lag = startSourceLag({ meter, metrics, intervalMs: 20 });
    const gauge = async (): Promise<string | undefined> => (await metrics.render()).split('\n').find((l) => l.startsWith('http_destination_source_pending_messages{'));
    for (const end = Date.now() + 5_000; n < 3 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
    expect(n).toBeGreaterThanOrEqual(3);
    expect(await gauge()).toMatch(/^http_destination_source_pending_messages\{source="file",partition="all"\} [1-9]/);
    fail = true;
    const before = n;
    for (const end = Date.now() + 5_000; n < before + 2 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
    expect(await gauge()).toBeUndefined();
    expect(await lag.measure(0)).toBeUndefined();
    await lag.close();
  });

  it('the delay rule fires above its threshold only', () => {
    const rule = { id: 'stalled', kind: 'delay' as const, thresholdMs: 10_000, channels: [] as string[] };
    expect(readDelay(rule, { pending: 0, ackPending: 0, oldestWaitingMs: 0 })).toEqual({ value: 0, threshold: 10_000, firing: false, message: 'no update waiting' });
    expect(readDelay(rule, { pending: 3, ackPending: 1, oldestWaitingMs: 10_000 }).firing).toBe(false);
    expect(readDelay(rule, { pending: 3, ackPending: 1, oldestWaitingMs: 12_300 })).toEqual({
      value: 12_300, threshold: 10_000, firing: true, message: 'the oldest update waiting is 12.3 s old (3 not yet read, 1 unacknowledged)',
    });
  });
});

describe('JetStream lag', () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  beforeAll(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.stop();
  });

  /** Publishes `n` messages on `subject`; returns the stream's stored time of each (ms). */
  async function publish(stream: string, subject: string, n: number): Promise<number[]> {
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const ack = await js.publish(subject, line(i));
      times.push((await jsm.streams.getMessage(stream, { seq: ack.seq }))!.time.getTime());
    }
    return times;
  }

  it('one durable consumer: pending, unacked, and the first message above the ack floor', async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'LAG1', subjects: ['lag1.updates.>'] });
    await jsm.consumers.add('LAG1', { durable_name: 'w', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, filter_subject: 'lag1.updates.>' });
    const meter = jetstreamLagMeter({ servers: nats.url, stream: 'LAG1', subject: 'lag1.updates', durable: 'w' });
    try {
      expect((await meter.measure()).partitions).toEqual([{ consumer: 'w', pending: 0, ackPending: 0 }]);
      const times = await publish('LAG1', 'lag1.updates.3', 4);
      let lag: SourceLag = await meter.measure();
      expect(lag.partitions).toEqual([{ consumer: 'w', pending: 4, ackPending: 0, oldestAt: times[0] }]);
      // Two delivered, the first acked: the oldest waiting is the second (unacked).
      const c = await jetstream(nc).consumers.get('LAG1', 'w');
      const batch = await c.fetch({ max_messages: 2, expires: 2_000 });
      let k = 0;
      for await (const m of batch) if (k++ === 0) await m.ackAck();
      lag = await meter.measure();
      expect(lag.partitions).toEqual([{ consumer: 'w', pending: 2, ackPending: 1, oldestAt: times[1] }]);
      expect(lagTotals(lag).oldestWaitingMs).toBe(Math.max(0, lag.at - times[1]));
    } finally {
      await meter.close();
    }
  });

  it('a pool: each partition\'s current consumer (latest epoch), and a partition without one', async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'LAG2', subjects: ['lag2.updates.>'] });
    // Partition 0: an old epoch's consumer and the current one (epoch 2); partition 1: none yet.
    for (const name of ['pool-p0-e1', 'pool-p0-e2']) {
      await jsm.consumers.add('LAG2', { durable_name: name, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, filter_subject: 'lag2.updates.0' });
    }
    const t0 = await publish('LAG2', 'lag2.updates.0', 3);
    const t1 = await publish('LAG2', 'lag2.updates.1', 2);
    const c = await jetstream(nc).consumers.get('LAG2', 'pool-p0-e2');
    for await (const m of await c.fetch({ max_messages: 1, expires: 2_000 })) await m.ackAck();
    const meter = jetstreamLagMeter({ servers: nats.url, stream: 'LAG2', subject: 'lag2.updates', durable: 'pool', partitions: 3 });
    try {
      const lag = await meter.measure();
      expect(lag.partitions).toEqual([
        { partition: 0, consumer: 'pool-p0-e2', pending: 2, ackPending: 0, oldestAt: t0[1] },
        { partition: 1, pending: 2, ackPending: 0, oldestAt: t1[0] },
        { partition: 2, pending: 0, ackPending: 0 },
      ]);
    } finally {
      await meter.close();
    }
  });

  it('rejects while NATS cannot be reached (the lag is unknown)', async () => {
    const meter = jetstreamLagMeter({ servers: 'nats://127.0.0.1:1', stream: 'LAG1', subject: 'lag1.updates', durable: 'w' });
    await expect(meter.measure()).rejects.toThrow();
    await meter.close();
  });
});
