import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { publishJsonl } from '../../src/streams/publish.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { ensureBuilt, runCli, writeConfig } from '../support/cli.js';

let server: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let dir: string;

beforeAll(async () => {
  await ensureBuilt();
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
  jsm = await jetstreamManager(nc);
  dir = mkdtempSync(join(tmpdir(), 'hd-publish-'));
});

afterAll(async () => {
  await nc?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every message of a stream, in order, as text. */
async function readStream(stream: string, subject: string): Promise<Array<{ seq: number; text: string }>> {
  const name = `read_${stream}`;
  const info = await jsm.consumers.add(stream, {
    name,
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    filter_subject: subject,
  });
  const out: Array<{ seq: number; text: string }> = [];
  if (info.num_pending === 0) return out;
  const consumer = await jetstream(nc).consumers.get(stream, name);
  for (;;) {
    const batch = await consumer.fetch({ max_messages: 5_000, expires: 2_000 });
    let done = false;
    for await (const m of batch) {
      out.push({ seq: m.seq, text: m.string() });
      if (m.info.pending === 0) {
        done = true;
        break;
      }
    }
    if (done) break;
  }
  await jsm.consumers.delete(stream, name);
  return out;
}

describe('publishJsonl', () => {
  it('publishes every valid line in order, skips bad JSON with its line number, creates the stream', async () => {
    const file = join(dir, 'mixed.jsonl');
    writeFileSync(
      file,
      [
        '{"profileId":"p-1","eventId":"e-1"}',
        '',
        '{"profileId":"p-2"',
        '   ',
        '{"profileId":"p-3","eventId":"e-3"}\r',
        'not json at all',
        '{"profileId":"p-4"}',
      ].join('\n') + '\n',
    );
    const r = await publishJsonl({ servers: server.url, stream: 'MIXED', subject: 'mixed.updates', file });
    expect(r.published).toBe(3);
    expect(r.duplicates).toBe(0);
    expect(r.skipped.map((s) => s.line)).toEqual([3, 6]);
    expect(r.skipped[0]!.reason).toMatch(/^not valid JSON/);
    expect(r.ms).toBeGreaterThanOrEqual(0);

    const info = await jsm.streams.info('MIXED');
    expect(info.config.subjects).toEqual(['mixed.updates', 'mixed.updates.>']);
    const msgs = await readStream('MIXED', 'mixed.updates');
    expect(msgs.map((m) => JSON.parse(m.text).profileId)).toEqual(['p-1', 'p-3', 'p-4']);
    expect(msgs.map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it('uses eventId as the message id: a second run stores nothing new for those events', async () => {
    const file = join(dir, 'dedupe.jsonl');
    writeFileSync(file, '{"profileId":"a","eventId":"x-1"}\n{"profileId":"b","eventId":"x-2"}\n{"profileId":"c"}\n');
    const first = await publishJsonl({ servers: server.url, stream: 'DEDUPE', subject: 'dedupe.updates', file });
    expect(first).toMatchObject({ published: 3, duplicates: 0 });
    const second = await publishJsonl({ servers: server.url, stream: 'DEDUPE', subject: 'dedupe.updates', file });
    expect(second).toMatchObject({ published: 3, duplicates: 2 });
    // The one without eventId is stored twice; the others once.
    expect((await jsm.streams.info('DEDUPE')).state.messages).toBe(4);
  });

  it('publishes 20,000 events fast and in order (prints the throughput)', async () => {
    const n = 20_000;
    const file = join(dir, 'bulk.jsonl');
    const lines: string[] = [];
    for (let i = 0; i < n; i++) {
      lines.push(
        JSON.stringify({
          profileId: `p-${i % 500}`,
          eventId: `bulk-${i}`,
          timestamp: '2026-11-26T10:00:00Z',
          attributes: { person: { name: { firstName: `F${i}`, lastName: 'Doe' } }, personalEmail: { address: `u${i}@x.com` } },
          segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
        }),
      );
    }
    writeFileSync(file, lines.join('\n') + '\n');
    const r = await publishJsonl({ servers: server.url, stream: 'BULK', subject: 'bulk.updates', file });
    expect(r.published).toBe(n);
    expect(r.skipped).toEqual([]);
    const rate = Math.round((n / Math.max(r.ms, 1)) * 1000);
    console.log(`publishJsonl: ${n} events in ${r.ms} ms = ${rate} events/s (window 1024)`);
    expect((await jsm.streams.info('BULK')).state.messages).toBe(n);
    const msgs = await readStream('BULK', 'bulk.updates');
    expect(msgs).toHaveLength(n);
    const outOfOrder = msgs.findIndex((m, i) => JSON.parse(m.text).eventId !== `bulk-${i}`);
    expect(outOfOrder).toBe(-1);
  });

  it('window 1 still publishes everything in order', async () => {
    const file = join(dir, 'w1.jsonl');
    writeFileSync(file, Array.from({ length: 50 }, (_, i) => JSON.stringify({ profileId: `p-${i}` })).join('\n'));
    const r = await publishJsonl({ servers: server.url, stream: 'W1', subject: 'w1.updates', file, window: 1 });
    expect(r.published).toBe(50);
    const msgs = await readStream('W1', 'w1.updates');
    expect(msgs.map((m) => JSON.parse(m.text).profileId)).toEqual(Array.from({ length: 50 }, (_, i) => `p-${i}`));
  });

  it('fails with ERR_JETSTREAM_PUBLISH naming the line the stream refused', async () => {
    await jsm.streams.add({ name: 'SMALL', subjects: ['small.updates', 'small.updates.>'], max_msg_size: 40 });
    const file = join(dir, 'small.jsonl');
    writeFileSync(file, `{"profileId":"a"}\n{"profileId":"${'x'.repeat(100)}"}\n{"profileId":"c"}\n`);
    const err = await publishJsonl({ servers: server.url, stream: 'SMALL', subject: 'small.updates', file }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'ERR_JETSTREAM_PUBLISH' });
    expect((err as Error).message).toMatch(/^line 2 /);
    expect((await jsm.streams.info('SMALL')).state.messages).toBeGreaterThanOrEqual(1);
  });

  it('fails with ERR_NATS_CONNECT when no server answers, and with a missing file', async () => {
    const file = join(dir, 'one.jsonl');
    writeFileSync(file, '{"profileId":"p"}\n');
    await expect(
      publishJsonl({ servers: 'nats://127.0.0.1:1', stream: 'X', subject: 'x', file }),
    ).rejects.toMatchObject({ code: 'ERR_NATS_CONNECT' });
    await expect(
      publishJsonl({ servers: server.url, stream: 'MISSING', subject: 'missing.updates', file: join(dir, 'nope.jsonl') }),
    ).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('the publish command counts duplicates and bad lines in its summary, and reports progress with --progress', async () => {
    const cfg = writeConfig(dir, {
      source: { kind: 'jetstream', servers: server.url, stream: 'CLIPUB', subject: 'clipub.updates' },
      audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
      destinations: [{ id: 'd', endpoint: 'http://127.0.0.1:9/x', headers: 'x-api-key:${HD_PUBLISH_KEY_UNSET}' }],
      dataflows: [{ id: 'f', destination: 'd', audiences: ['aud-1'] }],
    }, 'publish.yaml');
    const file = join(dir, 'cli.jsonl');
    const lines = Array.from({ length: 3_000 }, (_, i) => JSON.stringify({ profileId: `p-${i}`, eventId: `cli-${i}` }));
    writeFileSync(file, [...lines, '{"profileId":"no-id"}', 'not json'].join('\n') + '\n');
    // the destination's secret is not needed to publish
    const first = await runCli(['publish', '--config', cfg, file]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^published 3,001, duplicates 0, skipped 1 in [\d.]+ s; bad lines:\n {2}line 3002: not valid JSON/);
    expect(first.stderr).not.toMatch(/^publish: /m);
    const second = await runCli(['publish', '--config', cfg, '--progress', file], { env: { HTTP_DESTINATION_PROGRESS_MS: '20' } });
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/^published 1, duplicates 3,000, skipped 1 in /);
    expect(second.stderr).toMatch(/^publish: [\d,]+, [\d,]+\/s, \d+ s: published [\d,]+, duplicates [\d,]+, skipped \d$/m);
    expect((await jsm.streams.info('CLIPUB')).state.messages).toBe(3_002);
  });
});
