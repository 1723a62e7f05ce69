/**
 * The Redis snapshot store's guesses (redis-snapshot-store.ts): the snapshot and version it last
 * read or wrote per profile, least recently used dropped first. Only a guess: the
 * compare-and-set on the version decides.
 */
import type { ProfileSnapshot } from '../domain/types.js';

/**
 * What `apply` merges into: a profile's snapshot as stored (`raw`, its JSON text, goes into
 * the replay record as is), parsed, and its version (null: no record yet). Also a cache entry:
 * the parsed snapshot is shared with callers, which is safe because `applyUpdate` and the
 * pipeline never mutate a snapshot (the memory store shares its snapshots the same way).
 */
export interface Known {
  raw: string | null;
  snapshot: ProfileSnapshot | null;
  version: string | null;
}

export class SnapshotCache {
  /**
   * profile id → what is known, in recency order (a Map iterates in insertion order: the first
   * entry is the least recently used).
   */
  private readonly known = new Map<string, Known>();

  /** @param size profiles kept (0: none). */
  constructor(private readonly size: number) {}

  get(profileId: string): Known | undefined {
    return this.known.get(profileId);
  }

  /** Makes `state` the profile's guess, the most recently used; drops the least recent beyond the bound. */
  remember(profileId: string, state: Known): void {
    if (this.size === 0) return;
    this.known.delete(profileId);
    this.known.set(profileId, state);
    if (this.known.size > this.size) this.known.delete(this.known.keys().next().value as string);
  }

  forget(profileId: string): void {
    this.known.delete(profileId);
  }

  forgetAll(): void {
    this.known.clear();
  }
}
