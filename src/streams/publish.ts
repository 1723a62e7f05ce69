/**
 * `publish`: a JSON Lines file → a JetStream subject, fast, with publish acks.
 */
import { createReadStream } from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import { createInbox, headers, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { interval } from 'rxjs';
import { ensureStream } from './jetstream.js';
import { connectNats, NatsError, withDefaults } from './nats.js';

/** Defaults of {@link publishJsonl}, named in one place. */
export const PUBLISH_DEFAULTS = {
  /** Publishes in flight awaiting their acks. */
  window: 1_024,
  /** How long one publish waits for its ack. */
  ackTimeoutMs: 10_000,
  /** Longest reason text kept for a skipped line. */
  maxReasonChars: 200,
} as const;

export interface PublishJsonlOptions {
  servers: string | string[];
  stream: string;
  subject: string;
  /** Path of the JSON Lines file. */
  file: string;
  /** The subject of one event (e.g. its partition's). @default every event to `subject` */
  subjectFor?: (event: unknown) => string;
  /** Publishes in flight awaiting acks. @default 1024 */
  window?: number;
  /** @default 10000 */
  ackTimeoutMs?: number;
  /**
   * Counters filled in as the publish goes (read them for progress; the result has the
   * final figures). @default a private object
   */
  stats?: PublishStats;
}

/** What a publish has done so far. */
export interface PublishStats {
  /** Lines read (blank ones included). */
  lines: number;
  /** Publishes acknowledged by the stream (duplicates included). */
  published: number;
  /** Of `published`: recognised by the stream as duplicates. */
  duplicates: number;
  /** Lines not published. */
  skipped: number;
}

export interface PublishJsonlResult {
  /** Lines published and acknowledged by the stream. */
  published: number;
  /** Of `published`: recognised by the stream as duplicates (same `eventId` within its
   *  duplicate window) and not stored again. */
  duplicates: number;
  /** Lines not published (not valid JSON, too large), with their 1-based line numbers. */
  skipped: Array<{ line: number; reason: string }>;
  /** Wall time in milliseconds. */
  ms: number;
}

/**
 * Publishes every non-empty line of a JSON Lines file to a JetStream subject, in file
 * order, keeping up to `window` publishes in flight. The file is read as a stream (never
 * whole in memory). Each event's `eventId`, when present, becomes the `Nats-Msg-Id`, so a
 * re-run within the stream's duplicate window stores nothing twice. Lines that are not
 * valid JSON (or exceed the server's max payload) are skipped and reported with their line
 * numbers; the rest are published. Creates the stream when missing.
 *
 * @example
 * const r = await publishJsonl({
 *   servers: 'nats://127.0.0.1:4222', stream: 'PROFILES', subject: 'profiles.updates',
 *   file: 'events.jsonl',
 * });
 * console.log(`${r.published} published in ${r.ms} ms, ${r.skipped.length} skipped`);
 *
 * Options: `servers`, `stream`, `subject`, `file` (required); `window` (@default 1024),
 * `ackTimeoutMs` (@default 10000).
 *
 * @throws NatsError `ERR_NATS_CONNECT` (no server), `ERR_JETSTREAM_PUBLISH` (a publish was not
 * acknowledged; what was acknowledged before stays published).
 */
export async function publishJsonl(options: PublishJsonlOptions): Promise<PublishJsonlResult> {
  const o = withDefaults(PUBLISH_DEFAULTS, options);
  const window = Math.max(1, Math.floor(o.window));
  const started = performance.now();
  const stats: PublishStats = options.stats ?? { lines: 0, published: 0, duplicates: 0, skipped: 0 };
  const nats = await connectNats({ servers: o.servers, name: 'http-destination:publish' });
  try {
    const jsm = await jetstreamManager(nats.nc);
    await ensureStream({ jsm, stream: o.stream, subject: o.subject });
    const publisher = pipelinedPublisher({ nc: nats.nc, ackTimeoutMs: o.ackTimeoutMs, stats });
    const maxPayload = nats.nc.info?.max_payload ?? Number.POSITIVE_INFINITY;
    const encoder = new TextEncoder();
    const skipped: PublishJsonlResult['skipped'] = [];

    /** Checks and publishes one line (or records why it is skipped). */
    const handle = (lineNo: number, raw: string): void => {
      stats.lines = lineNo;
      const text = raw.trim();
      if (text.length === 0) return;
      let event: unknown;
      try {
        event = JSON.parse(text);
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        skipped.push({ line: lineNo, reason: `not valid JSON: ${why}`.slice(0, o.maxReasonChars) });
        stats.skipped = skipped.length;
        return;
      }
      const data = encoder.encode(text);
      if (data.length > maxPayload) {
        skipped.push({ line: lineNo, reason: `${data.length} bytes, over the server's max payload of ${maxPayload}` });
        stats.skipped = skipped.length;
        return;
      }
      const eventId =
        event !== null && typeof event === 'object' && 'eventId' in event && typeof event.eventId === 'string'
          ? event.eventId
          : '';
      publisher.publish({ subject: o.subjectFor ? o.subjectFor(event) : o.subject, data, msgId: eventId, line: lineNo });
    };

    // Chunks, not lines: every line of a chunk is published without yielding, so the
    // client writes them to the socket together. Memory: one chunk and one partial line.
    const input = createReadStream(o.file, { encoding: 'utf8', highWaterMark: 256 * 1024 });
    let lineNo = 0;
    let rest = '';
    let failed = false;
    try {
      read: for await (const chunk of input as AsyncIterable<string>) {
        const text = rest.length > 0 ? rest + chunk : chunk;
        let start = 0;
        for (;;) {
          const nl = text.indexOf('\n', start);
          if (nl < 0) break;
          if (publisher.failed() || (publisher.inFlight() >= window && !(await publisher.below(window)))) {
            failed = true;
            break read;
          }
          handle(++lineNo, text.slice(start, nl));
          start = nl + 1;
        }
        rest = text.slice(start);
      }
      if (!failed && rest.length > 0 && !publisher.failed()) handle(++lineNo, rest);
    } catch (err) {
      publisher.abandon();
      throw err;
    } finally {
      input.destroy();
    }
    const { published, duplicates } = await publisher.finish();
    return { published, duplicates, skipped, ms: Math.round(performance.now() - started) };
  } finally {
    await nats.close();
  }
}

/** What the server answers a JetStream publish with. */
interface PubAckJson {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code?: number; description?: string };
}

/**
 * JetStream publishes pipelined over one inbox subscription: each message carries its own
 * reply subject and the ack is matched to it, without the per-request timer and promise of
 * `js.publish` (several times faster). Publishes go out in call order on one connection, so
 * the stream stores them in that order.
 */
function pipelinedPublisher(options: { nc: NatsConnection; ackTimeoutMs: number; stats: PublishStats }) {
  const { nc, ackTimeoutMs, stats } = options;
  const prefix = createInbox();
  const decoder = new TextDecoder();
  /** Outstanding publishes by reply number, oldest first (Map keeps insertion order). */
  const pending = new Map<number, { line: number; sentAt: number }>();
  let next = 0;
  let published = 0;
  let duplicates = 0;
  let failure: NatsError | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const fail = (line: number, reason: string, cause?: unknown) => {
    failure ??= new NatsError('ERR_JETSTREAM_PUBLISH', `line ${line} was not acknowledged: ${reason}`, { cause });
  };

  const sub = nc.subscribe(`${prefix}.*`, {
    callback: (err, m) => {
      if (err) {
        failure ??= new NatsError('ERR_JETSTREAM_PUBLISH', `ack subscription failed: ${err.message}`, { cause: err });
        notify();
        return;
      }
      const k = Number(m.subject.slice(prefix.length + 1));
      const p = pending.get(k);
      if (!p) return; // timed out already
      pending.delete(k);
      if (m.headers?.hasError) {
        const noStream = m.headers.code === 503 ? ' (no stream listens on the subject)' : '';
        fail(p.line, `${m.headers.code} ${m.headers.description}${noStream}`);
      } else {
        let ack: PubAckJson = {};
        try {
          ack = JSON.parse(decoder.decode(m.data)) as PubAckJson;
        } catch {
          ack = { error: { description: 'unreadable ack' } };
        }
        if (ack.error || !ack.stream) fail(p.line, `${ack.error?.code ?? ''} ${ack.error?.description ?? 'no ack'}`.trim());
        else {
          stats.published = ++published;
          if (ack.duplicate) stats.duplicates = ++duplicates;
        }
      }
      notify();
    },
  });

  // One clock for every outstanding publish: the oldest decides.
  const clock = interval(Math.min(1_000, ackTimeoutMs)).subscribe(() => {
    const now = Date.now();
    for (const [k, p] of pending) {
      if (now - p.sentAt < ackTimeoutMs) break;
      pending.delete(k);
      fail(p.line, `no ack in ${ackTimeoutMs} ms`);
    }
    notify();
  });

  const waitUntil = async (done: () => boolean) => {
    while (!done()) await new Promise<void>((r) => (wake = r));
  };

  return {
    /** A publish failed: stop publishing. */
    failed(): boolean {
      return failure !== undefined;
    },
    /** Publishes awaiting their ack. */
    inFlight(): number {
      return pending.size;
    },
    /**
     * Returns at once while fewer than `limit` are in flight; at the limit, waits until half
     * of them are acknowledged (publishing in bursts costs less than one by one).
     * `false` once a publish failed.
     */
    async below(limit: number): Promise<boolean> {
      if (pending.size >= limit) {
        const low = Math.floor(limit / 2);
        await waitUntil(() => pending.size <= low || failure !== undefined);
      }
      return failure === undefined;
    },
    publish(m: { subject: string; data: Uint8Array; msgId: string; line: number }): void {
      const k = next++;
      pending.set(k, { line: m.line, sentAt: Date.now() });
      let hdrs: MsgHdrs | undefined;
      if (m.msgId) {
        hdrs = headers();
        hdrs.set('Nats-Msg-Id', m.msgId);
      }
      try {
        nc.publish(m.subject, m.data, { reply: `${prefix}.${k}`, headers: hdrs });
      } catch (err) {
        pending.delete(k);
        fail(m.line, err instanceof Error ? err.message : String(err), err);
      }
    },
    /** Stops listening for acks (the file could not be read). */
    abandon(): void {
      clock.unsubscribe();
      sub.unsubscribe();
    },
    /** Waits for every ack (or the timeout of each); throws the first failure. */
    async finish(): Promise<{ published: number; duplicates: number }> {
      try {
        await waitUntil(() => pending.size === 0);
      } finally {
        clock.unsubscribe();
        sub.unsubscribe();
      }
      if (failure) throw failure;
      return { published, duplicates };
    },
  };
}
