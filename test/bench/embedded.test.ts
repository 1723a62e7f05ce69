/**
 * The embedded bench modes' inputs (bench/events.ts, bench/config.ts): the backlog of
 * single-update profiles exports exactly once per update, and the embedded worker config is
 * one the product accepts (memory) or passes the local store through as asked.
 */
import { describe, expect, it } from 'vitest';
import { embeddedConfig } from '../../bench/config.js';
import { EventGenerator } from '../../bench/events.js';
import { resolveConfig } from '../../src/config/load.js';

describe('EventGenerator({ sequential: true })', () => {
  it('gives every profile exactly one update, its first: all qualify and export once', () => {
    const n = 500;
    const gen = new EventGenerator({ profiles: n, prefix: 't', sequential: true });
    const ids = new Set<string>();
    for (let i = 0; i < n; i++) {
      const g = gen.next();
      expect(g.kind).toBe('qualify');
      expect(g.exports).toBe(true);
      ids.add(g.event.profileId);
    }
    expect(ids.size).toBe(n);
    expect(gen.exporting).toBe(n);
  });

  it('without it, profiles repeat (the drain modes’ mix)', () => {
    const gen = new EventGenerator({ profiles: 500, prefix: 't' });
    const ids = new Set(Array.from({ length: 500 }, () => gen.next().event.profileId));
    expect(ids.size).toBeLessThan(500);
  });
});

describe('embeddedConfig', () => {
  const base = { file: '/tmp/e.jsonl', dataDir: '/tmp/e-data', receiverPort: 1234, flows: 1, rateLimit: 10_000, connections: 64, maxInFlight: 512 };

  it('memory: a config the product accepts (file source, memory store, failed requests in files)', () => {
    const config = resolveConfig(embeddedConfig({ ...base, store: 'memory' }));
    expect(config.source).toMatchObject({ kind: 'file', path: '/tmp/e.jsonl' });
    expect(config.store).toEqual({ kind: 'memory' });
    expect(config.failedRequests).toMatchObject({ kind: 'file', path: '/tmp/e-data/failed.jsonl' });
    expect(config.dataflows.map((d) => [d.id, d.rateLimit])).toEqual([['flow-1', 10_000]]);
    expect(config.destinations[0]).toMatchObject({ url: 'http://127.0.0.1:1234/export', connections: 64 });
  });

  it('local: the durable store and local failed requests, passed through', () => {
    const raw = embeddedConfig({ ...base, store: 'local' }) as { store: unknown; failedRequests: unknown };
    expect(raw.store).toEqual({ kind: 'local', path: '/tmp/e-data/store' });
    expect(raw.failedRequests).toEqual({ kind: 'local' });
  });
});
