/**
 * The file source's read position (the embedded default resumes where the last `run`
 * stopped): what is stored, how a stored position is checked against the file (truncated or
 * replaced since: start over), and how it is written as messages settle (`PositionWriter`).
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

/**
 * Where a file source goes on from: the first line not yet settled, and the identity of the
 * file it belongs to (a file truncated or replaced since is read from its start).
 */
export interface FilePosition {
  /** Byte offset of the first line not yet settled. */
  offset: number;
  /** Lines before `offset` (the next line's number is `line + 1`). */
  line: number;
  /** The file's inode and device when the position was taken. */
  ino: number;
  dev: number;
  /** Bytes of the file read when the position was taken. */
  size: number;
  /** sha256 (hex) of the file's first `headBytes` bytes. */
  head: string;
  headBytes: number;
}

/** Keeps file positions (the local store implements it). */
export interface FilePositionStore {
  getPosition(key: string): Promise<FilePosition | undefined>;
  setPosition(key: string, position: FilePosition): Promise<void>;
}

/** Bytes hashed to recognise a file again. */
export const HEAD_BYTES = 4_096;

/** sha256 (hex) of the first `bytes` bytes of the file (fewer when it is shorter). */
export async function headHash(fh: FileHandle, bytes: number): Promise<string> {
  const buf = Buffer.alloc(bytes);
  let got = 0;
  while (got < bytes) {
    const { bytesRead } = await fh.read(buf, got, bytes - got, got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return createHash('sha256').update(buf.subarray(0, got)).digest('hex');
}

/** Why `stored` does not fit the file open as `fh` (truncated or replaced since), or undefined when it does. */
export async function misfit(fh: FileHandle, stored: FilePosition): Promise<string | undefined> {
  const st = await fh.stat();
  if (stored.ino !== st.ino || stored.dev !== st.dev) return 'replaced (another inode)';
  if (st.size < stored.offset) return `truncated (${st.size} bytes, position ${stored.offset})`;
  if ((await headHash(fh, stored.headBytes)) !== stored.head) return 'replaced (its first bytes changed)';
  return undefined;
}

/** What a position is made of, taken when it is written. */
export interface PositionNow {
  offset: number;
  line: number;
  /** Bytes of the file read so far. */
  size: number;
  fh: FileHandle;
  ino: number;
  dev: number;
}

/**
 * Writes a file source's position: one write at a time, and the saves asked for while one is
 * being committed make one more write after it (with the position then), not one each — so a
 * slow commit never piles up writes. A position equal to the last one written is not written.
 *
 * @example
 * const writer = new PositionWriter({ store, key: 'file:events.jsonl', onError: warn });
 * void writer.save(() => ({ offset, line, size, fh, ino, dev }));
 * await writer.idle(); // every position asked for is written
 */
export class PositionWriter {
  /** The head hash of the file as far as it is known (kept with every position). */
  hashed = { head: '', headBytes: -1 };
  private dirty = false;
  private running = false;
  private done: Promise<void> = Promise.resolve();
  private lastSaved?: string;

  constructor(private readonly o: { store: FilePositionStore; key: string; onError: (err: unknown) => void }) {}

  /** Asks for the position `now()` gives (taken when it is written; undefined: nothing to write). */
  save(now: () => PositionNow | undefined): Promise<void> {
    this.dirty = true;
    if (this.running) return this.done;
    this.running = true;
    this.done = (async () => {
      while (this.dirty) {
        this.dirty = false;
        const at = now();
        if (!at) break;
        try {
          await this.write(at);
        } catch (err) {
          this.o.onError(err);
        }
      }
      this.dirty = false;
      this.running = false;
    })();
    return this.done;
  }

  /** Resolves once every position asked for is written. */
  idle(): Promise<void> {
    return this.done;
  }

  private async write(at: PositionNow): Promise<void> {
    const want = Math.min(HEAD_BYTES, at.offset);
    if (this.hashed.headBytes !== want && this.hashed.headBytes < HEAD_BYTES) this.hashed = { head: await headHash(at.fh, want), headBytes: want };
    const pos: FilePosition = { offset: at.offset, line: at.line, ino: at.ino, dev: at.dev, size: at.size, ...this.hashed };
    const text = JSON.stringify(pos);
    if (text === this.lastSaved) return;
    this.lastSaved = text;
    await this.o.store.setPosition(this.o.key, pos);
  }
}
