/**
 * Failed requests and rejected events in the local store (LMDB): the store's behaviour, its
 * file modes, and two processes at once — one appending as `run` does, one listing and
 * removing as `failed replay` does — losing and duplicating nothing.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalFailedRequestStore, LocalRejectedEventStore } from '../../src/sinks/failed-local-store.js';
import type { FailedRequest } from '../../src/sinks/types.js';
import { ROOT } from '../support/cli.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hd-failed-local-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function rec(id: string, over: Partial<FailedRequest> = {}): FailedRequest {
  return {
    id,
    dataflowId: 'flow-1',
    destinationId: 'dest-1',
    profileId: `p-${id}`,
    idempotencyKey: id,
    payload: { person: { name: { firstName: 'John' } } },
    attempts: 3,
    lastStatus: 500,
    lastErrorCode: 'ERR_HTTP_STATUS',
    lastError: 'HTTP 500',
    failedAt: '2026-11-26T10:00:00.000Z',
    ...over,
  };
}

describe('LocalFailedRequestStore', () => {
  it('lists nothing in a new store; creates its folder 0700 and files 0600', async () => {
    const path = join(dir, 'a', 'state');
    const store = new LocalFailedRequestStore({ path });
    expect(await store.list()).toEqual([]);
    await store.put(rec('1'));
    expect(statSync(path).mode & 0o777).toBe(0o700);
    for (const f of ['data.mdb', 'data.mdb-lock']) expect(statSync(join(path, f)).mode & 0o777).toBe(0o600);
    await store.close();
  });

  it('keeps records in put order, one per id (a put again replaces it and moves it last), filters by dataflow, removes by id', async () => {
    const path = join(dir, 'state');
    const store = new LocalFailedRequestStore({ path });
    await store.put(rec('a'));
    await store.put(rec('b', { dataflowId: 'flow-2' }));
    await store.put(rec('c'));
    await store.put(rec('a', { replays: 1 }));
    expect((await store.list()).map((r) => [r.id, r.replays])).toEqual([
      ['b', undefined],
      ['c', undefined],
      ['a', 1],
    ]);
    expect((await store.list({ dataflowId: 'flow-2' })).map((r) => r.id)).toEqual(['b']);
    await store.remove(['a', 'missing']);
    await store.remove([]);
    expect((await store.list()).map((r) => r.id)).toEqual(['b', 'c']);
    await store.close();
    // Durable: another handle (another process would see the same) finds them.
    const again = new LocalFailedRequestStore({ path });
    expect(await again.list()).toEqual([rec('b', { dataflowId: 'flow-2' }), rec('c')]);
    await again.close();
  });

  it('one process appending 3,000 failed requests while another lists and removes them: none lost, none twice', async () => {
    const path = join(dir, 'state');
    // Create the store first, so both children open an existing one.
    const store = new LocalFailedRequestStore({ path });
    await store.close();
    const done = join(dir, 'append-done');
    const ready = join(dir, 'drain-ready');
    const script = join(ROOT, 'test', 'support', 'local-store-worker.ts');
    const child = (args: object): Promise<string> =>
      new Promise((resolve, reject) => {
        const p = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(args)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        p.stderr.on('data', (d: Buffer) => (err += d.toString()));
        p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exit ${code}: ${err}`))));
      });
    const drain = child({ path, role: 'drain', until: done, ready });
    await child({ path, role: 'append', count: 3_000, after: ready });
    writeFileSync(done, '');
    const { removed, busyRounds } = JSON.parse(await drain) as { removed: string[]; busyRounds: number };
    const left = new LocalFailedRequestStore({ path });
    const remaining = (await left.list()).map((r) => r.id);
    await left.close();
    // They really ran side by side: the drainer removed records in several rounds while the
    // appender wrote (it starts only once the drainer runs, so this holds on any machine).
    expect(busyRounds).toBeGreaterThan(1);
    expect(removed.length + remaining.length).toBe(3_000);
    expect(new Set([...removed, ...remaining]).size).toBe(3_000);
  }, 60_000);
});

describe('LocalRejectedEventStore', () => {
  it('lists rejected events in the order they were put, beside the failed requests of the same store', async () => {
    const path = join(dir, 'state');
    const rejected = new LocalRejectedEventStore({ path });
    const failed = new LocalFailedRequestStore({ path });
    const ev = (n: number) => ({ sourceKey: `file:e.jsonl:${n}`, code: 'ERR_EVENT_JSON', reason: 'bad', raw: '{', rejectedAt: '2026-11-26T10:00:00.000Z' });
    for (let n = 1; n <= 12; n++) await rejected.put(ev(n));
    await failed.put(rec('x'));
    expect((await rejected.list()).map((r) => r.sourceKey)).toEqual(Array.from({ length: 12 }, (_, i) => `file:e.jsonl:${i + 1}`));
    expect((await failed.list()).map((r) => r.id)).toEqual(['x']);
    await rejected.close();
    await failed.close();
  });
});
