/**
 * The embedded default source: a JSON Lines file, one event per line, read as bytes.
 * With a position store (the local store) it resumes where the last `run` stopped.
 */
import { watch, type FSWatcher } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Observable } from 'rxjs';
import { DEFAULTS } from '../config/schema.js';
import { misfit, PositionWriter, type FilePositionStore } from './file-position.js';
import type { SourceMessage } from './types.js';

export type { FilePosition, FilePositionStore } from './file-position.js';

/** A running source: its messages, and a way to end it gracefully. */
export interface Source {
  /** Subscribing starts reading; unsubscribing stops it and releases what it opened. */
  readonly messages$: Observable<SourceMessage>;
  /**
   * Stop taking new messages; `messages$` completes once every message already emitted has
   * been acked (or, for a source that can redeliver, released for redelivery).
   */
  stop(): void;
}

/**
 * How far a file source got, in bytes and lines: the first line not yet settled (`offset`,
 * `line` lines before it) and the next line to read (`readOffset`, `readLine` lines before it).
 * The source-lag meter compares them with the file's end.
 */
export interface FileProgress {
  offset: number;
  line: number;
  readOffset: number;
  readLine: number;
}

export interface FileSourceOptions {
  path: string;
  /** Keep reading lines appended to the file after its current end (`run` without `--once`). @default false */
  follow?: boolean;
  /**
   * Follow mode: how often the file is checked for growth besides the change notifications
   * (`fs.watch`); the only check when notifications are not available. @default 1000
   */
  pollMs?: number;
  /** Follow mode without change notifications (`fs.watch` unavailable): the poll interval. @default 250 */
  fallbackPollMs?: number;
  /** Messages emitted but not yet acked, at most; reading pauses beyond. @default DEFAULTS.maxInFlight */
  maxInFlight?: number;
  /** Read size. @default 65536 */
  chunkBytes?: number;
  /**
   * Longest line kept whole, in bytes. A longer line is skipped as it streams (memory stays
   * bounded) and emitted as its first `maxLineBytes + 1` bytes, which the decoder rejects as
   * too large (`ERR_EVENT_TOO_LARGE`), with the line's key. @default DEFAULTS.maxEventBytes
   */
  maxLineBytes?: number;
  /** Resume from, and record, the read position here. Without it every run reads from the start. */
  positions?: FilePositionStore;
  /** Told when a stored position does not fit the file (truncated or replaced) and reading starts over. */
  onWarning?: (message: string, details: Record<string, unknown>) => void;
}

/** One line taken from the file: its bytes and where it starts and ends. */
interface Line {
  data: Buffer;
  lineNo: number;
  start: number;
}

/** An emitted line's bookkeeping for the position: settled or not, in file order. */
interface Unsettled {
  lineNo: number;
  start: number;
  settled: boolean;
}

/** What the reading loop waits for (see `signal`). */
type Wait = 'data' | 'room';

const isBlank = (b: Buffer): boolean => {
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
};

/**
 * Reads a JSON Lines file as source messages, each line's bytes as `data` (so the decoder
 * checks its UTF-8). Blank lines are skipped. Each message's key is `file:<path>:<line>`, so
 * reading the same lines again yields the same Idempotency-Keys. `nak(delay)` emits the same
 * message again after the delay; the stream completes at the end of the file (or after
 * `stop()`) once every emitted message is acked.
 *
 * With `positions`, the byte offset of the first line not yet settled is recorded (once per
 * event-loop turn as messages are acked, and at the end), and a new subscription starts
 * there: what was settled is not read again, what was read and not settled is. A file that
 * is shorter than the position, has another inode, or other first bytes, is read from its
 * start (with `onWarning`).
 *
 * While following, appends are noticed at once through `fs.watch` (with a slow poll beside it,
 * and polling alone where notifications are unavailable).
 *
 * @example
 * const src = fileSource({ path: 'events.jsonl', positions: localStore });
 * src.messages$.subscribe((m) => { handle(m); m.ack(); });
 */
export function fileSource(options: FileSourceOptions): Source & { progress(): FileProgress | undefined } {
  const {
    path,
    follow = false,
    pollMs = 1_000,
    fallbackPollMs = 250,
    maxInFlight = DEFAULTS.maxInFlight,
    chunkBytes = 65_536,
    maxLineBytes = DEFAULTS.maxEventBytes,
    positions,
    onWarning,
  } = options;
  const positionKey = `file:${path}`;
  /** Set while subscribed and reading (`progress()`). */
  let progress: (() => FileProgress) | undefined;
  let stopped = false;
  /**
   * Why the reading loop may go on: `data` (the file changed, or a poll is due) or `room` (an
   * ack lowered the in-flight count). Each is latched until the loop waits for it, and an ack
   * wakes only a loop waiting for room: at the end of a followed file one read per change,
   * not one per ack.
   */
  const kicked = { data: false, room: false };
  let wake: { kind: Wait; resolve: () => void } | undefined;
  const signal = (kind?: Wait): void => {
    if (kind) kicked[kind] = true;
    else kicked.data = kicked.room = true;
    const w = wake;
    if (!w || (kind && w.kind !== kind)) return;
    wake = undefined;
    w.resolve();
  };

  const messages$ = new Observable<SourceMessage>((subscriber) => {
    let inFlight = 0;
    const timers = new Set<NodeJS.Timeout>();
    let watcher: FSWatcher | undefined;
    let fh: FileHandle | undefined;
    /** Resolves at the next `signal` of `kind` (or a latched one), or after `ms`. */
    const waitFor = (kind: Wait, ms?: number): Promise<void> =>
      new Promise((r) => {
        if (kicked[kind]) {
          kicked[kind] = false;
          r();
          return;
        }
        let t: NodeJS.Timeout | undefined;
        wake = {
          kind,
          resolve: () => {
            if (t) clearTimeout(t);
            kicked[kind] = false;
            r();
          },
        };
        if (ms !== undefined) t = setTimeout(() => signal(kind), ms);
      });

    // Position bookkeeping: emitted lines in file order, and what the next line starts at.
    const unsettled: Unsettled[] = [];
    let head = 0;
    let nextStart = 0;
    let nextLine = 0;
    let readSoFar = 0;
    let identity: { ino: number; dev: number } | undefined;
    let saveQueued = false;
    const writer = positions
      ? new PositionWriter({
          store: positions,
          key: positionKey,
          onError: (err) => onWarning?.('file source: cannot record the read position (lines may be read again after a restart)', { path, err }),
        })
      : undefined;

    const current = (): { offset: number; line: number } => {
      while (head < unsettled.length && unsettled[head].settled) head++;
      if (head > 1024 && head * 2 > unsettled.length) {
        unsettled.splice(0, head);
        head = 0;
      }
      const first = unsettled[head];
      return first ? { offset: first.start, line: first.lineNo - 1 } : { offset: nextStart, line: nextLine };
    };
    /** Records the position of now (see `PositionWriter`). */
    const save = (): Promise<void> =>
      writer ? writer.save(() => (fh && identity ? { ...current(), size: readSoFar, fh, ino: identity.ino, dev: identity.dev } : undefined)) : Promise.resolve();
    const queueSave = (): void => {
      if (!writer || saveQueued) return;
      saveQueued = true;
      setImmediate(() => {
        saveQueued = false;
        void save();
      });
    };

    const makeMessage = (line: Line): SourceMessage => {
      let settled = false;
      const mark: Unsettled = { lineNo: line.lineNo, start: line.start, settled: false };
      unsettled.push(mark);
      const msg: SourceMessage = {
        data: line.data,
        key: `file:${path}:${line.lineNo}`,
        seq: line.lineNo,
        receivedAt: Date.now(),
        ack: () => {
          if (settled) return;
          settled = true;
          mark.settled = true;
          inFlight--;
          queueSave();
          signal('room');
        },
        working: () => {},
        nak: (delayMs = 1_000) => {
          if (settled) return;
          const t = setTimeout(() => {
            timers.delete(t);
            if (!subscriber.closed) subscriber.next(msg);
          }, delayMs);
          timers.add(t);
        },
      };
      return msg;
    };

    /** Where to start: the stored position when it still fits this file, else the start. */
    const startAt = async (handle: FileHandle): Promise<{ offset: number; line: number }> => {
      const st = await handle.stat();
      identity = { ino: st.ino, dev: st.dev };
      const stored = positions ? await positions.getPosition(positionKey) : undefined;
      if (!stored || !writer) return { offset: 0, line: 0 };
      const why = await misfit(handle, stored);
      if (why) {
        onWarning?.(`file source: ${path} was ${why} since the last run: reading it from the start`, { path });
        return { offset: 0, line: 0 };
      }
      writer.hashed = { head: stored.head, headBytes: stored.headBytes };
      return { offset: stored.offset, line: stored.line };
    };

    const run = async (): Promise<void> => {
      fh = await open(path, 'r');
      try {
        const start = await startAt(fh);
        if (follow) {
          try {
            watcher = watch(path, { persistent: false }, () => signal('data'));
            watcher.on('error', () => {
              watcher?.close();
              watcher = undefined;
            });
          } catch {
            watcher = undefined; // no notifications here: the poll alone notices appends
          }
        }
        let offset = start.offset;
        readSoFar = offset;
        nextStart = offset;
        nextLine = start.line;
        progress = () => ({ ...current(), readOffset: nextStart, readLine: nextLine });
        let lineNo = start.line;
        // The line being read: its parts (at most maxLineBytes + 1 bytes kept) and its length.
        let parts: Buffer[] = [];
        let kept = 0;
        const take = (chunk: Buffer, from: number, to: number): void => {
          const room = maxLineBytes + 1 - kept;
          if (room <= 0 || to <= from) return;
          const n = Math.min(room, to - from);
          parts.push(Buffer.from(chunk.subarray(from, from + n)));
          kept += n;
        };
        /**
         * Ends the line read so far at file offset `end`: emits it (a blank line is only
         * counted). `true`: go on reading; `false`: stopped. Synchronous unless it must wait
         * for room (`maxInFlight`): no promise per line while there is room.
         */
        const finishLine = (end: number): boolean | Promise<boolean> => {
          const data = parts.length === 1 ? parts[0] : Buffer.concat(parts, kept);
          parts = [];
          kept = 0;
          const body = data.length > 0 && data[data.length - 1] === 0x0d && data.length <= maxLineBytes ? data.subarray(0, -1) : data;
          if (isBlank(body)) return emitLine(body, end);
          if (subscriber.closed || stopped) return false;
          if (inFlight < maxInFlight) return emitLine(body, end);
          return (async (): Promise<boolean> => {
            while (inFlight >= maxInFlight && !subscriber.closed && !stopped) await waitFor('room');
            // Not emitted: the position stays before this line, so the next run reads it.
            if (subscriber.closed || stopped) return false;
            return emitLine(body, end);
          })();
        };
        const emitLine = (body: Buffer, end: number): boolean => {
          lineNo++;
          const lineStart = nextStart;
          nextStart = end;
          nextLine = lineNo;
          if (isBlank(body)) return true;
          inFlight++;
          subscriber.next(makeMessage({ data: body, lineNo, start: lineStart }));
          return true;
        };

        const chunk = Buffer.allocUnsafe(chunkBytes);
        while (!stopped && !subscriber.closed) {
          kicked.data = false;
          const { bytesRead } = await fh.read(chunk, 0, chunkBytes, offset);
          if (bytesRead === 0) {
            if (!follow) break;
            const { size } = await fh.stat();
            if (size < offset) {
              onWarning?.(`file source: ${path} was truncated while followed: reading it from the start`, { path });
              offset = nextStart = readSoFar = 0;
              lineNo = nextLine = 0;
              parts = [];
              kept = 0;
              if (writer) writer.hashed = { head: '', headBytes: -1 };
              continue;
            }
            await waitFor('data', watcher ? pollMs : fallbackPollMs);
            continue;
          }
          const base = offset;
          offset += bytesRead;
          readSoFar = offset;
          let i = 0;
          let go = true;
          while (i < bytesRead && go) {
            const nl = chunk.indexOf(0x0a, i);
            if (nl === -1 || nl >= bytesRead) {
              take(chunk, i, bytesRead);
              break;
            }
            take(chunk, i, nl);
            i = nl + 1;
            const done = finishLine(base + i);
            go = typeof done === 'boolean' ? done : await done;
          }
          if (!go) break;
          // A short read reached the end of a followed file: wait for it to change rather than
          // read nothing and stat it (the next read after a change checks for truncation).
          if (follow && bytesRead < chunkBytes) await waitFor('data', watcher ? pollMs : fallbackPollMs);
        }
        // A last line without a newline is a whole event at the end of a finished file.
        if (!follow && !stopped && kept > 0 && !subscriber.closed) await finishLine(offset);
        watcher?.close();
        watcher = undefined;
        while (inFlight > 0 && !subscriber.closed) await waitFor('room');
        await save();
      } finally {
        progress = undefined;
        watcher?.close();
        const handle = fh;
        await writer?.idle();
        fh = undefined;
        await handle.close();
      }
      subscriber.complete();
    };
    run().catch((err: unknown) => subscriber.error(err));
    return () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      watcher?.close();
      watcher = undefined;
      signal();
    };
  });

  return {
    messages$,
    stop: () => {
      stopped = true;
      signal();
    },
    progress: () => progress?.(),
  };
}
