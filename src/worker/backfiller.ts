/**
 * The elected backfiller (SPEC §8, JetStream source): one worker at a time — the holder of
 * the backfill lock (backfill-lock.ts) — walks the frozen members of every newly mapped
 * audience (`walkBackfills`) and publishes one backfill item per member to the member's
 * partition subject, checkpointing after JetStream acked the page. The partition's owner
 * handles each item in stream order with the profile's live updates, fenced like any message,
 * so the pool exports each member once, after the updates published before its item and
 * before those published after, whatever the number of workers. Every worker runs this loop:
 * the others wait for the lock, and take over from the last checkpoint when its holder dies
 * (the items it published past that checkpoint are published again with the same message id,
 * which JetStream's de-duplication drops, and carry the same Idempotency-Key anyway).
 */
import { FencedError } from '../errors.js';
import type { DataflowRules } from '../domain/types.js';
import type { Logger } from '../observability/logger.js';
import type { SnapshotStore } from '../stores/types.js';
import { backfillId, walkBackfills, type BackfillProgress } from '../streams/backfill.js';
import type { BackfillItemRef } from '../streams/backfill-item.js';
import type { BackfillLock } from './backfill-lock.js';

export const BACKFILLER_DEFAULTS = {
  /** Least interval between two progress lines of one backfill in the log. */
  progressEveryMs: 2_000,
} as const;

export interface BackfillerOptions {
  store: SnapshotStore;
  dataflows: readonly DataflowRules[];
  lock: BackfillLock;
  /** Publishes a page of items; resolves once the stream acked every one. */
  publish: (items: BackfillItemRef[]) => Promise<void>;
  logger: Logger;
  /** Wait between two tries to take the lock, and after a failed walk. */
  retryMs: number;
  /** Members per page (one checkpoint per page). */
  pageSize?: number;
  /**
   * Most items published per second: a page waits until the items before it took their share
   * of time (counted from the start of this worker's turn). @default no limit
   */
  publishPerSecond?: number;
}

export interface Backfiller {
  /** Resolves once every backfill of the config is published (or the backfiller stopped). */
  readonly finished: Promise<void>;
  /** True when every backfill of the config is done (published and checkpointed). */
  published(): Promise<boolean>;
  /** Stops (a walk stops after its page in hand) and releases the lock. */
  stop(): Promise<void>;
}

/** True when every mapping of the dataflows has a done backfill. */
export async function backfillsPublished(store: SnapshotStore, dataflows: readonly DataflowRules[]): Promise<boolean> {
  for (const flow of dataflows) {
    for (const m of flow.audiences) {
      if (!(await store.getBackfill(backfillId(flow.id, m.id, m.mappingCreatedAt)))?.done) return false;
    }
  }
  return true;
}

/**
 * Starts the backfiller loop of this worker.
 *
 * @example
 * const b = startBackfiller({ store, dataflows, lock, publish, logger, retryMs: 2_500 });
 * await b.finished;  // `run --once`: before the end check
 */
export function startBackfiller(o: BackfillerOptions): Backfiller {
  let stopped = false;
  let wake: (() => void) | undefined;
  const sleep = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        wake = undefined;
        resolve();
      }
      wake = done;
    });
  const lastLine = new Map<string, number>();
  const progress = (e: BackfillProgress): void => {
    const fields = { id: e.id, dataflowId: e.dataflowId, audienceId: e.audienceId, published: e.sent, ...(e.total !== undefined && { total: e.total }) };
    if (e.phase === 'restart') {
      o.logger.warn(fields, 'backfill restart: its frozen member list was lost (store data loss); frozen again, publishing from the start');
      return;
    }
    if (e.phase === 'progress') {
      const now = Date.now();
      if (now - (lastLine.get(e.id) ?? 0) < BACKFILLER_DEFAULTS.progressEveryMs) return;
      lastLine.set(e.id, now);
    }
    o.logger.info(fields, e.phase === 'done' ? 'backfill published: every member is on the stream' : `backfill ${e.phase}`);
  };

  const loop = async (): Promise<void> => {
    let waitingFor: string | undefined;
    while (!stopped) {
      try {
        if (await backfillsPublished(o.store, o.dataflows)) return;
        const turn = await o.lock.acquire();
        if (!turn) {
          const holder = await o.lock.holder();
          if (holder && holder.owner !== waitingFor) {
            waitingFor = holder.owner;
            o.logger.info({ holder: holder.owner, token: holder.token }, 'backfill: another worker is the backfiller; waiting (it is taken over if that worker dies)');
          }
          await sleep(o.retryMs);
          continue;
        }
        o.logger.info({ lock: turn.value }, 'backfill: this worker is the backfiller');
        const pace = pacer(o.publishPerSecond, sleep);
        try {
          const finished = await walkBackfills({
            store: o.store,
            dataflows: o.dataflows,
            pageSize: o.pageSize,
            send: async (items) => {
              await pace(items.length);
              if (!stopped) await o.publish(items);
            },
            checkpoint: turn.checkpoint,
            stopped: () => stopped || !turn.holds(),
            onProgress: progress,
          });
          if (finished) return;
          if (!stopped) o.logger.warn({ lock: turn.value }, 'backfill: the backfiller lock was lost; the next holder goes on from the last checkpoint');
        } finally {
          await turn.release();
        }
      } catch (err) {
        if (stopped) return;
        if (err instanceof FencedError) o.logger.warn({ err }, 'backfill: the backfiller lock was lost; the next holder goes on from the last checkpoint');
        else o.logger.warn({ err }, 'backfill interrupted; going on from its last checkpoint');
        await sleep(o.retryMs);
      }
    }
  };
  const finished = loop();
  return {
    finished,
    published: () => backfillsPublished(o.store, o.dataflows),
    async stop() {
      stopped = true;
      wake?.();
      await finished;
    },
  };
}

/**
 * Paces pages of items at `perSecond` (none: no wait): each call waits until the items of the
 * calls before it had their share of time since the first call, then counts `n` more.
 */
function pacer(perSecond: number | undefined, sleep: (ms: number) => Promise<void>): (n: number) => Promise<void> {
  if (perSecond === undefined) return () => Promise.resolve();
  let start: number | undefined;
  let counted = 0;
  return async (n) => {
    start ??= Date.now();
    const wait = start + (counted / perSecond) * 1000 - Date.now();
    if (wait > 0) await sleep(wait);
    counted += n;
  };
}
