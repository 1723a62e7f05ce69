import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StoreError } from '../../src/errors.js';
import { FileFailedRequestStore, FileRejectedEventStore } from '../../src/sinks/failed-file-store.js';
import type { FailedRequest, RejectedEvent } from '../../src/sinks/types.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'hd-failed-'));
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

function lines(path: string): string[] {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l !== '');
}

describe('FileFailedRequestStore', () => {
  it('lists nothing when the file does not exist', async () => {
    const store = new FileFailedRequestStore({ path: join(dir, 'none.jsonl') });
    expect(await store.list()).toEqual([]);
    await store.close();
  });

  it('creates parent folders and appends one JSON line per put', async () => {
    const path = join(dir, 'a', 'b', 'failed.jsonl');
    const store = new FileFailedRequestStore({ path });
    await store.put(rec('r1'));
    await store.put(rec('r2', { dataflowId: 'flow-2' }));
    expect(lines(path).map((l) => (JSON.parse(l) as FailedRequest).id)).toEqual(['r1', 'r2']);
    expect(await store.list()).toEqual([rec('r1'), rec('r2', { dataflowId: 'flow-2' })]);
    expect(await store.list({ dataflowId: 'flow-2' })).toEqual([rec('r2', { dataflowId: 'flow-2' })]);
    await store.close();
  });

  it('creates its folders 0700 and its file 0600, also when remove rewrites it', async () => {
    const path = join(dir, 'a', 'b', 'failed.jsonl');
    const store = new FileFailedRequestStore({ path });
    await store.put(rec('r1'));
    await store.put(rec('r2'));
    expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'a', 'b')).mode & 0o777).toBe(0o700);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await store.remove(['r1']);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    await store.close();
  });

  it('keeps the latest record of an id put twice', async () => {
    const path = join(dir, 'failed.jsonl');
    const store = new FileFailedRequestStore({ path });
    await store.put(rec('r1'));
    await store.put(rec('r2'));
    await store.put(rec('r1', { attempts: 6, replays: 1 }));
    expect(await store.list()).toEqual([rec('r2'), rec('r1', { attempts: 6, replays: 1 })]);
    await store.close();
  });

  it('skips a torn last line, and a later put does not merge into it', async () => {
    const path = join(dir, 'failed.jsonl');
    writeFileSync(path, `${JSON.stringify(rec('r1'))}\n${JSON.stringify(rec('r2')).slice(0, 40)}`);
    const store = new FileFailedRequestStore({ path });
    expect((await store.list()).map((r) => r.id)).toEqual(['r1']);
    await store.put(rec('r3'));
    expect((await store.list()).map((r) => r.id)).toEqual(['r1', 'r3']);
    await store.close();
  });

  it('serializes concurrent puts: every record is a whole line', async () => {
    const path = join(dir, 'failed.jsonl');
    const store = new FileFailedRequestStore({ path });
    const big = { blob: 'x'.repeat(20_000) };
    await Promise.all(Array.from({ length: 200 }, (_, i) => store.put(rec(`r${i}`, { payload: big }))));
    const all = lines(path).map((l) => JSON.parse(l) as FailedRequest);
    expect(all).toHaveLength(200);
    expect(new Set(all.map((r) => r.id)).size).toBe(200);
    expect(await store.list()).toHaveLength(200);
    await store.close();
  });

  it('removes ids by rewriting the file atomically, compacting duplicates', async () => {
    const path = join(dir, 'failed.jsonl');
    const store = new FileFailedRequestStore({ path });
    for (const id of ['r1', 'r2', 'r3']) await store.put(rec(id));
    await store.put(rec('r3', { replays: 1 }));
    await store.remove(['r1', 'nope']);
    expect(lines(path).map((l) => (JSON.parse(l) as FailedRequest).id)).toEqual(['r2', 'r3']);
    expect(await store.list()).toEqual([rec('r2'), rec('r3', { replays: 1 })]);
    expect(readdirSync(dir)).toEqual(['failed.jsonl']);
    await store.remove([]);
    await store.close();
  });

  it('keeps puts made while a remove is running', async () => {
    const path = join(dir, 'failed.jsonl');
    const store = new FileFailedRequestStore({ path });
    for (let i = 0; i < 50; i++) await store.put(rec(`old${i}`));
    const ops: Promise<void>[] = [store.remove(Array.from({ length: 50 }, (_, i) => `old${i}`))];
    for (let i = 0; i < 50; i++) ops.push(store.put(rec(`new${i}`)));
    await Promise.all(ops);
    const ids = (await store.list()).map((r) => r.id);
    expect(ids).toEqual(Array.from({ length: 50 }, (_, i) => `new${i}`));
    await store.close();
  });

  it('sees appends by another writer after a rewrite', async () => {
    const path = join(dir, 'failed.jsonl');
    const a = new FileFailedRequestStore({ path });
    const b = new FileFailedRequestStore({ path });
    await a.put(rec('r1'));
    await b.put(rec('r2'));
    await b.remove(['r1']);
    await a.put(rec('r3'));
    expect((await b.list()).map((r) => r.id)).toEqual(['r2', 'r3']);
    await a.close();
    await b.close();
  });

  it('rejects puts after close and fails with a StoreError when it cannot write', async () => {
    const path = join(dir, 'failed.jsonl');
    const store = new FileFailedRequestStore({ path });
    await store.close();
    await expect(store.put(rec('r1'))).rejects.toBeInstanceOf(StoreError);

    writeFileSync(join(dir, 'file'), '');
    const bad = new FileFailedRequestStore({ path: join(dir, 'file', 'sub', 'failed.jsonl') });
    const err = await bad.put(rec('r1')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('ERR_STORE');
    expect(existsSync(join(dir, 'file', 'sub'))).toBe(false);
  });
});

describe('FileRejectedEventStore', () => {
  const ev = (n: number): RejectedEvent => ({
    sourceKey: `file:events.jsonl:${n}`,
    code: 'ERR_EVENT_JSON',
    reason: 'not valid JSON',
    raw: '{"profileId": ',
    rejectedAt: '2026-11-26T10:00:00.000Z',
  });

  it('appends and lists in order, skipping a torn line', async () => {
    const path = join(dir, 'x', 'rejected.jsonl');
    const store = new FileRejectedEventStore({ path });
    expect(await store.list()).toEqual([]);
    await Promise.all([store.put(ev(1)), store.put(ev(2))]);
    appendFileSync(path, '{"sourceKey":"torn');
    await store.put(ev(3));
    expect(await store.list()).toEqual([ev(1), ev(2), ev(3)]);
    await store.close();
  });
});
