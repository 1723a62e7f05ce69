import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { appendFile, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Subscription } from 'rxjs';
import { fileSource, type FileSourceOptions, type Source } from '../../src/streams/file.js';
import type { SourceMessage } from '../../src/streams/types.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'file-source-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds (or fails the test after `ms`). */
async function until(cond: () => boolean, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(5);
  }
}

/** A subscription of a source that records what it got. */
interface Run {
  src: Source;
  got: SourceMessage[];
  sub: Subscription;
  done: () => boolean;
  error: () => unknown;
}

function subscribe(options: FileSourceOptions, opts: { autoAck?: boolean } = {}): Run {
  const src = fileSource(options);
  const got: SourceMessage[] = [];
  let done = false;
  let error: unknown;
  const sub = src.messages$.subscribe({
    next: (m) => {
      got.push(m);
      if (opts.autoAck) m.ack();
    },
    complete: () => (done = true),
    error: (e: unknown) => (error = e),
  });
  return { src, got, sub, done: () => done, error: () => error };
}

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

/** A message's bytes as text (the source emits raw bytes). */
const asText = (d: string | Uint8Array): string => (typeof d === 'string' ? d : Buffer.from(d).toString('utf8'));

const lines = (n: number): string => Array.from({ length: n }, (_, i) => `{"n":${i + 1}}\n`).join('');

describe('fileSource', () => {
  it('emits one message per line with key file:<path>:<line> and seq, skipping blank lines, CRLF and a last line without newline', async () => {
    const path = await file('events.jsonl', '{"n":1}\r\n\r\n   \n{"n":2}\n\n{"n":3}');
    const before = Date.now();
    const run = subscribe({ path }, { autoAck: true });
    await until(run.done);
    expect(run.got.map((m) => ({ data: asText(m.data), key: m.key, seq: m.seq }))).toEqual([
      { data: '{"n":1}', key: `file:${path}:1`, seq: 1 },
      { data: '{"n":2}', key: `file:${path}:4`, seq: 4 },
      { data: '{"n":3}', key: `file:${path}:6`, seq: 6 },
    ]);
    for (const m of run.got) expect(m.receivedAt).toBeGreaterThanOrEqual(before);
    expect(run.error()).toBeUndefined();
  });

  it('gives the same keys when the same file is read again', async () => {
    const path = await file('events.jsonl', lines(3));
    const a = subscribe({ path }, { autoAck: true });
    await until(a.done);
    const b = subscribe({ path }, { autoAck: true });
    await until(b.done);
    expect(b.got.map((m) => m.key)).toEqual(a.got.map((m) => m.key));
  });

  it('completes an empty file at once', async () => {
    const path = await file('empty.jsonl', '');
    const run = subscribe({ path });
    await until(run.done);
    expect(run.got).toEqual([]);
  });

  it('keeps a line whose multi-byte characters straddle two reads intact', async () => {
    // `{"n":"h` is 7 bytes and é is 2 (c3 a9): with 4-byte reads, é is split between reads.
    const text = '{"n":"héllo wörld ✓"}\n{"n":"ünïcødé"}\n';
    const path = await file('utf8.jsonl', text);
    const run = subscribe({ path, chunkBytes: 4 }, { autoAck: true });
    await until(run.done);
    expect(run.got.map((m) => asText(m.data))).toEqual(['{"n":"héllo wörld ✓"}', '{"n":"ünïcødé"}']);
  });

  it('reads lines longer than one chunk', async () => {
    const long = `{"x":"${'a'.repeat(100)}"}`;
    const path = await file('long.jsonl', `${long}\n${long}\n`);
    const run = subscribe({ path, chunkBytes: 16 }, { autoAck: true });
    await until(run.done);
    expect(run.got.map((m) => [asText(m.data), m.seq])).toEqual([
      [long, 1],
      [long, 2],
    ]);
  });

  it('completes only after every emitted message is acked (a second ack of one does not count)', async () => {
    const path = await file('events.jsonl', lines(3));
    const run = subscribe({ path });
    await until(() => run.got.length === 3);
    await sleep(50);
    expect(run.done()).toBe(false);
    run.got[0].ack();
    run.got[0].ack();
    run.got[2].ack();
    await sleep(50);
    expect(run.done()).toBe(false);
    run.got[1].ack();
    await until(run.done);
    expect(run.got).toHaveLength(3);
  });

  it('pauses reading at maxInFlight un-acked messages and resumes as they are acked', async () => {
    const path = await file('events.jsonl', lines(10));
    const run = subscribe({ path, maxInFlight: 3 });
    await until(() => run.got.length === 3);
    await sleep(50);
    expect(run.got).toHaveLength(3);
    const acked = new Set<SourceMessage>();
    const ack = (m: SourceMessage): void => {
      acked.add(m);
      m.ack();
    };
    ack(run.got[1]);
    await until(() => run.got.length === 4);
    await sleep(30);
    expect(run.got).toHaveLength(4);
    // Ack whatever comes, as it comes: never more than 3 emitted and not acked.
    while (!run.done()) {
      expect(run.got.length - acked.size).toBeLessThanOrEqual(3);
      for (const m of run.got) if (!acked.has(m)) ack(m);
      await sleep(2);
    }
    expect(run.got.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('emits the same message again after nak(delay), and completes once it is acked', async () => {
    const path = await file('events.jsonl', lines(2));
    const run = subscribe({ path });
    await until(() => run.got.length === 2);
    run.got[1].ack();
    const first = run.got[0];
    const t0 = Date.now();
    first.nak(60);
    await sleep(20);
    expect(run.got).toHaveLength(2);
    expect(run.done()).toBe(false);
    await until(() => run.got.length === 3);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
    expect(run.got[2]).toBe(first);
    expect(run.got[2].key).toBe(`file:${path}:1`);
    expect(run.done()).toBe(false);
    run.got[2].ack();
    await until(run.done);
    // A nak after the ack does nothing.
    first.nak(1);
    await sleep(20);
    expect(run.got).toHaveLength(3);
  });

  it('follows a growing file, holding a partial last line until its newline comes', async () => {
    const path = await file('events.jsonl', lines(2));
    const run = subscribe({ path, follow: true, pollMs: 10 }, { autoAck: true });
    await until(() => run.got.length === 2);
    await appendFile(path, '{"n":3}\n{"n":');
    await until(() => run.got.length === 3);
    await sleep(50);
    expect(run.got).toHaveLength(3);
    expect(run.done()).toBe(false);
    await appendFile(path, '4}\n');
    await until(() => run.got.length === 4);
    expect(run.got.map((m) => [asText(m.data), m.seq])).toEqual([
      ['{"n":1}', 1],
      ['{"n":2}', 2],
      ['{"n":3}', 3],
      ['{"n":4}', 4],
    ]);
    run.src.stop();
    await until(run.done);
  });

  it('at the end of a followed file, reads it again when it changes, not once per ack (nor twice per change)', async () => {
    const path = await file('events.jsonl', lines(200));
    // Count the reads of every FileHandle (the source opens its own).
    const probe = await open(path, 'r');
    const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const read = vi.spyOn(proto, 'read');
    try {
      const run = subscribe({ path, follow: true, pollMs: 10_000 });
      await until(() => run.got.length === 200);
      await sleep(20);
      const atEnd = read.mock.calls.length;
      // 200 acks, one per turn: the reading loop is at the end of the file, nothing changed.
      for (const m of run.got) {
        m.ack();
        await sleep(0);
      }
      await sleep(20);
      expect(read.mock.calls.length - atEnd).toBe(0);
      // 20 appends of one line, each read once (the read that found it short waits for the next change).
      for (let i = 0; i < 20; i++) {
        await appendFile(path, `{"n":${201 + i}}\n`);
        await until(() => run.got.length === 201 + i);
        run.got[200 + i].ack();
      }
      expect(read.mock.calls.length - atEnd).toBeLessThanOrEqual(30);
      run.src.stop();
      await until(run.done);
    } finally {
      read.mockRestore();
    }
  });

  it('stop() on a followed file completes it once the messages in flight are acked', async () => {
    const path = await file('events.jsonl', lines(1));
    const run = subscribe({ path, follow: true, pollMs: 10 });
    await until(() => run.got.length === 1);
    await appendFile(path, '{"n":2}\n');
    await until(() => run.got.length === 2);
    run.got[0].ack();
    run.src.stop();
    await sleep(50);
    expect(run.done()).toBe(false);
    // Appended after stop(): not read.
    await appendFile(path, '{"n":99}\n');
    await sleep(50);
    run.got[1].ack();
    await until(run.done);
    expect(run.got.map((m) => asText(m.data))).toEqual(['{"n":1}', '{"n":2}']);
  });

  it('emits nothing more after stop(), also while reading is paused at maxInFlight', async () => {
    const path = await file('events.jsonl', lines(3));
    const run = subscribe({ path, maxInFlight: 1 });
    await until(() => run.got.length === 1);
    run.src.stop();
    run.got[0].ack();
    await sleep(100);
    // stop(): "stop taking new messages" — the lines after the first must not start now.
    expect(run.got.map((m) => m.seq)).toEqual([1]);
    expect(run.done()).toBe(true);
  });

  it('stops reading when unsubscribed', async () => {
    const path = await file('events.jsonl', lines(3));
    const run = subscribe({ path, maxInFlight: 1 });
    await until(() => run.got.length === 1);
    run.sub.unsubscribe();
    run.got[0].ack();
    await sleep(60);
    expect(run.got).toHaveLength(1);
    expect(run.done()).toBe(false);
  });

  it('stops following and drops pending redeliveries when unsubscribed', async () => {
    const path = await file('events.jsonl', lines(1));
    const run = subscribe({ path, follow: true, pollMs: 10 });
    await until(() => run.got.length === 1);
    run.got[0].nak(30);
    run.sub.unsubscribe();
    await appendFile(path, '{"n":2}\n');
    await sleep(80);
    expect(run.got).toHaveLength(1);
  });

  it('errors when the file cannot be opened', async () => {
    const run = subscribe({ path: join(dir, 'missing.jsonl') });
    await until(() => run.error() !== undefined);
    expect((run.error() as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(run.got).toEqual([]);
  });
});
