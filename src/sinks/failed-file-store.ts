/**
 * JSON Lines file stores (`failedRequests.kind: file`, kept for existing configurations; the
 * embedded default is `kind: local`, src/sinks/failed-local-store.ts): failed requests and
 * rejected input events. One record per line; appends are fsynced before `put` resolves.
 * Files are created 0600 and folders 0700 (they hold customer data). Not safe for two
 * processes at once: a `failed replay` rewriting the file loses what `run` appends meanwhile.
 */
import { mkdir, open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { StoreError } from '../errors.js';
import type { FailedRequest, FailedRequestStore, RejectedEvent, RejectedEventStore } from './types.js';

/**
 * A JSON Lines file with serialized writes. Appends that arrive while a write is running are
 * grouped into the next single write + fsync (group commit). Each write opens the file
 * anew, so a rewrite by another process (rename) is picked up by the next append.
 */
class JsonLinesFile {
  private queue: Promise<unknown> = Promise.resolve();
  private pending: Array<{ line: string; resolve: () => void; reject: (err: unknown) => void }> = [];
  private flushQueued = false;
  private dirReady?: Promise<void>;
  private tmpSeq = 0;
  private closed = false;

  constructor(readonly path: string) {}

  /** Appends one line; resolves once it is on disk. */
  append(line: string): Promise<void> {
    if (this.closed) return Promise.reject(new StoreError(`store ${this.path} is closed`));
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ line, resolve, reject });
      if (!this.flushQueued) {
        this.flushQueued = true;
        void this.exclusive(() => this.flush()).catch(() => undefined);
      }
    });
  }

  /** Runs `fn` after every write queued before it, and before any queued after it. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => fn());
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Every complete, parseable line, in file order (a torn line from a crash is skipped). */
  readRecords(): Promise<unknown[]> {
    return this.exclusive(() => readRecords(this.path));
  }

  /**
   * Reads the records and replaces the whole file with what `fn` returns, atomically (temp
   * file + fsync + rename), with no append landing in between.
   */
  update(fn: (records: unknown[]) => string[]): Promise<void> {
    return this.exclusive(async () => {
      const lines = fn(await readRecords(this.path));
      const tmp = join(dirname(this.path), `.${basename(this.path)}.${process.pid}.${++this.tmpSeq}.tmp`);
      let fh: FileHandle | undefined;
      try {
        await this.ensureDir();
        fh = await open(tmp, 'w', 0o600);
        await fh.writeFile(lines.map((l) => `${l}\n`).join(''), 'utf8');
        await fh.sync();
        await fh.close();
        fh = undefined;
        await rename(tmp, this.path);
        await syncDir(dirname(this.path));
      } catch (err) {
        await fh?.close().catch(() => undefined);
        await unlink(tmp).catch(() => undefined);
        throw new StoreError(`cannot rewrite ${this.path}: ${errCode(err)}`, { cause: err });
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
  }

  private async flush(): Promise<void> {
    this.flushQueued = false;
    const batch = this.pending.splice(0);
    if (batch.length === 0) return;
    let fh: FileHandle | undefined;
    try {
      await this.ensureDir();
      fh = await open(this.path, 'a+', 0o600);
      // a crash may have left a torn last line without its newline: end it first
      const { size } = await fh.stat();
      let prefix = '';
      if (size > 0) {
        const last = Buffer.alloc(1);
        await fh.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) prefix = '\n';
      }
      await fh.appendFile(prefix + batch.map((b) => `${b.line}\n`).join(''), 'utf8');
      await fh.datasync();
      await fh.close();
      fh = undefined;
      for (const b of batch) b.resolve();
    } catch (err) {
      await fh?.close().catch(() => undefined);
      const failure = new StoreError(`cannot append to ${this.path}: ${errCode(err)}`, {
        cause: err,
      });
      for (const b of batch) b.reject(failure);
    }
  }

  private ensureDir(): Promise<void> {
    this.dirReady ??= mkdir(dirname(this.path), { recursive: true, mode: 0o700 }).then(
      () => undefined,
      (err: unknown) => {
        this.dirReady = undefined;
        throw err;
      },
    );
    return this.dirReady;
  }
}

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? 'error';
}

async function readRecords(path: string): Promise<unknown[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (errCode(err) === 'ENOENT') return [];
    throw new StoreError(`cannot read ${path}: ${errCode(err)}`, { cause: err });
  }
  const out: unknown[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a line torn by a crash mid-write: skip it, the rest of the file is intact
    }
  }
  return out;
}

/** fsync a folder so a rename in it survives a crash (best effort: not every platform allows it). */
async function syncDir(dir: string): Promise<void> {
  try {
    const dh = await open(dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // some file systems refuse fsync on a folder; the rename is still atomic
  }
}

function isFailedRequest(v: unknown): v is FailedRequest {
  if (v === null || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return typeof r.id === 'string' && typeof r.dataflowId === 'string' && typeof r.attempts === 'number';
}

function isRejectedEvent(v: unknown): v is RejectedEvent {
  if (v === null || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return typeof r.sourceKey === 'string' && typeof r.code === 'string';
}

/**
 * Failed requests in a JSON Lines file. `put` appends one line and fsyncs (concurrent puts
 * are serialized and grouped); `list` reads the file, skipping a torn line, and gives the
 * latest record of each id (a record put twice is listed once, as last put); `remove`
 * rewrites the file without those ids, atomically (temp file + rename), which also compacts
 * it. The parent folder is created on first write.
 *
 * Writes are serialized within one process; two processes appending at once (a worker and a
 * `failed replay`) are not coordinated beyond `O_APPEND` and the per-write reopen.
 *
 * @example
 * ```ts
 * const store = new FileFailedRequestStore({ path: 'data/failed.jsonl' });
 * await store.put(record);
 * const all = await store.list({ dataflowId: 'flow-1' });
 * await store.remove(all.map((r) => r.id));
 * ```
 *
 * @param options.path the JSON Lines file (required)
 */
export class FileFailedRequestStore implements FailedRequestStore {
  private readonly file: JsonLinesFile;

  constructor(options: { path: string }) {
    this.file = new JsonLinesFile(options.path);
  }

  get path(): string {
    return this.file.path;
  }

  put(record: FailedRequest): Promise<void> {
    return this.file.append(JSON.stringify(record));
  }

  async list(filter?: { dataflowId?: string }): Promise<FailedRequest[]> {
    const all = [...toLatest(await this.file.readRecords()).values()];
    return filter?.dataflowId === undefined ? all : all.filter((r) => r.dataflowId === filter.dataflowId);
  }

  async remove(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const drop = new Set(ids);
    await this.file.update((records) =>
      [...toLatest(records).values()].filter((r) => !drop.has(r.id)).map((r) => JSON.stringify(r)),
    );
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

function toLatest(records: unknown[]): Map<string, FailedRequest> {
  const latest = new Map<string, FailedRequest>();
  for (const r of records) {
    if (!isFailedRequest(r)) continue;
    // delete first so the latest version takes the latest position
    latest.delete(r.id);
    latest.set(r.id, r);
  }
  return latest;
}

/**
 * Rejected input events in a JSON Lines file (kept beside the failed requests): `put`
 * appends one line and fsyncs, `list` reads them all in order, skipping a torn line.
 *
 * @example
 * ```ts
 * const rejected = new FileRejectedEventStore({ path: 'data/rejected.jsonl' });
 * await rejected.put({ sourceKey: 'file:events.jsonl:3', code: 'ERR_EVENT_JSON', reason: '…', raw: '{', rejectedAt: new Date().toISOString() });
 * ```
 *
 * @param options.path the JSON Lines file (required)
 */
export class FileRejectedEventStore implements RejectedEventStore {
  private readonly file: JsonLinesFile;

  constructor(options: { path: string }) {
    this.file = new JsonLinesFile(options.path);
  }

  get path(): string {
    return this.file.path;
  }

  put(record: RejectedEvent): Promise<void> {
    return this.file.append(JSON.stringify(record));
  }

  async list(): Promise<RejectedEvent[]> {
    return (await this.file.readRecords()).filter(isRejectedEvent);
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
