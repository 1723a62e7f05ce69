/**
 * The FiguresStore contract against the three stores — memory, Redis (a real redis-server on a
 * free port) and local (LMDB in a temp folder) — then what only the local store owes: figures in
 * the store's folder shared with its other parts, another process adding at the same time, and
 * expired runs and slots removed.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FIGURES_DEFAULTS, MemoryFiguresStore, openFiguresStore, type FiguresStore } from '../../src/observability/figures.js';
import { LocalFiguresStore } from '../../src/observability/figures-local.js';
import { RedisFiguresStore } from '../../src/observability/figures-redis.js';
import { openLocalEnv } from '../../src/stores/local-env.js';
import { ROOT } from '../support/cli.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
import { describeFiguresStoreContract } from './figures-contract.js';

let redis: RedisServer;
let prefixes = 0;
beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  await redis?.stop();
});

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'figures-local-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** A fixture closing every handle it opened. */
function fixture(open: () => FiguresStore): { store: FiguresStore; cleanup(): Promise<void>; reopen(): Promise<FiguresStore> } {
  const opened = [open()];
  return {
    store: opened[0],
    cleanup: async () => {
      await Promise.all(opened.map((s) => s.close()));
    },
    reopen: async () => {
      const s = open();
      opened.push(s);
      return s;
    },
  };
}

describeFiguresStoreContract('MemoryFiguresStore', async () => {
  const { store, cleanup } = fixture(() => new MemoryFiguresStore());
  return { store, cleanup };
});

describeFiguresStoreContract(
  'RedisFiguresStore',
  async () => {
    const keyPrefix = `figs${++prefixes}:`;
    return fixture(() => new RedisFiguresStore({ url: redis.url, keyPrefix, pool: 'p' }));
  },
  { durable: true },
);

describeFiguresStoreContract(
  'LocalFiguresStore',
  async () => {
    const path = join(await freshDir(), 'state');
    return fixture(() => new LocalFiguresStore({ path }));
  },
  { durable: true },
);

const T0 = Date.UTC(2026, 11, 5, 10, 0, 0);
const HOUR = 3_600_000;

describe('LocalFiguresStore (the local store)', () => {
  it('is what openFiguresStore gives for store.kind: local, in the store folder beside its other parts', async () => {
    const path = join(await freshDir(), 'state');
    const store = await openFiguresStore({ store: { kind: 'local', path }, source: { kind: 'file' } });
    expect(store).toBeInstanceOf(LocalFiguresStore);
    await store.add({ rejected: 1, flows: [{ dataflowId: 'flow-1', counts: { received: 2, exported: 1, excluded: 0, failed: 1 }, latency: {}, lastDeliveredAt: T0 }] }, T0);
    await store.close();
    // Read back through the environment itself: the named database `figures` of the store folder.
    const env = openLocalEnv(path);
    try {
      expect(env.db('figures').get('t\nflow-1')).toEqual({ received: 2, exported: 1, excluded: 0, failed: 1 });
    } finally {
      await env.release();
    }
    expect(await openFiguresStore({ store: { kind: 'memory' }, source: { kind: 'file' } })).toBeInstanceOf(MemoryFiguresStore);
  });

  it('counts exactly while another process adds to the same folder at the same time', async () => {
    const path = join(await freshDir(), 'state');
    const n = 300;
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test', 'observability', 'figures-local-worker.ts'), JSON.stringify({ path, count: n, at: T0 })], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    // Start adding once the other process has opened the store, so the two write at once.
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => c.toString().includes('ready') && resolve());
      child.on('exit', () => reject(new Error(`worker exited before ready: ${stderr}`)));
    });
    const store = new LocalFiguresStore({ path });
    let childDoneAt = -1;
    void exited.then(() => (childDoneAt = added));
    let added = 0;
    try {
      for (let i = 0; i < n; i++, added++) {
        await store.add({ rejected: 1, flows: [{ dataflowId: 'flow-1', counts: { received: 1, exported: 1, excluded: 0, failed: 0 }, latency: { 3: 1 }, lastDeliveredAt: T0 + i }] }, T0 + i);
      }
      expect(await exited, stderr).toBe(0);
      // The other process was still adding when this one had started (the writes interleaved).
      expect(childDoneAt === -1 || childDoneAt > 0).toBe(true);
      const r = await store.read(['flow-1'], T0);
      expect(r.rejected).toEqual({ run: 2 * n, total: 2 * n });
      expect(r.flows['flow-1'].total).toEqual({ received: 2 * n, exported: n, excluded: 0, failed: n });
      expect(r.flows['flow-1'].run).toEqual(r.flows['flow-1'].total);
      expect(r.flows['flow-1'].runLatency).toEqual({ 3: n, 4: n });
      expect((await store.window(['flow-1'], T0, T0 + 10_000))['flow-1']).toEqual({ exported: n, failed: n, latency: { 3: n, 4: n } });
    } finally {
      await store.close();
    }
  }, 60_000);

  it('removes runs after 8 days and slots after 2 hours, keeping the totals and the last delivery', async () => {
    const path = join(await freshDir(), 'state');
    const store = new LocalFiguresStore({ path });
    const delta = { rejected: 1, flows: [{ dataflowId: 'flow-1', counts: { received: 1, exported: 1, excluded: 0, failed: 0 }, latency: { 2: 1 }, lastDeliveredAt: T0 }] };
    try {
      await store.add(delta, T0);
      await store.add({ ...delta, flows: [{ ...delta.flows[0], lastDeliveredAt: 0 }] }, T0 + FIGURES_DEFAULTS.slotRetentionMs + 10_000);
      const env = openLocalEnv(path);
      const keys = (): string[] => [...env.db('figures').getKeys()].map((k) => k.replace(/\n/g, '|'));
      try {
        // The slot of T0 is gone; its run is kept.
        expect(keys().filter((k) => k.startsWith('s|'))).toHaveLength(1);
        expect((await store.read(['flow-1'], T0)).flows['flow-1'].run.received).toBe(1);
        await store.add(delta, T0 + FIGURES_DEFAULTS.runRetentionMs + HOUR);
        const r = await store.read(['flow-1'], T0);
        expect(r.flows['flow-1'].run.received).toBe(0);
        expect(r.rejected).toEqual({ run: 0, total: 3 });
        expect(r.flows['flow-1'].total.received).toBe(3);
        expect(r.flows['flow-1'].lastDeliveredAt).toBe(T0);
        const t0 = String(T0).padStart(15, '0');
        expect(keys().filter((k) => k.includes(t0))).toEqual([]);
        expect(keys().filter((k) => k.startsWith('r|'))).toHaveLength(2);
      } finally {
        await env.release();
      }
    } finally {
      await store.close();
    }
  });
});
