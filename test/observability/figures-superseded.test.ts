/**
 * Superseded exports in the dataflow figures (issue 13, SPEC §6): counted by the worker,
 * flushed to each figures store (memory, Redis on a real redis-server, local LMDB), and shown
 * per dataflow by `status` (table and `--json`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatStatus } from '../../src/cli/status.js';
import { figuresReport, MemoryFiguresStore, runStartOf, startFiguresFlush, type FiguresStore } from '../../src/observability/figures.js';
import { LocalFiguresStore } from '../../src/observability/figures-local.js';
import { RedisFiguresStore } from '../../src/observability/figures-redis.js';
import { Metrics } from '../../src/observability/metrics.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

let redis: RedisServer;
let dir: string;
beforeAll(async () => {
  redis = await startRedisServer();
  dir = await mkdtemp(join(tmpdir(), 'figures-superseded-'));
});
afterAll(async () => {
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

const kinds: Array<[string, () => FiguresStore]> = [
  ['memory', () => new MemoryFiguresStore()],
  ['redis', () => new RedisFiguresStore({ url: redis.url, keyPrefix: 'sup:', pool: 'p' })],
  ['local', () => new LocalFiguresStore({ path: dir })],
];

describe.each(kinds)('%s figures store', (_kind, open) => {
  it('superseded exports reach the store and the status report, per dataflow', async () => {
    const store = open();
    try {
      const metrics = new Metrics();
      const T = Date.UTC(2026, 11, 6, 3, 10);
      const flush = startFiguresFlush({ metrics, store, now: () => T, intervalMs: 60_000 });
      metrics.exportSuperseded('flow-a');
      metrics.exportSuperseded('flow-a');
      metrics.exportSuperseded('flow-b');
      await flush.flush();
      // A queued export replaced, then found delivered after all (-1), in a later flush.
      metrics.exportSuperseded('flow-a', -1);
      metrics.exportSuperseded('flow-a', 3);
      await flush.close();
      const report = figuresReport(await store.read(['flow-a', 'flow-b', 'flow-c'], runStartOf(T)), {
        dataflowIds: ['flow-a', 'flow-b', 'flow-c'],
        runStart: runStartOf(T),
        now: T,
      });
      expect(report.dataflows.map((d) => [d.id, d.superseded])).toEqual([
        ['flow-a', { run: 4, total: 4 }],
        ['flow-b', { run: 1, total: 1 }],
        ['flow-c', { run: 0, total: 0 }],
      ]);
      const table = formatStatus(report).split('\n');
      expect(table.find((l) => l.startsWith('dataflow'))).toMatch(/failed\s+superseded/);
      expect(table.find((l) => l.startsWith('flow-a'))).toMatch(/\b0\s+4\s+-/);
    } finally {
      await store.close();
    }
  });
});
