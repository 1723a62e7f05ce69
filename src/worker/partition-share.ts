/**
 * How a worker of a pool shares its `maxInFlight` among the partition consumers it runs
 * (pool-source.ts): each one's `max_ack_pending` and pull size.
 */

/** Defaults of the pool source, named in one place. */
export const POOL_SOURCE_DEFAULTS = {
  /**
   * Least `max_ack_pending` (and pull size) of a partition consumer. The client pulls again
   * when a quarter of its pull is delivered, so at 32 (a 512 `maxInFlight` over 16 partitions)
   * it sends a pull request every 8 messages; at 64, every 16. nats-server pays per pull
   * request and per consumer wake-up: see bench/README.md.
   */
  minAckPendingPerPartition: 64,
} as const;

/**
 * The `max_ack_pending` (and pull size) of each partition consumer of a worker that consumes
 * `owned` partitions: an equal share of `maxInFlight`, but at least `floor` (itself at most
 * `maxInFlight`). A worker owning few partitions of a large pool so keeps its whole
 * `maxInFlight` busy, and one owning all 16 of a pool pulls at least `floor` per partition:
 * together its consumers hold at most `max(maxInFlight, owned × floor)` unacknowledged.
 *
 * A running consumer keeps its share: lowering `max_ack_pending` under a running pull would
 * have nats-server refuse (409) the client's next full-size pull and stall the partition, and
 * restarting the pull to shrink it would lose whatever is on its way to the old one (redelivered
 * after `ack_wait`, out of order). So when a worker's count goes up (a peer left), the
 * partitions it already had keep their larger share until they move, and it may hold more than
 * `maxInFlight` meanwhile (1.5 × `maxInFlight` when it goes from 8 partitions to all 16; each
 * such step adds less than one `maxInFlight`). The pipeline's own `maxInFlight` bound still
 * holds: the excess waits, kept alive, before it.
 */
export function partitionShare(
  maxInFlight: number,
  owned: number,
  floor: number = POOL_SOURCE_DEFAULTS.minAckPendingPerPartition,
): number {
  const m = Math.max(1, Math.floor(maxInFlight));
  return Math.max(1, Math.min(floor, m), Math.floor(m / Math.max(1, owned)));
}
