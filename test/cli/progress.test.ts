import { describe, expect, it } from 'vitest';
import { TestScheduler } from 'rxjs/testing';
import { formatProgress, startProgress, wantsProgress } from '../../src/cli/progress.js';

describe('progress reporter', () => {
  it('writes a line every 2 s of (virtual) time with done, total, rate and the counts, until stopped', () => {
    const ts = new TestScheduler((a, b) => expect(a).toEqual(b));
    const lines: Array<{ at: number; line: string }> = [];
    let done = 0;
    ts.run(() => {
      // 1,000 items per second of virtual time
      for (let t = 1_000; t <= 7_000; t += 1_000) ts.schedule(() => (done += 1_000), t - 1);
      const p = startProgress({
        label: 'publish',
        read: () => ({ done, total: 10_000, detail: `published ${done}, duplicates 0` }),
        write: (line) => lines.push({ at: ts.now(), line }),
        scheduler: ts,
      });
      ts.schedule(() => p.stop(), 7_000);
      ts.schedule(() => p.stop(), 7_001); // idempotent
    });
    expect(lines.map((l) => l.at)).toEqual([2_000, 4_000, 6_000]);
    expect(lines[0].line).toBe('publish: 2,000 of 10,000 (20%), 1,000/s, 2 s: published 2000, duplicates 0');
    expect(lines[2].line).toBe('publish: 6,000 of 10,000 (60%), 1,000/s, 6 s: published 6000, duplicates 0');
  });

  it('writes nothing when stopped before the first tick', () => {
    const ts = new TestScheduler((a, b) => expect(a).toEqual(b));
    const lines: string[] = [];
    ts.run(() => {
      const p = startProgress({ label: 'x', read: () => ({ done: 1 }), write: (l) => lines.push(l), scheduler: ts });
      ts.schedule(() => p.stop(), 1_999);
    });
    expect(lines).toEqual([]);
  });

  it('is wanted with --progress or on a terminal only', () => {
    expect(wantsProgress(undefined, { isTTY: false })).toBe(false);
    expect(wantsProgress(undefined, {})).toBe(false);
    expect(wantsProgress(true, { isTTY: false })).toBe(true);
    expect(wantsProgress(undefined, { isTTY: true })).toBe(true);
  });

  it('formats a line without a total', () => {
    expect(formatProgress('failed replay', { done: 12 }, 3.4, 2_400)).toBe('failed replay: 12, 3/s, 2 s');
  });
});
