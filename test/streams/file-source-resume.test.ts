/**
 * The file source's durable side: resuming at the stored position, starting over on a file
 * truncated or replaced, reacting to appends through change notifications, and lines longer
 * than the event limit skipped in bounded memory.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createWriteStream } from 'node:fs';
import { appendFile, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeEvent } from '../../src/domain/validate.js';
import { fileSource, type FilePosition, type FilePositionStore, type FileSourceOptions } from '../../src/streams/file.js';
import type { SourceMessage } from '../../src/streams/types.js';
import { LocalSnapshotStore } from '../../src/stores/local-snapshot-store.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'file-resume-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(2);
  }
}
const asText = (d: string | Uint8Array): string => (typeof d === 'string' ? d : Buffer.from(d).toString('utf8'));
const lines = (from: number, to: number): string => Array.from({ length: to - from + 1 }, (_, i) => `{"n":${from + i}}\n`).join('');

/** Positions in a Map, counting writes. */
class MapPositions implements FilePositionStore {
  readonly map = new Map<string, FilePosition>();
  writes = 0;
  async getPosition(key: string): Promise<FilePosition | undefined> {
    return this.map.get(key);
  }
  async setPosition(key: string, position: FilePosition): Promise<void> {
    this.writes++;
    this.map.set(key, position);
  }
}

function subscribe(options: FileSourceOptions, autoAck = true) {
  const src = fileSource(options);
  const got: SourceMessage[] = [];
  let done = false;
  let error: unknown;
  const sub = src.messages$.subscribe({
    next: (m) => {
      got.push(m);
      if (autoAck) m.ack();
    },
    complete: () => (done = true),
    error: (e: unknown) => (error = e),
  });
  return { src, got, sub, done: () => done, error: () => error };
}

async function readAll(options: FileSourceOptions): Promise<SourceMessage[]> {
  const run = subscribe(options);
  await until(() => run.done() || run.error() !== undefined);
  expect(run.error()).toBeUndefined();
  return run.got;
}

describe('fileSource with a position store', () => {
  it('a second run emits nothing; lines appended since are read with their own line numbers', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 3));
    const positions = new MapPositions();
    expect((await readAll({ path, positions })).map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(positions.map.get(`file:${path}`)).toMatchObject({ offset: 24, line: 3 });
    expect(await readAll({ path, positions })).toEqual([]);
    await appendFile(path, `\n${lines(5, 6)}`);
    const again = await readAll({ path, positions });
    expect(again.map((m) => [m.key, asText(m.data)])).toEqual([
      [`file:${path}:5`, '{"n":5}'],
      [`file:${path}:6`, '{"n":6}'],
    ]);
  });

  it('resumes at the first line not settled: lines read but not acked are read again, with the same keys', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 5));
    const positions = new MapPositions();
    const run = subscribe({ path, positions }, false);
    await until(() => run.got.length === 5);
    for (const i of [0, 1, 3]) run.got[i].ack(); // lines 1, 2 and 4 settled; 3 and 5 not
    await sleep(20);
    run.sub.unsubscribe(); // as a crash would leave it
    expect(positions.map.get(`file:${path}`)).toMatchObject({ offset: 16, line: 2 });
    const again = await readAll({ path, positions });
    expect(again.map((m) => m.key)).toEqual([3, 4, 5].map((n) => `file:${path}:${n}`));
  });

  it('records the position once per event-loop turn, not once per ack', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 200));
    const positions = new MapPositions();
    const run = subscribe({ path, positions, maxInFlight: 1_000 }, false);
    await until(() => run.got.length === 200);
    for (const m of run.got) m.ack();
    await until(run.done);
    expect(positions.writes).toBeLessThanOrEqual(3);
    expect(positions.map.get(`file:${path}`)).toMatchObject({ line: 200 });
  });

  it('while a position is being committed, the acks of later turns make one more write (the newest position), not one per turn', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 50));
    /** Holds each write until released, as a slow commit would. */
    class SlowPositions extends MapPositions {
      readonly waiting: Array<() => void> = [];
      override async setPosition(key: string, position: FilePosition): Promise<void> {
        await new Promise<void>((r) => this.waiting.push(r));
        return super.setPosition(key, position);
      }
    }
    const positions = new SlowPositions();
    const run = subscribe({ path, positions, maxInFlight: 1_000 }, false);
    await until(() => run.got.length === 50);
    run.got[0]!.ack();
    await until(() => positions.waiting.length === 1);
    // Ten more turns of acks while the first write is held.
    for (let i = 1; i < 50; i += 5) {
      for (const m of run.got.slice(i, i + 5)) m.ack();
      await new Promise((r) => setImmediate(r));
    }
    await sleep(20);
    expect(positions.waiting).toHaveLength(1);
    positions.waiting.shift()!();
    await until(() => positions.waiting.length === 1);
    positions.waiting.shift()!();
    await until(() => positions.writes === 2);
    expect(positions.map.get(`file:${path}`)).toMatchObject({ line: 50 });
    // The end of the file: the last write is already what it would write.
    const ended = until(run.done);
    for (;;) {
      if (run.done()) break;
      positions.waiting.shift()?.();
      await sleep(2);
    }
    await ended;
    expect(positions.writes).toBe(2);
  });

  it('a truncated file starts over with a warning', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 5));
    const positions = new MapPositions();
    await readAll({ path, positions });
    await writeFile(path, lines(1, 2)); // same inode, shorter
    const warnings: string[] = [];
    const again = await readAll({ path, positions, onWarning: (m) => warnings.push(m) });
    expect(again.map((m) => m.seq)).toEqual([1, 2]);
    expect(warnings.join()).toMatch(/truncated/);
  });

  it('a replaced file (another inode, or other first bytes) starts over with a warning', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 3));
    const positions = new MapPositions();
    await readAll({ path, positions });
    await writeFile(join(dir, 'next.jsonl'), lines(11, 15));
    await rename(join(dir, 'next.jsonl'), path);
    const warnings: string[] = [];
    expect((await readAll({ path, positions, onWarning: (m) => warnings.push(m) })).map((m) => asText(m.data))[0]).toBe('{"n":11}');
    expect(warnings.join()).toMatch(/replaced \(another inode\)/);
    // Same inode, rewritten in place with other content that is longer than the position.
    await writeFile(path, lines(21, 40));
    warnings.length = 0;
    expect((await readAll({ path, positions, onWarning: (m) => warnings.push(m) })).map((m) => asText(m.data))[0]).toBe('{"n":21}');
    expect(warnings.join()).toMatch(/first bytes changed/);
  });

  it('resumes from the local store (LMDB) across store reopen', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 4));
    const storePath = join(dir, 'state');
    const a = await LocalSnapshotStore.open({ path: storePath });
    expect(await readAll({ path, positions: a })).toHaveLength(4);
    await a.close();
    await appendFile(path, lines(5, 5));
    const b = await LocalSnapshotStore.open({ path: storePath });
    expect((await readAll({ path, positions: b })).map((m) => m.seq)).toEqual([5]);
    await b.close();
  });
});

describe('fileSource bytes and long lines', () => {
  it('emits each line as raw bytes, invalid UTF-8 left for the decoder to reject', async () => {
    const path = join(dir, 'bad.jsonl');
    await writeFile(path, Buffer.concat([Buffer.from('{"profileId":"p","attributes":{"a":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}}\n')]));
    const [m] = await readAll({ path });
    expect(m.data).toBeInstanceOf(Uint8Array);
    const bytes = Buffer.from(m.data as Uint8Array);
    expect([...bytes.subarray(bytes.indexOf(0xff), bytes.indexOf(0xff) + 2)]).toEqual([0xff, 0xfe]);
    expect(bytes.indexOf(0xff)).toBe(36);
  });

  it('a 64 MB line is skipped as it streams (flat memory), rejected as too large with its line number; the lines after it are read', async () => {
    const path = join(dir, 'huge.jsonl');
    const limit = 1_048_576;
    const out = createWriteStream(path);
    out.write('{"profileId":"p-1"}\n');
    out.write('{"profileId":"p-2","attributes":{"x":"');
    const mb = Buffer.alloc(1 << 20, 0x61);
    for (let i = 0; i < 64; i++) if (!out.write(mb)) await new Promise<void>((r) => out.once('drain', () => r()));
    out.write('"}}\n{"profileId":"p-3"}\n');
    await new Promise<void>((r, j) => out.end((err?: Error | null) => (err ? j(err) : r())));

    global.gc?.();
    const base = process.memoryUsage();
    let peak = 0;
    const sample = setInterval(() => {
      const m = process.memoryUsage();
      peak = Math.max(peak, m.heapUsed - base.heapUsed + (m.arrayBuffers - base.arrayBuffers));
    }, 5);
    const got = await readAll({ path, maxLineBytes: limit });
    clearInterval(sample);
    // The line is 64 MB: holding it (let alone re-splitting it as text) would cost far more.
    expect(peak).toBeLessThan(24 * 1_048_576);
    expect(got.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect((got[1].data as Uint8Array).byteLength).toBe(limit + 1);
    expect(() => decodeEvent(got[1].data, { maxBytes: limit })).toThrow(expect.objectContaining({ code: 'ERR_EVENT_TOO_LARGE' }));
    expect(got[1].key).toBe(`file:${path}:2`);
    expect(asText(got[2].data)).toBe('{"profileId":"p-3"}');
  }, 60_000);
});

describe('fileSource following', () => {
  it('reacts to an append at once through change notifications (the poll is a minute away)', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 1));
    const run = subscribe({ path, follow: true, pollMs: 60_000, fallbackPollMs: 60_000 });
    await until(() => run.got.length === 1);
    await sleep(50);
    const t0 = Date.now();
    await appendFile(path, lines(2, 2));
    await until(() => run.got.length === 2, 2_000);
    expect(Date.now() - t0).toBeLessThan(500);
    run.src.stop();
    await until(run.done);
  });

  it('a file truncated while followed is read again from its start, with a warning', async () => {
    const path = join(dir, 'events.jsonl');
    await writeFile(path, lines(1, 3));
    const warnings: string[] = [];
    const run = subscribe({ path, follow: true, pollMs: 20, onWarning: (m) => warnings.push(m) });
    await until(() => run.got.length === 3);
    await writeFile(path, lines(7, 7));
    await until(() => run.got.length === 4);
    expect(asText(run.got[3].data)).toBe('{"n":7}');
    expect(run.got[3].seq).toBe(1);
    expect(warnings.join()).toMatch(/truncated while followed/);
    run.src.stop();
    await until(run.done);
  });
});
