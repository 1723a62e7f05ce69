/**
 * Publishing bench updates to JetStream: a pipelined publisher (each message carries its own
 * reply subject, acks matched by number, a window of publishes in flight), used to load a
 * backlog as fast as the server takes it, or to offer a steady rate.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect, createInbox, type NatsConnection } from '@nats-io/transport-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { partitionSubject } from '../src/domain/partition.js';
import { ensureStream } from '../src/streams/jetstream.js';
import { stamp, type EventGenerator } from './events.js';

/**
 * Where an update goes: `<subject>.<partition>` as producers do for the worker pool
 * (`partitions` > 0), or `subject` itself (0: the ceilings' plain stream).
 */
function subjectOf(subject: string, partitions: number, profileId: string): string {
  return partitions > 0 ? partitionSubject(subject, profileId, partitions) : subject;
}

export interface Publisher {
  publish(subject: string, data: string): void;
  inFlight(): number;
  /** Waits until at most `n` publishes await their ack. */
  below(n: number): Promise<void>;
  /** Waits for every ack; throws the first failure. */
  finish(): Promise<number>;
}

export function pipelinedPublisher(nc: NatsConnection): Publisher {
  const prefix = createInbox();
  let next = 0;
  let acked = 0;
  let pending = 0;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const sub = nc.subscribe(`${prefix}.*`, {
    callback: (err, m) => {
      pending--;
      if (err) failure ??= err;
      else if (m.headers?.hasError) failure ??= new Error(`publish: ${m.headers.code} ${m.headers.description}`);
      else acked++;
      const w = wake;
      wake = undefined;
      w?.();
    },
  });
  const waitUntil = async (ok: () => boolean) => {
    while (!ok() && !failure) await new Promise<void>((r) => (wake = r));
    if (failure) throw failure;
  };
  return {
    publish(subject, data) {
      pending++;
      nc.publish(subject, data, { reply: `${prefix}.${next++}` });
    },
    inFlight: () => pending,
    below: (n) => waitUntil(() => pending <= n),
    async finish() {
      await waitUntil(() => pending === 0);
      sub.unsubscribe();
      return acked;
    },
  };
}

export interface BacklogResult {
  published: number;
  bytes: number;
  ms: number;
}

/** Creates the stream (as `run` would) and publishes `count` generated updates as fast as acked. */
export async function publishBacklog(options: {
  servers: string;
  stream: string;
  subject: string;
  /** Partitions of the pool (updates go to `<subject>.<partition>`); 0 = to `subject`. */
  partitions: number;
  gen: EventGenerator;
  count: number;
  window?: number;
  onProgress?: (n: number) => void;
}): Promise<BacklogResult> {
  const nc = await connect({ servers: options.servers, name: 'bench:publish' });
  try {
    const jsm = await jetstreamManager(nc);
    await ensureStream({ jsm, stream: options.stream, subject: options.subject });
    const pub = pipelinedPublisher(nc);
    const window = options.window ?? 4_096;
    const t0 = performance.now();
    let bytes = 0;
    for (let i = 0; i < options.count; i++) {
      if (pub.inFlight() >= window) await pub.below(window / 2);
      const { event } = options.gen.next();
      const data = stamp(event, Date.now());
      bytes += data.length;
      pub.publish(subjectOf(options.subject, options.partitions, event.profileId), data);
      if (options.onProgress && i % 100_000 === 99_999) options.onProgress(i + 1);
    }
    const published = await pub.finish();
    return { published, bytes, ms: performance.now() - t0 };
  } finally {
    await nc.close();
  }
}

export interface PacedResult {
  published: number;
  /** Achieved offered rate, updates/s. */
  rate: number;
  ms: number;
  /** Wall time the first / last update was published. */
  startedAt: number;
  endedAt: number;
  /** Longest the publisher fell behind its schedule, ms (a starved publisher offers less). */
  maxLagMs: number;
}

/** Offers `rate` updates/s for `durationS` seconds, each stamped with its publish time. */
export async function publishPaced(options: {
  servers: string;
  subject: string;
  partitions: number;
  gen: EventGenerator;
  rate: number;
  durationS: number;
}): Promise<PacedResult> {
  const nc = await connect({ servers: options.servers, name: 'bench:steady' });
  try {
    const pub = pipelinedPublisher(nc);
    const total = Math.round(options.rate * options.durationS);
    const startedAt = Date.now();
    const t0 = performance.now();
    let sent = 0;
    let maxLagMs = 0;
    while (sent < total) {
      const elapsed = performance.now() - t0;
      const due = Math.min(total, Math.floor((elapsed / 1000) * options.rate));
      if (due - sent > 1) maxLagMs = Math.max(maxLagMs, ((due - sent) / options.rate) * 1000);
      while (sent < due) {
        const { event } = options.gen.next();
        pub.publish(subjectOf(options.subject, options.partitions, event.profileId), stamp(event, Date.now()));
        sent++;
      }
      // ~1 ms ticks: small bursts (8 at 8,000/s), like a real producer's batching.
      await sleep(1);
    }
    const endedAt = Date.now();
    const ms = performance.now() - t0;
    const published = await pub.finish();
    return { published, rate: (published / ms) * 1000, ms, startedAt, endedAt, maxLagMs };
  } finally {
    await nc.close();
  }
}
