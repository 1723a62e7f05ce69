/**
 * The embedded default source: a JSON Lines file, one event per line.
 */
import { open } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { Observable } from 'rxjs';
import { DEFAULTS } from '../config/schema.js';
import type { SourceMessage } from './types.js';

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

export interface FileSourceOptions {
  path: string;
  /** Keep reading lines appended to the file after its current end (`run` without `--once`). @default false */
  follow?: boolean;
  /** How often a followed file is checked for growth. @default 500 */
  pollMs?: number;
  /** Messages emitted but not yet acked, at most; reading pauses beyond. @default DEFAULTS.maxInFlight */
  maxInFlight?: number;
  /** Read size. @default 65536 */
  chunkBytes?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Reads a JSON Lines file as source messages. Blank lines are skipped. Each message's key is
 * `file:<path>:<line>`, so reading the same file again yields the same Idempotency-Keys for
 * events without an `eventId`. `nak(delay)` emits the same message again after the delay;
 * the stream completes at the end of the file (or after `stop()`) once every emitted message
 * is acked.
 *
 * @example
 * const src = fileSource({ path: 'events.jsonl' });
 * src.messages$.subscribe((m) => { handle(m); m.ack(); });
 */
export function fileSource(options: FileSourceOptions): Source {
  const { path, follow = false, pollMs = 500, maxInFlight = DEFAULTS.maxInFlight, chunkBytes = 65_536 } = options;
  let stopped = false;
  let wake: (() => void) | undefined;
  const signal = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };

  const messages$ = new Observable<SourceMessage>((subscriber) => {
    let inFlight = 0;
    const timers = new Set<NodeJS.Timeout>();
    const waitForSignal = (): Promise<void> => new Promise((r) => (wake = r));

    const makeMessage = (line: string, lineNo: number): SourceMessage => {
      let settled = false;
      const msg: SourceMessage = {
        data: line,
        key: `file:${path}:${lineNo}`,
        seq: lineNo,
        receivedAt: Date.now(),
        ack: () => {
          if (settled) return;
          settled = true;
          inFlight--;
          signal();
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

    const run = async (): Promise<void> => {
      const fh = await open(path, 'r');
      try {
        const buf = Buffer.alloc(chunkBytes);
        // Keeps a multi-byte character split across two reads whole.
        const decoder = new StringDecoder('utf8');
        let offset = 0;
        let lineNo = 0;
        let rest = '';
        while (!stopped && !subscriber.closed) {
          const { bytesRead } = await fh.read(buf, 0, chunkBytes, offset);
          if (bytesRead === 0) {
            if (!follow) break;
            await Promise.race([sleep(pollMs), waitForSignal()]);
            continue;
          }
          offset += bytesRead;
          const text = rest + decoder.write(buf.subarray(0, bytesRead));
          const lines = text.split('\n');
          rest = lines.pop() ?? '';
          for (const raw of lines) {
            if (stopped) break;
            lineNo++;
            const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
            if (line.trim() === '') continue;
            while (inFlight >= maxInFlight && !subscriber.closed && !stopped) await waitForSignal();
            if (subscriber.closed) return;
            if (stopped) break;
            inFlight++;
            subscriber.next(makeMessage(line, lineNo));
          }
        }
        // A last line without a newline is a whole event at the end of a finished file.
        if (!follow && !stopped && rest.trim() !== '' && !subscriber.closed) {
          lineNo++;
          inFlight++;
          subscriber.next(makeMessage(rest, lineNo));
        }
      } finally {
        await fh.close();
      }
      while (inFlight > 0 && !subscriber.closed) await waitForSignal();
      subscriber.complete();
    };
    run().catch((err: unknown) => subscriber.error(err));
    return () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      signal();
    };
  });

  return {
    messages$,
    stop: () => {
      stopped = true;
      signal();
    },
  };
}
