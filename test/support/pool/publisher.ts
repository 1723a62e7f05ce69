/**
 * A live publisher that keeps updates flowing to the partition subjects at a given rate while
 * the pool runs.
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { partitionSubject } from '../../../src/domain/partition.js';
import type { ProfileUpdate } from '../../../src/domain/types.js';
import { ensureStream } from '../../../src/streams/jetstream.js';
import { sleep, type Backbone } from '../backbone.js';
import { POOL, type PoolSetup } from './config.js';

export interface Publisher {
  /** Events published (acknowledged by JetStream) so far. */
  published(): number;
  /** Stream sequence of each published event, by eventId. */
  seqOf: Map<string, number>;
  /** Resolves when every event is published, or after `stop()`. */
  done: Promise<void>;
  /** The events published so far: a prefix of the list, in order. */
  events(): ProfileUpdate[];
  /** Stops publishing (at a step boundary); resolves with the events published. */
  stop(): Promise<ProfileUpdate[]>;
}

/**
 * Publishes `events` in order to `<subject>.<fnv1a32(profileId) mod partitions>` (the
 * product's own `partitionSubject`, as `publish` does) at about `perSecond`, over one
 * connection, with publish acks (creates the stream when missing). Give it more events than
 * a test needs and `stop()` it when the test's choreography is over: updates then flow for
 * as long as the test takes, however fast or slow the machine, and the oracle is computed
 * over the published prefix.
 */
export function startPublisher(o: { bb: Backbone; setup: PoolSetup; events: readonly ProfileUpdate[]; perSecond: number }): Publisher {
  const seqOf = new Map<string, number>();
  let count = 0;
  let stopped = false;
  const stepMs = 50;
  const perStep = Math.max(1, Math.round((o.perSecond * stepMs) / 1000));
  const done = (async () => {
    const nc = await connect({ servers: o.bb.nats.url, timeout: 5_000 });
    try {
      const jsm = await jetstreamManager(nc);
      await ensureStream({ jsm, stream: o.setup.stream, subject: o.setup.subject });
      const js = jetstream(nc);
      const started = Date.now();
      for (let i = 0; i < o.events.length && !stopped; i += perStep) {
        const slice = o.events.slice(i, i + perStep);
        // One connection: the server stores them in call order.
        const acks = slice.map((e) =>
          js.publish(partitionSubject(o.setup.subject, e.profileId, POOL.partitions), JSON.stringify(e), { msgID: e.eventId }),
        );
        const got = await Promise.all(acks);
        got.forEach((a, j) => seqOf.set(slice[j].eventId as string, a.seq));
        count += slice.length;
        const due = started + ((i + perStep) / perStep) * stepMs;
        if (due > Date.now()) await sleep(due - Date.now());
      }
    } finally {
      await nc.close();
    }
  })();
  return {
    published: () => count,
    seqOf,
    done,
    events: () => o.events.slice(0, count),
    stop: async () => {
      stopped = true;
      await done;
      return o.events.slice(0, count);
    },
  };
}
