import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { FencedError } from '../../src/errors.js';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { Subscription } from 'rxjs';
import {
  ensureConsumer,
  ensureStream,
  jetstreamSource,
  subjectCovers,
  type JetStreamSourceOptions,
} from '../../src/streams/jetstream.js';
import type { SourceMessage, SourceStatus } from '../../src/streams/types.js';
import { connectNats } from '../../src/streams/nats.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const text = (m: SourceMessage) => (typeof m.data === 'string' ? m.data : new TextDecoder().decode(m.data));

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;

async function publish(subject: string, values: unknown[]): Promise<void> {
  const js = jetstream(nc);
  for (const v of values) await js.publish(subject, JSON.stringify(v));
}

/** Subscribes and records messages and statuses. */
function consume(options: Omit<JetStreamSourceOptions, 'servers'>, autoAck = true) {
  const source = jetstreamSource({ ...options, servers: server.url });
  const got: SourceMessage[] = [];
  const statuses: SourceStatus[] = [];
  const errors: unknown[] = [];
  const statusSub = source.status$.subscribe((s) => statuses.push(s));
  const sub: Subscription = source.messages$.subscribe({
    next: (m) => {
      got.push(m);
      if (autoAck) m.ack();
    },
    error: (e) => errors.push(e),
  });
  return {
    got,
    statuses,
    errors,
    stop() {
      sub.unsubscribe();
      statusSub.unsubscribe();
    },
  };
}

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url, name: 'test', maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

describe('subjectCovers', () => {
  it('matches literal, * and > patterns', () => {
    expect(subjectCovers('a.b', 'a.b')).toBe(true);
    expect(subjectCovers('a.*', 'a.b')).toBe(true);
    expect(subjectCovers('a.>', 'a.b.>')).toBe(true);
    expect(subjectCovers('a.>', 'a')).toBe(false);
    expect(subjectCovers('a.*', 'a.b.>')).toBe(false);
    expect(subjectCovers('a.b', 'a.b.>')).toBe(false);
  });
});

describe('ensureStream / ensureConsumer', () => {
  it('creates the stream with subject and subject.> on file storage, and is idempotent', async () => {
    const info = await ensureStream({ jsm, stream: 'ENSURE', subject: 'ensure.updates' });
    expect(info.config.subjects).toEqual(['ensure.updates', 'ensure.updates.>']);
    expect(info.config.storage).toBe('file');
    const again = await ensureStream({ jsm, stream: 'ENSURE', subject: 'ensure.updates' });
    expect(again.config.subjects).toEqual(['ensure.updates', 'ensure.updates.>']);
  });

  it('refuses a durable that filters another subject', async () => {
    await ensureStream({ jsm, stream: 'ENSURE2', subject: 'ensure2.a' });
    await jsm.streams.update('ENSURE2', { subjects: ['ensure2.a', 'ensure2.a.>', 'ensure2.b'] });
    await ensureConsumer({ jsm, stream: 'ENSURE2', subject: 'ensure2.b', durable: 'd' });
    await expect(ensureConsumer({ jsm, stream: 'ENSURE2', subject: 'ensure2.a', durable: 'd' })).rejects.toMatchObject({
      code: 'ERR_JETSTREAM_CONFIG',
    });
  });
});

describe('jetstreamSource', () => {
  it('emits messages in order with js:<stream>:<seq> keys; ack removes them from pending', async () => {
    await ensureStream({ jsm, stream: 'ORDER', subject: 'order.updates' });
    await publish('order.updates', Array.from({ length: 25 }, (_, i) => ({ profileId: `p-${i}` })));
    const c = consume({ stream: 'ORDER', subject: 'order.updates', durable: 'w', batchSize: 8 });
    try {
      await waitFor(() => c.got.length === 25, '25 messages');
      expect(c.got.map((m) => m.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
      expect(c.got.map((m) => m.key)).toEqual(Array.from({ length: 25 }, (_, i) => `js:ORDER:${i + 1}`));
      expect(JSON.parse(text(c.got[3]!))).toEqual({ profileId: 'p-3' });
      expect(c.got[0]!.receivedAt).toBeGreaterThan(Date.now() - 60_000);
      await waitFor(async () => {
        const info = await jsm.consumers.info('ORDER', 'w');
        return info.num_ack_pending === 0 && info.num_pending === 0 && info.ack_floor.stream_seq === 25;
      }, 'acks to reach the server');
      expect(c.errors).toEqual([]);
    } finally {
      c.stop();
    }
  });

  it('redelivers an unacked message after ack_wait with the same key; nak(delay) redelivers', async () => {
    await ensureStream({ jsm, stream: 'REDELIVER', subject: 'redeliver.updates' });
    await publish('redeliver.updates', [{ profileId: 'a' }]);
    const c = consume({ stream: 'REDELIVER', subject: 'redeliver.updates', durable: 'w', ackWaitMs: 700 }, false);
    try {
      await waitFor(() => c.got.length === 1, 'first delivery');
      await waitFor(() => c.got.length === 2, 'redelivery after ack_wait', 5_000);
      expect(c.got[1]!.key).toBe(c.got[0]!.key);
      expect(c.got[1]!.seq).toBe(1);
      c.got[1]!.nak(100);
      await waitFor(() => c.got.length === 3, 'redelivery after nak', 5_000);
      expect(c.got[2]!.key).toBe('js:REDELIVER:1');
      c.got[2]!.ack();
      await sleep(1_200);
      expect(c.got).toHaveLength(3);
    } finally {
      c.stop();
    }
  });

  it('working() keeps a message from redelivery past ack_wait', async () => {
    await ensureStream({ jsm, stream: 'WORKING', subject: 'working.updates' });
    await publish('working.updates', [{ profileId: 'a' }]);
    const c = consume({ stream: 'WORKING', subject: 'working.updates', durable: 'w', ackWaitMs: 700 }, false);
    try {
      await waitFor(() => c.got.length === 1, 'first delivery');
      for (let i = 0; i < 8; i++) {
        await sleep(250);
        c.got[0]!.working();
      }
      // 2 s passed, almost three ack_waits: still one delivery.
      expect(c.got).toHaveLength(1);
      c.got[0]!.ack();
      await sleep(1_000);
      expect(c.got).toHaveLength(1);
    } finally {
      c.stop();
    }
  });

  it('keeps at most maxAckPending messages in flight', async () => {
    await ensureStream({ jsm, stream: 'BOUNDED', subject: 'bounded.updates' });
    await publish('bounded.updates', Array.from({ length: 60 }, (_, i) => ({ profileId: `p-${i}` })));
    const c = consume({ stream: 'BOUNDED', subject: 'bounded.updates', durable: 'w', maxAckPending: 10 }, false);
    try {
      await waitFor(() => c.got.length === 10, '10 messages');
      await sleep(500);
      expect(c.got).toHaveLength(10);
      for (const m of c.got.slice(0, 5)) m.ack();
      await waitFor(() => c.got.length === 15, '5 more after 5 acks');
      await sleep(300);
      expect(c.got).toHaveLength(15);
    } finally {
      c.stop();
    }
  });

  it('unsubscribing stops the consumer; acks of emitted messages still reach the server', async () => {
    await ensureStream({ jsm, stream: 'UNSUB', subject: 'unsub.updates' });
    await publish('unsub.updates', [{ n: 1 }, { n: 2 }]);
    const c = consume({ stream: 'UNSUB', subject: 'unsub.updates', durable: 'unsub' }, false);
    await waitFor(() => c.got.length === 2, 'two messages');
    c.got[0]!.ack();
    c.stop();
    // After unsubscribe: the second one is settled during the close grace.
    c.got[1]!.ack();
    await waitFor(async () => (await jsm.consumers.info('UNSUB', 'unsub')).num_ack_pending === 0, 'late ack');
    await publish('unsub.updates', [{ n: 3 }, { n: 4 }, { n: 5 }]);
    await sleep(500);
    expect(c.got).toHaveLength(2);
    const info = await jsm.consumers.info('UNSUB', 'unsub');
    expect(info.num_pending).toBe(3);
    expect(info.num_ack_pending).toBe(0);
    // The connection it opened is gone.
    expect(await connectionNames()).toContain('test');
    await waitFor(async () => {
      const names = await connectionNames();
      return !names.includes('http-destination:unsub');
    }, 'connection closed');
    // A new subscription takes up where it stopped.
    const again = consume({ stream: 'UNSUB', subject: 'unsub.updates', durable: 'unsub' });
    try {
      await waitFor(() => again.got.length === 3, 'the three new ones');
      expect(again.got.map((m) => m.seq)).toEqual([3, 4, 5]);
    } finally {
      again.stop();
    }
  });

  it('closes its connection after closeGraceMs when emitted messages stay unsettled', async () => {
    await ensureStream({ jsm, stream: 'GRACE', subject: 'grace.updates' });
    await publish('grace.updates', [{ n: 1 }]);
    const c = consume({ stream: 'GRACE', subject: 'grace.updates', durable: 'grace', closeGraceMs: 300 }, false);
    await waitFor(() => c.got.length === 1, 'the message');
    expect(await connectionNames()).toContain('http-destination:grace');
    const t0 = Date.now();
    c.stop();
    await waitFor(async () => !(await connectionNames()).includes('http-destination:grace'), 'connection closed', 3_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect((await jsm.consumers.info('GRACE', 'grace')).num_ack_pending).toBe(1);
  });

  it('waits for a missing stream when create is false, reporting the error, then consumes', async () => {
    const c = consume({ stream: 'LATE', subject: 'late.updates', durable: 'w', create: false, restartDelayMs: 50 });
    try {
      await waitFor(() => c.statuses.some((s) => s.kind === 'error' && !s.fatal), 'an error status');
      expect(c.errors).toEqual([]);
      await ensureStream({ jsm, stream: 'LATE', subject: 'late.updates' });
      await ensureConsumer({ jsm, stream: 'LATE', subject: 'late.updates', durable: 'w' });
      await publish('late.updates', [{ n: 1 }]);
      await waitFor(() => c.got.length === 1, 'the message');
      expect(c.statuses.some((s) => s.kind === 'consumer_restart')).toBe(true);
    } finally {
      c.stop();
    }
  });

  it('surfaces a deleted consumer and re-creates it', async () => {
    await ensureStream({ jsm, stream: 'DELETED', subject: 'deleted.updates' });
    await publish('deleted.updates', [{ n: 1 }]);
    const c = consume({ stream: 'DELETED', subject: 'deleted.updates', durable: 'w', restartDelayMs: 50 });
    try {
      await waitFor(() => c.got.length === 1, 'first message');
      await jsm.consumers.delete('DELETED', 'w');
      await waitFor(
        () => c.statuses.some((s) => s.kind === 'consumer_deleted' || s.kind === 'consumer_not_found'),
        'a consumer status',
        15_000,
      );
      await waitFor(() => c.statuses.some((s) => s.kind === 'consumer_restart'), 'a restart');
      await publish('deleted.updates', [{ n: 2 }]);
      // The re-created durable starts again from the stream's first message: at least once.
      await waitFor(() => c.got.some((m) => m.seq === 2), 'the message after the restart');
      expect(c.errors).toEqual([]);
    } finally {
      c.stop();
    }
  });

  it('with recreate false, a consumer deleted under it ends the subscription (ERR_JETSTREAM_CONSUMER_GONE), re-creating nothing', async () => {
    await ensureStream({ jsm, stream: 'GONE', subject: 'gone.updates' });
    await publish('gone.updates', [{ n: 1 }]);
    const c = consume({ stream: 'GONE', subject: 'gone.updates', durable: 'w', restartDelayMs: 50, recreate: false });
    try {
      await waitFor(() => c.got.length === 1, 'first message');
      await jsm.consumers.delete('GONE', 'w');
      await waitFor(() => c.errors.length === 1, 'the error', 15_000);
      expect(c.errors[0]).toMatchObject({ code: 'ERR_JETSTREAM_CONSUMER_GONE' });
      expect(c.statuses.at(-1)).toMatchObject({ kind: 'error', fatal: true });
      await sleep(200);
      await expect(jsm.consumers.info('GONE', 'w')).rejects.toThrow();
    } finally {
      c.stop();
    }
  });

  it('prepare sets the consumer up instead of ensureConsumer, retried until it succeeds; ERR_FENCED from it ends the subscription', async () => {
    await ensureStream({ jsm, stream: 'PREPARED', subject: 'prepared.updates' });
    await publish('prepared.updates', [{ n: 1 }, { n: 2 }, { n: 3 }]);
    let calls = 0;
    const c = consume({
      stream: 'PREPARED',
      subject: 'prepared.updates',
      durable: 'from-2',
      restartDelayMs: 20,
      prepare: async (m) => {
        if (++calls === 1) throw new Error('not yet');
        await m.consumers.add('PREPARED', { durable_name: 'from-2', ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 2, filter_subject: 'prepared.updates' });
      },
    });
    try {
      await waitFor(() => c.got.length === 2, 'two messages');
      expect(c.got.map((m) => m.seq)).toEqual([2, 3]);
      expect(calls).toBe(2);
      expect(c.statuses.some((s) => s.kind === 'error' && !s.fatal && s.message.includes('not yet'))).toBe(true);
    } finally {
      c.stop();
    }
    const fenced = consume({
      stream: 'PREPARED',
      subject: 'prepared.updates',
      durable: 'never',
      restartDelayMs: 20,
      prepare: async () => {
        throw new FencedError('not the owner');
      },
    });
    try {
      await waitFor(() => fenced.errors.length === 1, 'the error');
      expect(fenced.errors[0]).toBeInstanceOf(FencedError);
      expect(fenced.got).toEqual([]);
    } finally {
      fenced.stop();
    }
  });

  it('keeps going across a nats-server restart with the same data folder', async () => {
    await ensureStream({ jsm, stream: 'RESTART', subject: 'restart.updates' });
    await publish('restart.updates', [{ n: 1 }, { n: 2 }]);
    // recreate false (as a pool partition's consumer): the consumer is still there after the restart.
    const c = consume({ stream: 'RESTART', subject: 'restart.updates', durable: 'w', recreate: false });
    try {
      await waitFor(() => c.got.length === 2, 'two messages');
      await waitFor(async () => (await jsm.consumers.info('RESTART', 'w')).num_ack_pending === 0, 'acks');
      server.kill();
      await waitFor(() => c.statuses.some((s) => s.kind === 'disconnect'), 'a disconnect status');
      await server.restart();
      await waitFor(() => c.statuses.some((s) => s.kind === 'reconnect'), 'a reconnect status');
      await waitFor(() => !nc.isClosed() && nc.info !== undefined, 'test connection');
      await waitFor(async () => {
        try {
          await publish('restart.updates', [{ n: 3 }]);
          return true;
        } catch {
          return false;
        }
      }, 'publish after restart');
      await waitFor(() => c.got.some((m) => m.seq === 3), 'the message published after the restart', 20_000);
      // Acked before the crash: not delivered again.
      expect(c.got.filter((m) => m.seq <= 2)).toHaveLength(2);
      expect(c.errors).toEqual([]);
    } finally {
      c.stop();
    }
  });

  it('consumes on a shared connection: opens none of its own, leaves it open, stopped() and closed() resolve', async () => {
    await ensureStream({ jsm, stream: 'SHARED', subject: 'shared.updates' });
    await publish('shared.updates.0', [{ n: 1 }, { n: 2 }]);
    await publish('shared.updates.1', [{ n: 3 }]);
    const handle = await connectNats({ servers: server.url, name: 'shared-owner' });
    let subs: Subscription[] = [];
    try {
      const sources = [0, 1].map((p) =>
        jetstreamSource({ connection: handle, stream: 'SHARED', subject: `shared.updates.${p}`, streamSubject: 'shared.updates', durable: `p${p}` }),
      );
      const got: SourceMessage[] = [];
      const errors: unknown[] = [];
      subs = sources.map((src) => src.messages$.subscribe({ next: (m) => got.push(m), error: (e) => errors.push(e) }));
      await waitFor(() => got.length === 3, 'three messages');
      const names = await connectionNames();
      expect(names.filter((n) => n === 'shared-owner')).toHaveLength(1);
      expect(names.filter((n) => n === 'http-destination:p0' || n === 'http-destination:p1')).toEqual([]);
      // Unsettled at unsubscribe: stopped() does not wait for them, closed() does.
      const late = got.find((m) => m.seq === 2)!;
      for (const m of got) if (m !== late) m.ack();
      for (const sub of subs) sub.unsubscribe();
      await Promise.all(sources.map((src) => src.stopped()));
      let closed = false;
      const closing = Promise.all(sources.map((src) => src.closed())).then(() => (closed = true));
      await sleep(100);
      expect(closed).toBe(false);
      late.ack();
      await closing;
      await waitFor(async () => (await jsm.consumers.info('SHARED', 'p0')).num_ack_pending === 0, 'the late ack');
      expect(handle.nc.isClosed()).toBe(false);
      expect(await connectionNames()).toContain('shared-owner');
      expect(errors).toEqual([]);
    } finally {
      for (const sub of subs) sub.unsubscribe();
      await handle.close();
    }
  });

  it('errors with ERR_NATS_CLOSED when a shared connection is closed under it', async () => {
    await ensureStream({ jsm, stream: 'SHAREDX', subject: 'sharedx.updates' });
    const handle = await connectNats({ servers: server.url, name: 'shared-closing' });
    const src = jetstreamSource({ connection: handle, stream: 'SHAREDX', subject: 'sharedx.updates', durable: 'x' });
    const err = new Promise<unknown>((resolve) => src.messages$.subscribe({ error: resolve }));
    await waitFor(async () => (await jsm.consumers.info('SHAREDX', 'x').then(() => true, () => false)), 'the consumer');
    await handle.close();
    expect(await err).toMatchObject({ code: 'ERR_NATS_CLOSED' });
    await src.closed();
  });

  it('two starts re-creating the same consumer at once both succeed: from the ack floor, in order', async () => {
    await ensureStream({ jsm, stream: 'RACE', subject: 'race.updates' });
    await publish('race.updates', Array.from({ length: 6 }, (_, i) => ({ n: i + 1 })));
    // A previous owner took 1–4, acked 1–2 and crashed with 3–4 unacked.
    await ensureConsumer({ jsm, stream: 'RACE', subject: 'race.updates', durable: 'w', maxAckPending: 4, ackWaitMs: 60_000 });
    const prev = consume({ stream: 'RACE', subject: 'race.updates', durable: 'w', maxAckPending: 4, batchSize: 4, ackWaitMs: 60_000 }, false);
    await waitFor(() => prev.got.length === 4, 'four messages');
    prev.got[0]!.ack();
    prev.got[1]!.ack();
    await waitFor(async () => (await jsm.consumers.info('RACE', 'w')).ack_floor.stream_seq === 2, 'ack floor 2');
    prev.stop();
    // Two clients (the previous owner's late start and the new owner's) re-create it at once,
    // with different max_ack_pending: each may find the consumer deleted or re-created under it.
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled([
        ensureConsumer({ jsm, stream: 'RACE', subject: 'race.updates', durable: 'w', maxAckPending: 8, resumeInOrder: true }),
        ensureConsumer({ jsm, stream: 'RACE', subject: 'race.updates', durable: 'w', maxAckPending: 16, resumeInOrder: true }),
      ]);
      expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      const info = await jsm.consumers.info('RACE', 'w');
      expect(info.config.deliver_policy).toBe('by_start_sequence');
      expect(info.config.opt_start_seq).toBe(3);
      expect(info.num_pending).toBe(4);
      expect([8, 16]).toContain(info.config.max_ack_pending);
      // Back to "a previous owner left 3 unacked" for the next round.
      if (round < 4) {
        const again = consume({ stream: 'RACE', subject: 'race.updates', durable: 'w', maxAckPending: 8, ackWaitMs: 60_000 }, false);
        await waitFor(() => again.got.length > 0, 'a message');
        again.stop();
        await waitFor(async () => (await jsm.consumers.info('RACE', 'w')).num_ack_pending > 0, 'unacked');
      }
    }
    const after = consume({ stream: 'RACE', subject: 'race.updates', durable: 'w', maxAckPending: 8 });
    try {
      await waitFor(() => after.got.length === 4, 'messages 3–6');
      expect(after.got.map((m) => m.seq)).toEqual([3, 4, 5, 6]);
    } finally {
      after.stop();
    }
  });

  it('errors with ERR_NATS_CONNECT when no server answers', async () => {
    const source = jetstreamSource({ servers: 'nats://user:secret@127.0.0.1:1', stream: 'X', subject: 'x', durable: 'w' });
    const statuses: SourceStatus[] = [];
    source.status$.subscribe((s) => statuses.push(s));
    const err = await new Promise<unknown>((resolve) => source.messages$.subscribe({ error: resolve }));
    expect(err).toMatchObject({ code: 'ERR_NATS_CONNECT' });
    expect(String((err as Error).message)).not.toContain('secret');
    expect(statuses.at(-1)).toMatchObject({ fatal: true });
  });
});

/** Names of the client connections the server holds (monitoring endpoint). */
async function connectionNames(): Promise<string[]> {
  const res = await fetch(`${server.monitorUrl}/connz`);
  const body = (await res.json()) as { connections?: Array<{ name?: string }> };
  return (body.connections ?? []).map((c) => c.name ?? '');
}
