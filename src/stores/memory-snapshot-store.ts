/**
 * The embedded default snapshot store: everything in process memory. Same semantics as the
 * Redis store (the contract suite in test/stores runs against both).
 */
import { DEFAULTS } from '../config/schema.js';
import { mergeChecked } from '../domain/merge-checked.js';
import { isIn, membershipOf } from '../domain/diff.js';
import { FencedError, StoreError } from '../errors.js';
import type { ProfileSnapshot, ProfileUpdate } from '../domain/types.js';
import type { ApplyContext, ApplyResult, BackfillBegin, BackfillState, SnapshotStore } from './types.js';

/** Unconfirmed applications kept per profile for redelivery; the oldest is dropped beyond this. */
export const MAX_PENDING_PER_PROFILE = 64;

interface Entry {
  snapshot: ProfileSnapshot;
  /** Highest `ApplyContext.watermark` applied. */
  watermark?: number;
  /** Upper bound of the snapshot's JSON size without `last` (`MergeChecked.coreBytes`). */
  bytes?: number;
  /**
   * The unconfirmed applications: message key → the result of its first application. The
   * usual one is held inline (`pendingKey`, `pendingOne`: no Map per update); a Map only from
   * the second one on (then it holds them all).
   */
  pendingKey?: string;
  pendingOne?: Applied;
  pending?: Map<string, Applied>;
}

interface Applied {
  before: ProfileSnapshot | null;
  after: ProfileSnapshot;
}

function pendingOf(entry: Entry | undefined, key: string): Applied | undefined {
  if (entry === undefined) return undefined;
  return entry.pendingKey === key ? entry.pendingOne : entry.pending?.get(key);
}

function addPending(entry: Entry, key: string, applied: Applied): void {
  if (entry.pending) {
    entry.pending.set(key, applied);
    if (entry.pending.size > MAX_PENDING_PER_PROFILE) entry.pending.delete(entry.pending.keys().next().value as string);
  } else if (entry.pendingKey === undefined) {
    entry.pendingKey = key;
    entry.pendingOne = applied;
  } else {
    entry.pending = new Map([[entry.pendingKey, entry.pendingOne as Applied], [key, applied]]);
    entry.pendingKey = undefined;
    entry.pendingOne = undefined;
  }
}

export interface MemorySnapshotStoreOptions {
  /**
   * Largest snapshot (JSON, UTF-8 bytes): `apply` of an update that would pass it rejects with
   * `EventRejectedError` `ERR_SNAPSHOT_TOO_LARGE` and changes nothing. @default DEFAULTS.maxSnapshotBytes (1 MiB)
   */
  maxSnapshotBytes?: number;
}

/**
 * In-memory `SnapshotStore`. `apply` merges with `mergeChecked`: an update the merge cannot
 * take (or one past the size limit) rejects with `EventRejectedError` and changes nothing.
 *
 * @example
 * const store = new MemorySnapshotStore({ maxSnapshotBytes: 1_048_576 });
 * const { before, after } = await store.apply(update, { key: 'file:events.jsonl:1', seq: 1 });
 */
export class MemorySnapshotStore implements SnapshotStore {
  private readonly profiles = new Map<string, Entry>();
  private readonly audiences = new Map<string, Set<string>>();
  private readonly backfills = new Map<string, BackfillState>();
  /** backfill id → the audience's members when it began (`beginBackfill`), until it is done. */
  private readonly frozen = new Map<string, readonly string[]>();
  private readonly maxSnapshotBytes: number;

  constructor(options: MemorySnapshotStoreOptions = {}) {
    this.maxSnapshotBytes = options.maxSnapshotBytes ?? DEFAULTS.maxSnapshotBytes;
  }

  async apply(update: ProfileUpdate, ctx: ApplyContext): Promise<ApplyResult> {
    const entry = this.profiles.get(update.profileId);
    const first = pendingOf(entry, ctx.key);
    const w = entry?.watermark;
    const overtaken = ctx.watermark !== undefined && w !== undefined && ctx.watermark < w;
    if (first) {
      return { update, before: first.before, after: first.after, replayed: true, latest: overtaken ? entry?.snapshot : undefined };
    }
    if (entry && ctx.watermark !== undefined && w !== undefined && ctx.watermark <= w) {
      return { update, before: entry.snapshot, after: entry.snapshot, replayed: true, stale: true };
    }
    if (ctx.fence) throw new FencedError('the memory store has no leases: pool mode needs store.kind: redis');
    const before = entry ? entry.snapshot : null;
    // The size is measured only when a bound (the snapshot's before, plus the update's from its
    // text) could pass the limit: an update of a small profile is never stringified.
    const { after, coreBytes } = mergeChecked(before, update, {
      maxSnapshotBytes: this.maxSnapshotBytes,
      beforeBytes: entry?.bytes,
      updateBytes: ctx.updateBytes,
    });
    const next: Entry = entry ?? { snapshot: after };
    next.snapshot = after;
    next.bytes = coreBytes;
    if (ctx.watermark !== undefined) next.watermark = ctx.watermark;
    addPending(next, ctx.key, { before, after });
    this.profiles.set(update.profileId, next);
    this.index(before, after);
    return { update, before, after, replayed: false };
  }

  async confirm(profileId: string, key: string): Promise<void> {
    const entry = this.profiles.get(profileId);
    if (entry === undefined) return;
    if (entry.pendingKey === key) {
      entry.pendingKey = undefined;
      entry.pendingOne = undefined;
    } else if (entry.pending) {
      entry.pending.delete(key);
      if (entry.pending.size === 0) entry.pending = undefined;
    }
  }

  async get(profileId: string): Promise<ProfileSnapshot | null> {
    return this.profiles.get(profileId)?.snapshot ?? null;
  }

  async *members(audienceId: string, batchSize = 500): AsyncIterable<string[]> {
    const set = this.audiences.get(audienceId);
    if (!set) return;
    let batch: string[] = [];
    for (const id of [...set]) {
      batch.push(id);
      if (batch.length >= batchSize) {
        yield batch;
        batch = [];
      }
    }
    if (batch.length > 0) yield batch;
  }

  async scanMembers(audienceId: string, options: { cursor: string; count: number; frozenAs?: string }): Promise<{ ids: string[]; cursor: string }> {
    if (options.frozenAs !== undefined) return this.scanFrozen(options.frozenAs, options);
    // The cursor is the last id returned (ids in sorted order), so members leaving or joining
    // between pages never make the scan skip one that stays.
    const all = [...(this.audiences.get(audienceId) ?? [])].sort();
    const after = options.cursor === '0' ? undefined : options.cursor.slice(1);
    let from = 0;
    if (after !== undefined) {
      let lo = 0;
      let hi = all.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (all[mid] <= after) lo = mid + 1;
        else hi = mid;
      }
      from = lo;
    }
    const ids = all.slice(from, from + Math.max(1, options.count));
    const done = from + ids.length >= all.length;
    return { ids, cursor: done ? '0' : `>${ids[ids.length - 1]}` };
  }

  async beginBackfill(id: string, audienceId: string): Promise<BackfillBegin> {
    const known = this.backfills.get(id);
    if (known && (known.done || this.frozen.has(id))) return { state: { ...known }, phase: 'resume' };
    // Insertion order of the set: a fixed order for this copy, and no sort of a large audience.
    this.frozen.set(id, [...(this.audiences.get(audienceId) ?? [])]);
    const state: BackfillState = { done: false, cursor: '0', sent: known?.sent ?? 0 };
    this.backfills.set(id, state);
    return { state: { ...state }, phase: known ? 'restart' : 'start' };
  }

  async getBackfill(id: string): Promise<BackfillState | null> {
    const s = this.backfills.get(id);
    return s ? { ...s } : null;
  }

  async setBackfill(id: string, state: BackfillState): Promise<void> {
    this.backfills.set(id, { ...state });
    if (state.done) this.frozen.delete(id);
  }

  async close(): Promise<void> {
    this.profiles.clear();
    this.audiences.clear();
    this.backfills.clear();
    this.frozen.clear();
  }

  /** A page of the frozen members of backfill `id`; the cursor is the index of the next one. */
  private scanFrozen(id: string, options: { cursor: string; count: number }): { ids: string[]; cursor: string } {
    const all = this.frozen.get(id);
    if (!all) throw new StoreError(`memory snapshot store: the frozen members of backfill ${id} are gone`);
    // A cursor this method did not make (none should reach it) reads from the start:
    // members may be sent twice, none is skipped.
    const at = Number(options.cursor);
    const from = Number.isSafeInteger(at) && at > 0 ? at : 0;
    const ids = all.slice(from, from + Math.max(1, Math.floor(options.count)));
    const next = from + ids.length;
    return { ids, cursor: next >= all.length ? '0' : String(next) };
  }

  private index(before: ProfileSnapshot | null, after: ProfileSnapshot): void {
    if (before?.memberships === after.memberships) return;
    for (const id in after.memberships) {
      if (!Object.hasOwn(after.memberships, id)) continue;
      const was = isIn(membershipOf(before, id));
      const is = isIn(membershipOf(after, id));
      if (was === is) continue;
      let set = this.audiences.get(id);
      if (!set) this.audiences.set(id, (set = new Set()));
      if (is) set.add(after.profileId);
      else set.delete(after.profileId);
    }
  }
}
