/**
 * mergeChecked: the merge the snapshot stores call. A throw of the pure merge becomes an
 * EventRejectedError (rejected, not retried for ever); a snapshot past the size limit is
 * rejected with its size and the limit; the cost of a large update stays small.
 */
import { describe, expect, it } from 'vitest';
import { mergeChecked, updateBytesBound, type MergeChecked } from '../../src/domain/merge-checked.js';
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

describe('mergeChecked: the size bound (beforeBytes + updateBytes, the memory store)', () => {
  /** Exact UTF-8 size of a snapshot's JSON without its `last` record. */
  const coreSize = (s: ProfileSnapshot): number => Buffer.byteLength(JSON.stringify({ ...s, last: undefined }));

  it('skips the JSON while the bound proves the snapshot fits, and its coreBytes is never below the real size', () => {
    // Texts whose JSON grows most when parsed and written again: numbers in exponent form,
    // escapes, non-ASCII and control characters, identities and memberships.
    const texts = [
      '{"profileId":"p","attributes":{"n":9e15,"m":[1e15,2e-6,-9e15],"o":{"p":{"q":1E+15}}}}',
      '{"profileId":"p","attributes":{"s":"\\u0001\\u00e9é😀\\\\\\"","t":"\\ud83d\\ude00"}}',
      '{"profileId":"p","identityMap":{"ecid":[{"id":"1","primary":true}],"email":[{"id":"a@b"}]},"segmentMembership":{"ups":{"aud-1":{"status":"realized","lastQualificationTime":"2026-01-01T00:00:00Z"}}}}',
      '{"profileId":"p","attributes":{"n":null,"o":{"p":{"q":9e15,"r":"x"}}},"removedIdentities":{"email":["a@b"]}}',
      '  {  "profileId" : "p" , "attributes" : { "w" : [ 1e1 , 2e2 ] , "x":{} } }  ',
      // 3.4 × longer written than read: the bound's factor 4 is needed.
      `{"profileId":"p","attributes":{"w":[${Array(300).fill('9e15').join(',')}]}}`,
    ];
    let before: ProfileSnapshot | null = null;
    let bytes: number | undefined;
    for (let round = 0; round < 3; round++) {
      for (const text of texts) {
        const update = decodeEvent(text, { maxBytes: 1 << 20 });
        const checked = mergeChecked(before, update, { maxSnapshotBytes: 1 << 20, beforeBytes: bytes, updateBytes: updateBytesBound(text.length) });
        expect(checked.json).toBeUndefined();
        expect(checked.coreBytes).toBeGreaterThanOrEqual(coreSize(checked.after));
        before = checked.after;
        bytes = checked.coreBytes;
      }
    }
    // Without a bound of the update (or of the snapshot before it), the result is measured.
    const update = decodeEvent(texts[0], { maxBytes: 1 << 20 });
    expect(mergeChecked(before, update, { maxSnapshotBytes: 1 << 20, beforeBytes: bytes }).json).toBeDefined();
    expect(mergeChecked(before, update, { maxSnapshotBytes: 1 << 20, updateBytes: 400 }).json).toBeDefined();
  });

  it('measures exactly once the bound reaches the limit: the same updates are accepted and refused as without a bound', () => {
    const run = (withBound: boolean): { accepted: number; measured: number; size: number } => {
      let snapshot: ProfileSnapshot | null = null;
      let bytes: number | undefined;
      let accepted = 0;
      let measured = 0;
      for (let i = 0; i < 60; i++) {
        const text = JSON.stringify({ profileId: 'p', attributes: { [`k${i % 25}`]: 'v'.repeat(40 + i), n: 9e15 } });
        const update = decodeEvent(text, { maxBytes: 1 << 20 });
        try {
          const checked: MergeChecked = withBound
            ? mergeChecked(snapshot, update, { maxSnapshotBytes: 2_048, beforeBytes: bytes, updateBytes: updateBytesBound(text.length) })
            : mergeChecked(snapshot, update, { maxSnapshotBytes: 2_048 });
          if (checked.json !== undefined) measured++;
          snapshot = checked.after;
          bytes = checked.coreBytes;
          accepted++;
        } catch (err) {
          expect((err as EventRejectedError).code).toBe('ERR_SNAPSHOT_TOO_LARGE');
        }
      }
      return { accepted, measured, size: Buffer.byteLength(JSON.stringify(snapshot)) };
    };
    const exact = run(false);
    const bounded = run(true);
    expect(bounded.accepted).toBe(exact.accepted);
    expect(bounded.size).toBe(exact.size);
    expect(bounded.size).toBeLessThanOrEqual(2_048);
    expect(exact.accepted).toBeLessThan(60);
    // The bound spared some measurements (the first updates of the profile), not all.
    expect(bounded.measured).toBeLessThan(exact.measured);
    expect(bounded.measured).toBeGreaterThan(0);
  });
});
