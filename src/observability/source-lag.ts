/**
 * Source lag: how much of the source waits for the worker (or the pool), measured from the
 * source itself at a regular interval. It feeds the `http_destination_source_*` gauges, the
 * `delay` alert rule (SPEC §10: the oldest update waiting, unacknowledged or not yet read) and
 * `/api/partitions`.
 *
 * - JetStream (`source-lag-jetstream.ts`): per consumer (one, or each partition's current one
 *   in a pool), `num_pending` (not yet delivered) and `num_ack_pending` (delivered, not yet
 *   acknowledged); the oldest waiting message is the first one of the consumer's subject above
 *   its ack floor, whose stream timestamp says when it arrived.
 * - The JSON Lines file (`fileLagMeter`): complete lines after the read position (not yet
 *   read) and between the settled and the read position (read, not yet settled). A line's
 *   arrival is the file's modification time when the meter first saw the file reach past it
 *   (never later than the truth, so the age is never overstated).
 */
import { open, stat } from 'node:fs/promises';
import type { FileProgress } from '../streams/file.js';
import type { Metrics } from './metrics.js';
import { throttledWarn, type WarnLogger } from './throttled-warn.js';

/** One consumer's (or the file's) share of the source. */
export interface PartitionLag {
  /** The pool partition; absent for a source read as a whole (one consumer, a file). */
  partition?: number;
  /** The JetStream consumer measured; absent when the partition has none yet, or for a file. */
  consumer?: string;
  /** Messages not yet delivered to a worker (file: complete lines not yet read). */
  pending: number;
  /** Messages delivered (read) and not yet acknowledged (settled). */
  ackPending: number;
  /** When the oldest message waiting (unacknowledged or not yet read) arrived, ms since the epoch; absent when none waits. */
  oldestAt?: number;
}

/** One measurement of the whole source. */
export interface SourceLag {
  source: 'jetstream' | 'file';
  /** When it was measured (ms since the epoch). */
  at: number;
  partitions: PartitionLag[];
}

/** What waits in a measurement, summed over its partitions. */
export interface LagTotals {
  pending: number;
  ackPending: number;
  /** Age of the oldest message waiting at the measurement (ms); 0 when none waits. */
  oldestWaitingMs: number;
}

export function lagTotals(lag: SourceLag): LagTotals {
  let pending = 0;
  let ackPending = 0;
  let oldest = Infinity;
  for (const p of lag.partitions) {
    pending += p.pending;
    ackPending += p.ackPending;
    if (p.oldestAt !== undefined && p.oldestAt < oldest) oldest = p.oldestAt;
  }
  return { pending, ackPending, oldestWaitingMs: oldest === Infinity ? 0 : Math.max(0, lag.at - oldest) };
}

/** Measures a source; `measure` rejects when the source cannot be reached (the lag is then unknown). */
export interface LagMeter {
  readonly source: SourceLag['source'];
  measure(): Promise<SourceLag>;
  close(): Promise<void>;
}

/** Bytes read at a time when counting the lines of the file's unread part. */
const SCAN_BYTES = 65_536;

/**
 * The lag of a JSON Lines file source: `progress` is the running source's (`fileSource(…).progress`).
 * Lines are counted once, from the first settled position it sees on, as the file grows.
 *
 * @example
 * const meter = fileLagMeter({ path: 'events.jsonl', progress: () => source.progress() });
 * const { partitions: [file] } = await meter.measure(); // { pending, ackPending, oldestAt }
 */
export function fileLagMeter(o: { path: string; progress: () => FileProgress | undefined; now?: () => number }): LagMeter {
  const now = o.now ?? Date.now;
  /** Where counting started: a settled position, the line count before it, the file it was in. */
  let base: { offset: number; line: number; ino: number } | undefined;
  /** Bytes counted so far, and the newlines among them (from `base.offset`). */
  let scannedTo = 0;
  let newlines = 0;
  /** The file's end at each growth seen, with its modification time then (ascending). */
  let grown: Array<{ end: number; at: number }> = [];

  const countNewlines = async (from: number, to: number): Promise<number> => {
    const fh = await open(o.path, 'r');
    try {
      const buf = Buffer.allocUnsafe(SCAN_BYTES);
      let n = 0;
      for (let at = from; at < to; ) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(SCAN_BYTES, to - at), at);
        if (bytesRead === 0) break;
        for (let i = buf.indexOf(0x0a, 0); i !== -1 && i < bytesRead; i = buf.indexOf(0x0a, i + 1)) n++;
        at += bytesRead;
      }
      return n;
    } finally {
      await fh.close();
    }
  };

  return {
    source: 'file',
    async measure() {
      const at = now();
      const p = o.progress();
      if (!p) return { source: 'file', at, partitions: [] };
      const st = await stat(o.path);
      if (!base || st.ino !== base.ino || st.size < scannedTo || p.offset < base.offset) {
        // First look, or the file was replaced, truncated, or is read again from its start.
        base = { offset: p.offset, line: p.line, ino: st.ino };
        scannedTo = p.offset;
        newlines = 0;
        grown = [];
      }
      if (st.size > scannedTo) {
        newlines += await countNewlines(scannedTo, st.size);
        scannedTo = st.size;
        grown.push({ end: st.size, at: st.mtimeMs });
      }
      while (grown.length > 0 && grown[0].end <= p.offset) grown.shift();
      const lines = Math.max(base.line + newlines, p.readLine);
      const pending = lines - p.readLine;
      const ackPending = Math.max(0, p.readLine - p.line);
      const waiting = pending + ackPending > 0;
      return {
        source: 'file',
        at,
        partitions: [{ pending, ackPending, ...(waiting ? { oldestAt: Math.min(grown[0]?.at ?? at, at) } : {}) }],
      };
    },
    async close() {},
  };
}

/** Timing of `startSourceLag`. */
export const SOURCE_LAG_DEFAULTS = {
  /** Interval of the measurement that updates the gauges. */
  intervalMs: 5_000,
  /** A measurement at most this old answers `measure()` (alerts, the API) without asking the source again. */
  maxAgeMs: 1_000,
} as const;

/** The running measurement of a worker's source. */
export interface SourceLagMonitor {
  readonly source: SourceLag['source'];
  /** The last successful measurement, if any. */
  latest(): SourceLag | undefined;
  /**
   * A measurement at most `maxAgeMs` old (one in progress is shared); undefined when the source
   * cannot be reached now.
   */
  measure(maxAgeMs?: number): Promise<SourceLag | undefined>;
  close(): Promise<void>;
}

/**
 * Measures the source every `intervalMs` and publishes each measurement to the metrics' gauges
 * (a failed one removes them: the lag is unknown).
 *
 * @example
 * const lag = startSourceLag({ meter: fileLagMeter({ path, progress }), metrics });
 * const reading = await lag.measure(); // for the delay rule
 * await lag.close();
 */
export function startSourceLag(o: { meter: LagMeter; metrics?: Metrics; intervalMs?: number; onError?: (err: unknown) => void }): SourceLagMonitor {
  const intervalMs = o.intervalMs ?? SOURCE_LAG_DEFAULTS.intervalMs;
  let last: SourceLag | undefined;
  let running: Promise<SourceLag | undefined> | undefined;
  let closed = false;

  const take = (): Promise<SourceLag | undefined> => {
    // Closed: nothing measures again (a measurement would open a connection nobody closes).
    if (closed) return Promise.resolve(undefined);
    running ??= o.meter
      .measure()
      .then(
        (lag) => {
          last = lag;
          if (!closed) o.metrics?.setSourceLag(lag);
          return lag as SourceLag | undefined;
        },
        (err: unknown) => {
          if (!closed) o.metrics?.setSourceLag(undefined);
          o.onError?.(err);
          return undefined;
        },
      )
      .finally(() => {
        running = undefined;
      });
    return running;
  };

  const timer = setInterval(() => void take(), intervalMs);
  timer.unref();
  void take();
  return {
    source: o.meter.source,
    latest: () => last,
    async measure(maxAgeMs = SOURCE_LAG_DEFAULTS.maxAgeMs) {
      if (last && Date.now() - last.at <= maxAgeMs) return last;
      return take();
    },
    async close() {
      closed = true;
      clearInterval(timer);
      await running;
      o.metrics?.setSourceLag(undefined);
      await o.meter.close();
    },
  };
}

/**
 * The source-lag measurement of a worker's source (the JetStream meter is loaded only for a
 * JetStream source): the file source's own progress, or the durable consumer (one worker) or
 * every partition's current consumer (a pool: `store.kind: redis`).
 */
export async function openSourceLag(
  config: { source: { kind: 'file'; path: string } | { kind: 'jetstream'; servers: string[]; stream: string; subject: string; durable: string; partitions: number }; store: { kind: string } },
  source: { progress?: () => FileProgress | undefined },
  o: { metrics?: Metrics; intervalMs?: number; logger?: WarnLogger } = {},
): Promise<SourceLagMonitor | undefined> {
  const warn = throttledWarn({ logger: o.logger, intervalMs: 60_000 });
  const onError = (err: unknown): void => warn({ err }, 'source lag: cannot measure it now (gauges left out, delay alerts keep their state)');
  const s = config.source;
  if (s.kind === 'file') {
    const progress = source.progress;
    if (!progress) return undefined;
    return startSourceLag({ ...o, onError, meter: fileLagMeter({ path: s.path, progress }) });
  }
  const { jetstreamLagMeter } = await import('./source-lag-jetstream.js');
  const pool = config.store.kind === 'redis';
  return startSourceLag({
    ...o,
    onError,
    meter: jetstreamLagMeter({ servers: s.servers, stream: s.stream, subject: s.subject, durable: s.durable, ...(pool ? { partitions: s.partitions } : {}) }),
  });
}
