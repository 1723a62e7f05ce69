/**
 * How the local snapshot store keeps a profile (`profiles`) and the first application of a
 * message not yet confirmed (`replays`) in LMDB: the records and their text encoding.
 */
import type { ProfileSnapshot } from '../domain/types.js';

/** A profile's record: its snapshot, highest watermark, and the keys of its latest applications. */
export interface Entry {
  snapshot: ProfileSnapshot;
  watermark?: number;
  /**
   * Keys of the latest applications, oldest first (at most MAX_PENDING_PER_PROFILE): those
   * not confirmed yet have a replay record in `replays`; confirmed ones leave this list lazily.
   */
  keys?: string[];
  /**
   * `JSON.stringify(snapshot)` when known, or a function that cuts it out of the stored text
   * (in memory only: the text is written as is, never made twice).
   */
  json?: string | (() => string);
}

/** The first application of a message not yet confirmed (`replays`, by profile and key). */
export interface Replay {
  before: ProfileSnapshot | null;
  after: ProfileSnapshot;
  /** The JSON texts of `before` and `after` when known (in memory only). */
  beforeJson?: Entry['json'];
  afterJson?: string;
}

/**
 * How `profiles` and `replays` are stored: one JSON array made by joining JSON texts, so the
 * snapshot's JSON, made once by the size check, is written as is and read with one
 * `JSON.parse`. Entry: `[watermark,keys,snapshot]`; replay: `[before,after]`. A value that is
 * a JSON object is a record as earlier versions wrote it (`{ snapshot, … }`, `{ before, after }`).
 * `JSON.parse` keeps a `__proto__` key of customer data a plain own key, as before.
 */
export interface Codec<V> {
  encode(value: V): string;
  decode(raw: string): V;
}

const textOf = (json: Entry['json'], value: ProfileSnapshot | null): string =>
  json === undefined ? JSON.stringify(value) : typeof json === 'string' ? json : json();

export const entryCodec: Codec<Entry> = {
  encode: (e) => `[${JSON.stringify(e.watermark ?? null)},${JSON.stringify(e.keys ?? [])},${textOf(e.json, e.snapshot)}]`,
  decode(raw) {
    if (raw.charCodeAt(0) !== 0x5b /* [ */) return JSON.parse(raw) as Entry;
    const [watermark, keys, snapshot] = JSON.parse(raw) as [number | null, string[], ProfileSnapshot];
    // The head is what `encode` wrote (JSON.stringify gives one text for a number or a
    // string array parsed from its own output): the snapshot's text is the rest, cut when needed.
    const json = (): string => raw.slice(`[${JSON.stringify(watermark)},${JSON.stringify(keys)},`.length, -1);
    const entry: Entry = { snapshot, keys, json };
    if (watermark !== null) entry.watermark = watermark;
    return entry;
  },
};

export const replayCodec: Codec<Replay> = {
  encode: (r) => `[${textOf(r.beforeJson, r.before)},${r.afterJson ?? JSON.stringify(r.after)}]`,
  decode(raw) {
    if (raw.charCodeAt(0) !== 0x5b /* [ */) return JSON.parse(raw) as Replay;
    const [before, after] = JSON.parse(raw) as [ProfileSnapshot | null, ProfileSnapshot];
    return { before, after };
  },
};
