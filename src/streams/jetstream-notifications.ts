/** The JetStream consumer notifications a source surfaces, and their texts. */
import type { ConsumerNotification } from '@nats-io/jetstream';

/** Consumer notifications worth surfacing, and whether they make the source restart. */
export const SURFACED: Partial<Record<ConsumerNotification['type'], { restart: boolean }>> = {
  heartbeats_missed: { restart: false },
  consumer_deleted: { restart: true },
  consumer_not_found: { restart: true },
  stream_not_found: { restart: true },
  exceeded_limits: { restart: false },
  no_responders: { restart: false },
};

export function describe(n: ConsumerNotification): string {
  switch (n.type) {
    case 'heartbeats_missed':
      return `${n.count} heartbeats missed`;
    case 'consumer_deleted':
      return `consumer deleted (${n.code} ${n.description})`;
    case 'consumer_not_found':
      return `consumer ${n.stream}/${n.name} not found (attempt ${n.count})`;
    case 'stream_not_found':
      return `stream ${n.name} not found`;
    case 'exceeded_limits':
      return `pull request exceeded limits (${n.code} ${n.description})`;
    case 'no_responders':
      return `JetStream did not answer (${n.code})`;
    default:
      return n.type;
  }
}
