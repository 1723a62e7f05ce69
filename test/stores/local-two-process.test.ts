/**
 * Read-modify-writes of the local store from two processes at once lose no update (issue 12:
 * `failed replay`, `failed list`, `status` beside `run`): the active alerts (a transition is
 * claimed once), the put-order counter of failed requests (no two records share a number), and
 * the retry queue's compare-and-replace (the newest export of a pair stays, its schedule entry
 * with it). Each case starts both processes' writes at the same moment (a `go` file both wait
 * for), whatever the machine's speed.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openLocalEnv } from '../../src/stores/local-env.js';
import { LocalRetryQueue } from '../../src/stores/local-retry-queue.js';
import { ROOT } from '../support/cli.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hd-two-process-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the two workers of `role` on one store, started together; their JSON answers. */
async function twoAtOnce(role: string, count: number): Promise<Array<{ out: string[] }>> {
  const path = join(dir, 'state');
  const go = join(dir, 'go');
  const script = join(ROOT, 'test', 'support', 'local-rmw-worker.ts');
  const runs = ['a', 'b'].map((tag) => {
    const ready = join(dir, `ready-${tag}`);
    const answer = new Promise<{ out: string[] }>((resolve, reject) => {
      const p = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify({ path, role, count, tag, ready, go })], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { out: string[] }) : reject(new Error(`worker ${tag} exit ${code}: ${err}`))));
    });
    return { ready, answer };
  });
  const deadline = Date.now() + 60_000;
  while (!runs.every((r) => existsSync(r.ready))) {
    if (Date.now() > deadline) throw new Error('the workers did not open the store');
    await new Promise((r) => setTimeout(r, 5));
  }
  writeFileSync(go, '');
  return Promise.all(runs.map((r) => r.answer));
}

describe('two processes on one local store', () => {
  it('alerts: each of 400 alerts raised by both at once is claimed by exactly one of them', async () => {
    const [a, b] = await twoAtOnce('alerts', 400);
    const all = [...a!.out, ...b!.out];
    expect(all.length).toBe(400);
    expect(new Set(all).size).toBe(400);
  }, 90_000);

  it('failed requests: 2 × 600 put at once get 1,200 distinct put-order numbers', async () => {
    await twoAtOnce('failed', 600);
    const env = openLocalEnv(join(dir, 'state'));
    try {
      const ns = [...env.db('failed').getRange()].map(({ value }) => (value as { n: number }).n);
      expect(ns).toHaveLength(1_200);
      expect(new Set(ns).size).toBe(1_200);
      expect(env.db('meta').get('failedSeq')).toBe(1_200);
    } finally {
      await env.release();
    }
  }, 90_000);

  it('retry queue: versions of ten pairs enqueued by both at once leave each pair its newest export, with one schedule entry', async () => {
    await twoAtOnce('queue', 400);
    const queue = new LocalRetryQueue({ path: join(dir, 'state') });
    try {
      const entries = await queue.list('flow');
      expect(entries.map((e) => [e.profileId, e.version]).sort()).toEqual(Array.from({ length: 10 }, (_, p) => [`q${p}`, 2 * (390 + p) + 1]).sort());
      const env = openLocalEnv(join(dir, 'state'));
      try {
        expect([...env.db('retries').getKeys({ start: 'd\u0000', end: 'd\u0001' })]).toHaveLength(10);
      } finally {
        await env.release();
      }
    } finally {
      await queue.close();
    }
  }, 90_000);
});
