/**
 * mergeChecked: the merge the snapshot stores call. A throw of the pure merge becomes an
 * EventRejectedError (rejected, not retried for ever); a snapshot past the size limit is
 * rejected with its size and the limit; the cost of a large update stays small.
 */
import { describe, expect, it } from 'vitest';
import { mergeChecked } from '../../src/domain/merge-checked.js';
import type { ProfileSnapshot, ProfileUpdate } from '../../src/domain/types.js';
import { decodeEvent } from '../../src/domain/validate.js';
import { EventRejectedError } from '../../src/errors.js';

function rejection(fn: () => unknown): EventRejectedError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EventRejectedError);
    return err as EventRejectedError;
  }
  throw new Error('expected a rejection');
}

describe('mergeChecked: guard', () => {
  it('turns a throw of the merge (a malformed stored snapshot) into ERR_EVENT_MERGE with a one-line reason, no stack', () => {
    const broken = { profileId: 'p', attributes: {}, identityMap: { ecid: 'not a list' }, memberships: {} } as unknown as ProfileSnapshot;
    const e = rejection(() => mergeChecked(broken, { profileId: 'p', identityMap: { ecid: [{ id: '1' }] } }));
    expect(e.code).toBe('ERR_EVENT_MERGE');
    expect(e.message).toMatch(/^event: could not be merged into the profile's snapshot \(TypeError: .+\)$/);
    expect(e.message).not.toContain('\n');
    expect(e.message).not.toMatch(/\bat .+:\d+:\d+/);
  });

  it('returns the merged snapshot and its JSON when a limit is given, no JSON without one', () => {
    const update: ProfileUpdate = { profileId: 'p', attributes: { a: 1 } };
    const checked = mergeChecked(null, update, { maxSnapshotBytes: 1_000 });
    expect(checked.after).toMatchObject({ profileId: 'p', attributes: { a: 1 }, identityMap: {}, memberships: {} });
    expect(checked.json).toBe(JSON.stringify(checked.after));
    expect(mergeChecked(null, update).json).toBeUndefined();
  });
});

describe('mergeChecked: snapshot size limit (worker.maxSnapshotBytes)', () => {
  // The merged snapshot of `{ s: '' }` as the stores write it (with its record of the last update).
  const base = JSON.stringify(mergeChecked(null, { profileId: 'p', attributes: { s: '' } }).after).length;

  it('accepts a snapshot of exactly the limit and rejects one byte more, naming size and limit', () => {
    const limit = 2_000;
    const fits = 'x'.repeat(limit - base);
    expect(mergeChecked(null, { profileId: 'p', attributes: { s: fits } }, { maxSnapshotBytes: limit }).json).toHaveLength(limit);
    const e = rejection(() => mergeChecked(null, { profileId: 'p', attributes: { s: `${fits}x` } }, { maxSnapshotBytes: limit }));
    expect(e.code).toBe('ERR_SNAPSHOT_TOO_LARGE');
    expect(e.message).toBe(`event: the profile's snapshot would be ${limit + 1} bytes, over the limit of ${limit} bytes (worker.maxSnapshotBytes)`);
  });

  it('counts UTF-8 bytes, not UTF-16 units', () => {
    const limit = 2_000;
    const e = rejection(() => mergeChecked(null, { profileId: 'p', attributes: { s: 'é'.repeat(1_000) } }, { maxSnapshotBytes: limit }));
    expect(e.message).toContain(`would be ${base + 2_000} bytes`);
  });

  it('the growth of one profile stops at the limit: each update is measured on the merged result', () => {
    let snapshot: ProfileSnapshot | null = null;
    let accepted = 0;
    for (let i = 0; i < 50; i++) {
      try {
        snapshot = mergeChecked(snapshot, { profileId: 'p', attributes: { [`k${i}`]: 'v'.repeat(100) } }, { maxSnapshotBytes: 2_048 }).after;
        accepted++;
      } catch (err) {
        expect((err as EventRejectedError).code).toBe('ERR_SNAPSHOT_TOO_LARGE');
      }
    }
    expect(accepted).toBeGreaterThan(10);
    expect(accepted).toBeLessThan(20);
    expect(Buffer.byteLength(JSON.stringify(snapshot))).toBeLessThanOrEqual(2_048);
  });

  it('bounds the cost: updates of 60,000 attributes are rejected once the profile reaches 1 MiB, each in the time of a few JSON.parse of the event', () => {
    const events = Array.from({ length: 5 }, (_, e) => {
      const attributes: Record<string, number> = {};
      for (let i = 0; i < 60_000; i++) attributes[`a${e}_${i}`] = i;
      return JSON.stringify({ profileId: 'p', attributes });
    });
    expect(Buffer.byteLength(events[4])).toBeLessThan(1 << 20); // each event passes maxEventBytes
    let parseMs = Infinity;
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      JSON.parse(events[0]);
      parseMs = Math.min(parseMs, performance.now() - started);
    }
    let snapshot: ProfileSnapshot | null = null;
    let rejected = 0;
    let slowest = 0;
    for (const text of events) {
      const update = decodeEvent(text, { maxBytes: 1 << 20 });
      const started = performance.now();
      try {
        snapshot = mergeChecked(snapshot, update, { maxSnapshotBytes: 1 << 20 }).after;
      } catch (err) {
        expect((err as EventRejectedError).code).toBe('ERR_SNAPSHOT_TOO_LARGE');
        rejected++;
      }
      slowest = Math.max(slowest, performance.now() - started);
    }
    // The first (≈ 0.9 MB) fits; every later one would pass 1 MiB and is rejected.
    expect(rejected).toBe(4);
    expect(Object.keys(snapshot?.attributes ?? {})).toHaveLength(60_000);
    console.log(`60k-attribute updates: JSON.parse of one event ${parseMs.toFixed(1)} ms; slowest merge + size check ${slowest.toFixed(1)} ms`);
    // The cost is bounded by the limit (the profile stops growing), not by its history; its
    // figure is printed, not asserted: timings belong in the benchmark, not in unit tests.
  });
});
