/**
 * Backfill (SPEC §8): when an audience becomes mapped to a dataflow, every profile already
 * *in* it is exported to that dataflow once, without waiting for its next update.
 *
 * "Already in it" is the audience when the backfill begins: its members are frozen then
 * (`SnapshotStore.beginBackfill`) and the backfill reads that copy. A profile entering later
 * is exported by its own update only, never by the backfill too; one leaving later is still
 * read, and skipped by the pipeline, which exports a backfill item only while the profile is
 * in the audience.
 */
import { Observable } from 'rxjs';
import type { DataflowRules } from '../domain/types.js';
import type { Envelope } from './envelope.js';
import type { SnapshotStore } from '../stores/types.js';
import type { SourceMessage } from './types.js';
import type { BackfillState } from '../stores/types.js';
import { backfillItemKey, type BackfillItemRef } from './backfill-item.js';

export const BACKFILL_DEFAULTS = {
  /** Members read (and sent before the next page is read) per page. */
  pageSize: 500,
  /** Delay before an item whose processing failed is tried again. */
  retryDelayMs: 1_000,
} as const;

export interface BackfillOptions {
  store: SnapshotStore;
  dataflows: readonly DataflowRules[];
  /** @default 500 */
  pageSize?: number;
  /**
   * Called when a backfill starts, resumes or finishes (for logs). `restart`: it had started,
   * but its frozen members were gone (the store lost data); they were frozen again from the
   * audience as it is now and the scan starts over, so profiles sent before may be sent again.
   */
  onProgress?: (e: BackfillProgress) => void;
}

/** A step of a backfill, for logs and `pool status`. */
export interface BackfillProgress {
  id: string;
  dataflowId: string;
  audienceId: string;
  /** `progress`: a page was handed over and checkpointed. */
  phase: 'start' | 'resume' | 'restart' | 'progress' | 'done';
  /** Members handed over so far. */
  sent: number;
  /** Members frozen when it began, when the store tells. */
  total?: number;
}

/**
 * The id of one backfill: a dataflow, an audience, and the mapping's creation time (an
 * audience unmapped and mapped again later is a new mapping, backfilled again).
 */
export function backfillId(dataflowId: string, audienceId: string, mappingCreatedAt?: number): string {
  return `${dataflowId}|${audienceId}|${mappingCreatedAt ?? 0}`;
}

/**
 * Freezes the members of every newly mapped audience (`SnapshotStore.beginBackfill`) at once,
 * before any live update is applied, so "already in the audience" means "in it when the worker
 * started": a profile entering afterwards is exported by its own update only, never by the
 * backfill as well (with a different Idempotency-Key). `backfillSource` then finds them begun
 * and reads the frozen copies. Resolves with what was begun (done ones left out).
 *
 * @example
 * await beginBackfills({ store, dataflows });   // then subscribe the source and backfillSource
 */
export async function beginBackfills(options: Pick<BackfillOptions, 'store' | 'dataflows'>): Promise<Array<{ id: string; dataflowId: string; audienceId: string; phase: 'start' | 'resume' | 'restart' }>> {
  const begun: Array<{ id: string; dataflowId: string; audienceId: string; phase: 'start' | 'resume' | 'restart' }> = [];
  for (const flow of options.dataflows) {
    for (const mapping of flow.audiences) {
      const id = backfillId(flow.id, mapping.id, mapping.mappingCreatedAt);
      if ((await options.store.getBackfill(id))?.done) continue;
      const { state, phase } = await options.store.beginBackfill(id, mapping.id);
      if (!state.done) begun.push({ id, dataflowId: flow.id, audienceId: mapping.id, phase });
    }
  }
  return begun;
}

/**
 * What walks the backfills: the store, the dataflows, how a page of items is handed over and
 * how progress is recorded. One walk for every way a backfill runs: the in-process source of
 * the embedded default (`backfillSource`) and the elected backfiller that publishes to the
 * stream (worker/backfiller.ts).
 */
export interface BackfillWalkOptions extends BackfillOptions {
  /**
   * Hands a page of items over; resolves once every one of them is safe (published to the
   * stream and acked by it, or processed and acked by the chain). Rejects to stop the walk.
   */
  send: (items: BackfillItemRef[]) => Promise<void>;
  /** Records a checkpoint (rejects with `FencedError` when this walker lost its turn). @default store.setBackfill */
  checkpoint?: (id: string, state: BackfillState) => Promise<void>;
  /** Checked between pages: true ends the walk (resolves `false`). */
  stopped?: () => boolean;
}

/**
 * Walks every backfill of the dataflows' mappings that is not done: begins it (freezing its
 * members if no one did), reads its frozen members page by page from its checkpoint, hands
 * each page over (`send`) and checkpoints after it. A walk cut short (a crash, a lost turn)
 * resumes from the last checkpoint: the members of the page in hand are sent again (with the
 * same item keys). Resolves `true` when every backfill is done, `false` when stopped.
 */
export async function walkBackfills(options: BackfillWalkOptions): Promise<boolean> {
  const { store, dataflows, send } = options;
  const pageSize = options.pageSize ?? BACKFILL_DEFAULTS.pageSize;
  const checkpoint = options.checkpoint ?? ((id: string, state: BackfillState) => store.setBackfill(id, state));
  const stopped = options.stopped ?? (() => false);
  for (const flow of dataflows) {
    for (const mapping of flow.audiences) {
      const id = backfillId(flow.id, mapping.id, mapping.mappingCreatedAt);
      // A plain read first: at every start most backfills are done, and this skips them
      // without running the store's freeze step.
      if ((await store.getBackfill(id))?.done) continue;
      if (stopped()) return false;
      const { state, phase } = await store.beginBackfill(id, mapping.id);
      if (state.done) continue; // another worker finished it meanwhile
      let cursor = state.cursor;
      let sent = state.sent;
      let total = state.total;
      const at = { id, dataflowId: flow.id, audienceId: mapping.id };
      options.onProgress?.({ ...at, phase, sent, ...(total !== undefined && { total }) });
      do {
        const page = await store.scanMembers(mapping.id, { cursor, count: pageSize, frozenAs: id });
        if (stopped()) return false;
        await send(page.ids.map((profileId) => ({ ...at, profileId })));
        if (stopped()) return false;
        cursor = page.cursor;
        sent += page.ids.length;
        if (page.total !== undefined) total = page.total;
        await checkpoint(id, { done: cursor === '0', cursor, sent, ...(total !== undefined && { total }) });
        options.onProgress?.({ ...at, phase: cursor === '0' ? 'done' : 'progress', sent, ...(total !== undefined && { total }) });
      } while (cursor !== '0');
    }
  }
  return true;
}

/**
 * The embedded default's backfill (file source; there the "stream" is this process): emits
 * one backfill envelope per member of each newly mapped audience as it was when its backfill
 * began (frozen then), page by page, through `walkBackfills`. A page is checkpointed once
 * every item of it is acked, so a backfill cut short by a crash resumes from its last page
 * over the same copy; a finished one is marked done (which drops the copy) and never repeats.
 * Items go through the same per-profile gate as live updates, so order and rate limits
 * hold. Completes when every backfill is done.
 *
 * @example
 * merge(live$, backfillSource({ store, dataflows: config.dataflows })).pipe(…)
 */
export function backfillSource(options: BackfillOptions): Observable<Envelope> {
  return new Observable<Envelope>((subscriber) => {
    const timers = new Set<NodeJS.Timeout>();
    let seq = 0;

    /** Emits a page of items and resolves when all of them are acked. */
    const sendPage = (items: BackfillItemRef[]): Promise<void> =>
      new Promise<void>((resolve) => {
        let left = items.length;
        if (left === 0) return resolve();
        for (const item of items) {
          let settled = false;
          const msg: SourceMessage = {
            data: '',
            key: backfillItemKey(item),
            seq: ++seq,
            receivedAt: Date.now(),
            ack: () => {
              if (settled) return;
              settled = true;
              if (--left === 0) resolve();
            },
            working: () => {},
            nak: (delayMs = BACKFILL_DEFAULTS.retryDelayMs) => {
              if (settled) return;
              const t = setTimeout(() => {
                timers.delete(t);
                if (!subscriber.closed) subscriber.next(envelope);
              }, delayMs);
              timers.add(t);
            },
          };
          const envelope: Envelope = { msg, update: { profileId: item.profileId }, backfill: { dataflowId: item.dataflowId, audienceId: item.audienceId } };
          if (subscriber.closed) return;
          subscriber.next(envelope);
        }
      });

    walkBackfills({ ...options, send: sendPage, stopped: () => subscriber.closed }).then(
      (finished) => {
        if (finished) subscriber.complete();
      },
      (err: unknown) => subscriber.error(err),
    );
    return () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
    };
  });
}
