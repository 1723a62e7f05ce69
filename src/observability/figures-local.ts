/**
 * The dataflow figures of the embedded default (`store.kind: local`), in the local store's LMDB
 * environment (src/stores/local-env.ts), named database `figures`. A running `run` adds its
 * deltas (one LMDB write transaction per flush, about once a second, not per message); any other
 * process on the host (`status`) opens the same folder and reads them, readers never blocked.
 * The figures are durable: a later `run` on the same store adds to the totals.
 *
 * Keys (times zero-padded to 15 digits, so they sort as numbers):
 * - `t\n<dataflowId>` — counts since the store began;
 * - `r\n<runStart>\n<dataflowId>` — counts and latency buckets of a one-hour run (kept 8 days);
 * - `s\n<slotStart>\n<dataflowId>` — exported, failed and latency buckets of a 10 s slot
 *   (kept 2 h; alert windows);
 * - `l\n<dataflowId>` — the last delivery time (ms; the greatest wins);
 * - `x\ntotal`, `x\n<runStart>` — rejected input events in total and per run.
 *
 * Expired runs and slots are removed in the flush's own transaction (a short range scan).
 */
import type { Database } from 'lmdb';
import { openLocalEnv, type LocalEnv } from '../stores/local-env.js';
import {
  FIGURES_DEFAULTS,
  addCounts,
  runStartOf,
  slotOf,
  zeroCounts,
  type FigureCounts,
  type FiguresDelta,
  type FiguresStore,
  type StoredFigures,
  type WindowFigures,
} from './figures.js';

const SEP = '\n';
const pad = (t: number): string => String(Math.max(0, Math.floor(t))).padStart(15, '0');
const totalKey = (id: string): string => `t${SEP}${id}`;
const runKey = (run: number, id: string): string => `r${SEP}${pad(run)}${SEP}${id}`;
const slotPrefix = (slot: number): string => `s${SEP}${pad(slot)}${SEP}`;
const lastKey = (id: string): string => `l${SEP}${id}`;
const REJECTED_TOTAL = `x${SEP}total`;
const rejectedRunKey = (run: number): string => `x${SEP}${pad(run)}`;

interface RunRecord {
  counts: FigureCounts;
  latency: Record<number, number>;
}

function addBuckets(into: Record<number, number>, add: Record<number, number>): void {
  for (const [b, n] of Object.entries(add)) into[Number(b)] = (into[Number(b)] ?? 0) + n;
}

/** A stored value as a number (0 when missing or not a number). */
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

export interface LocalFiguresStoreOptions {
  /** The local store's folder (`store.path`, resolved). */
  path: string;
}

/**
 * The figures of one host, in the local store.
 *
 * @example
 * const figures = new LocalFiguresStore({ path: config.store.path });
 * await figures.add(delta, Date.now());
 * await figures.close();
 */
export class LocalFiguresStore implements FiguresStore {
  private readonly env: LocalEnv;
  private readonly db: Database<unknown, string>;

  constructor(options: LocalFiguresStoreOptions) {
    this.env = openLocalEnv(options.path);
    this.db = this.env.db('figures');
  }

  async add(delta: FiguresDelta, at: number): Promise<void> {
    const run = runStartOf(at);
    const slot = slotOf(at);
    const db = this.db;
    // One synchronous write transaction: LMDB has one writer at a time across processes, so
    // the read-modify-write below is atomic, and the flush is all there or not at all. (With
    // lmdb-js's asynchronous `transaction()`, one of 600 adds of two processes writing at
    // once was lost in about one run of four; a flush is about once a second, so blocking
    // for one short transaction costs nothing that matters.)
    this.env.root.transactionSync(() => {
      if (delta.rejected !== 0) {
        db.put(REJECTED_TOTAL, num(db.get(REJECTED_TOTAL)) + delta.rejected);
        db.put(rejectedRunKey(run), num(db.get(rejectedRunKey(run))) + delta.rejected);
      }
      for (const f of delta.flows) {
        const total = { ...zeroCounts(), ...(db.get(totalKey(f.dataflowId)) as FigureCounts | undefined) };
        addCounts(total, f.counts);
        db.put(totalKey(f.dataflowId), total);

        const rk = runKey(run, f.dataflowId);
        const stored = db.get(rk) as RunRecord | undefined;
        const r: RunRecord = { counts: { ...zeroCounts(), ...stored?.counts }, latency: { ...stored?.latency } };
        addCounts(r.counts, f.counts);
        addBuckets(r.latency, f.latency);
        db.put(rk, r);

        if (f.counts.exported !== 0 || f.counts.failed !== 0 || Object.keys(f.latency).length > 0) {
          const sk = slotPrefix(slot) + f.dataflowId;
          const s = { exported: 0, failed: 0, latency: {}, ...(db.get(sk) as WindowFigures | undefined) };
          s.exported += f.counts.exported;
          s.failed += f.counts.failed;
          s.latency = { ...s.latency };
          addBuckets(s.latency, f.latency);
          db.put(sk, s);
        }

        if (f.lastDeliveredAt > num(db.get(lastKey(f.dataflowId)))) db.put(lastKey(f.dataflowId), f.lastDeliveredAt);
      }
      this.expire(at);
    });
  }

  /** Removes slots and runs past their retention (inside the caller's transaction). */
  private expire(at: number): void {
    const slotsBefore = slotOf(at - FIGURES_DEFAULTS.slotRetentionMs);
    const runsBefore = runStartOf(at - FIGURES_DEFAULTS.runRetentionMs);
    const ranges: Array<[string, string]> = [
      [`s${SEP}`, `s${SEP}${pad(slotsBefore)}`],
      [`r${SEP}`, `r${SEP}${pad(runsBefore)}`],
      [`x${SEP}0`, `x${SEP}${pad(runsBefore)}`],
    ];
    for (const [start, end] of ranges) {
      for (const key of [...this.db.getKeys({ start, end })]) this.db.remove(key);
    }
  }

  async read(dataflowIds: readonly string[], runStart: number): Promise<StoredFigures> {
    const db = this.db;
    const flows: StoredFigures['flows'] = {};
    for (const id of dataflowIds) {
      const r = db.get(runKey(runStart, id)) as RunRecord | undefined;
      const last = num(db.get(lastKey(id)));
      flows[id] = {
        run: { ...zeroCounts(), ...r?.counts },
        total: { ...zeroCounts(), ...(db.get(totalKey(id)) as FigureCounts | undefined) },
        runLatency: { ...r?.latency },
        lastDeliveredAt: last > 0 ? last : undefined,
      };
    }
    return { rejected: { run: num(db.get(rejectedRunKey(runStart))), total: num(db.get(REJECTED_TOTAL)) }, flows };
  }

  async window(dataflowIds: readonly string[], from: number, to: number): Promise<Record<string, WindowFigures>> {
    const out: Record<string, WindowFigures> = {};
    for (const id of dataflowIds) out[id] = { exported: 0, failed: 0, latency: {} };
    for (const { key, value } of this.db.getRange({ start: slotPrefix(slotOf(from)), end: slotPrefix(Math.max(slotOf(from), to)) })) {
      const id = key.slice(slotPrefix(0).length);
      const w = out[id];
      if (!w) continue;
      const s = value as WindowFigures;
      w.exported += num(s.exported);
      w.failed += num(s.failed);
      addBuckets(w.latency, s.latency ?? {});
    }
    return out;
  }

  close(): Promise<void> {
    return this.env.release();
  }
}
