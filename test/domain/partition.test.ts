import { describe, expect, it } from 'vitest';
import { fnv1a32, partitionOf, partitionSubject } from '../../src/domain/partition.js';

describe('partition of a profile', () => {
  it('is FNV-1a 32 of the UTF-8 bytes (published reference vectors)', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
  });
  it('hashes UTF-8 bytes, not UTF-16 code units', () => {
    // 'é' is two bytes in UTF-8: c3 a9
    let h = 0x811c9dc5;
    for (const b of [0xc3, 0xa9]) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    expect(fnv1a32('é')).toBe(h);
  });
  it('is stable, in range, and spreads ids over the partitions', () => {
    const counts = new Array<number>(16).fill(0);
    for (let i = 0; i < 16_000; i++) counts[partitionOf(`p-${i}`, 16)]++;
    for (const c of counts) expect(c).toBeGreaterThan(800);
    expect(partitionOf('p-123', 16)).toBe(partitionOf('p-123', 16));
    expect(partitionSubject('profiles.updates', 'p-123', 16)).toBe(`profiles.updates.${fnv1a32('p-123') % 16}`);
  });
});
