/**
 * End to end, the embedded default's durability (SPEC §11, "The embedded default is
 * durable"), through the built command on the real local store: `run --once` twice exports
 * nothing the second time; a `run` killed with SIGKILL mid-way and started again loses no
 * export and repeats one only with its Idempotency-Key; a second `run` on the same store is
 * refused naming the store; `failed list`, `failed replay` and `rejected list` work beside a
 * running `run`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { appendFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBuilt, jsonLines, removeTempDirs, runCli, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { idempotencyKey } from '../../src/domain/keys.js';

const RETRY = { minDelayMs: 20, maxDelayMs: 100 };
const AUD1 = { id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };
const AUD2 = { id: 'aud-2', name: 'B', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };

let rx: Receiver;
beforeAll(async () => {
  await ensureBuilt();
  rx = await startReceiver({
    respond: (r) => {
      if (r.path === '/refuse') return { status: 400 };
      if (r.path === '/slow') return { status: 200, delayMs: 3 };
      return undefined;
    },
  });
});
afterEach(() => stopAll());
afterAll(async () => {
  await rx?.close();
  removeTempDirs();
});

/** The store and the failed requests are not configured: the embedded default (local) is what runs. */
function config(path: string): Record<string, unknown> {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    audiences: [AUD1, AUD2],
    destinations: [
      { id: 'dest-1', endpoint: `${rx.url}${path}`, retry: RETRY },
      { id: 'dest-2', endpoint: `${rx.url}/refuse`, retry: RETRY },
    ],
    dataflows: [
      { id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] },
      { id: 'flow-2', destination: 'dest-2', audiences: ['aud-2'] },
    ],
    log: { level: 'warn' },
  };
}

const enter = (profileId: string, aud = 'aud-1'): unknown => ({
  profileId,
  segmentMembership: { ups: { [aud]: { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } },
});

const summaryOf = (stdout: string): Record<string, unknown> => JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;

describe('the local store across runs', () => {
  it('run --once twice: the second run reads nothing and exports nothing; lines appended later are exported once', async () => {
    const dir = tempDir();
    const path = `/twice-${Date.now()}`;
    writeEvents(dir, Array.from({ length: 20 }, (_, i) => enter(`p-${i}`)));
    const cfg = writeConfig(dir, config(path));
    const first = await runCli(['run', '--config', cfg, '--once', '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(summaryOf(first.stdout)).toMatchObject({ eventsRead: 20, delivered: 20 });
    expect(rx.at(path)).toHaveLength(20);
    expect(existsSync(join(dir, 'http-destination.state', 'data.mdb'))).toBe(true);

    const second = await runCli(['run', '--config', cfg, '--once', '--json']);
    expect(second.code, second.stderr).toBe(0);
    expect(summaryOf(second.stdout)).toMatchObject({ eventsRead: 0, delivered: 0 });
    expect(rx.at(path)).toHaveLength(20);

    appendFileSync(join(dir, 'events.jsonl'), `${JSON.stringify(enter('p-new'))}\n`);
    const third = await runCli(['run', '--config', cfg, '--once', '--json']);
    expect(summaryOf(third.stdout)).toMatchObject({ eventsRead: 1, delivered: 1 });
    expect(rx.at(path)).toHaveLength(21);
  });

  it('SIGKILL mid-run, then run --once: every export delivered, none lost, a repeat only with the same Idempotency-Key', async () => {
    const dir = tempDir();
    const path = `/slow`;
    const before = rx.at(path).length;
    const n = 3_000;
    writeEvents(dir, Array.from({ length: n }, (_, i) => enter(`k-${i}`)));
    const cfg = writeConfig(dir, { ...config(path), worker: { maxInFlight: 64 } });
    const mine = (): typeof rx.requests => rx.at(path).slice(before);

    const killed = startCli(['run', '--config', cfg, '--once']);
    await rx.waitFor(() => mine().length >= n / 3, 60_000);
    killed.signal('SIGKILL');
    const killedAt = Date.now();
    const k = await killed.exited;
    expect(k.signal).toBe('SIGKILL');
    const atKill = mine().length;
    // The pace just before the kill (exports per ms over its last 500 ms).
    const pace = mine().filter((r) => r.at > killedAt - 500 && r.at <= killedAt).length / 500;
    expect(atKill).toBeLessThan(n);

    const again = await runCli(['run', '--config', cfg, '--once', '--json'], { timeoutMs: 120_000 });
    expect(again.code, again.stderr).toBe(0);
    const s = summaryOf(again.stdout);
    // It went on where the killed run stopped: far fewer lines read than the whole file.
    expect(s.eventsRead as number).toBeLessThan(n - atKill / 2);

    // The key each profile's export must carry (dataflow, profile, line): every one arrived,
    // and no other key did, so a repeat is always a repeat of the same key.
    const file = join(dir, 'events.jsonl');
    const expected = new Set(Array.from({ length: n }, (_, i) => idempotencyKey({ dataflowId: 'flow-1', profileId: `k-${i}`, event: `file:${file}:${i + 1}` })));
    const received = new Set(mine().map((r) => r.key));
    expect(received.size).toBe(n);
    expect([...received].filter((key) => !expected.has(key))).toEqual([]);
    const duplicates = mine().length - n;
    // What is sent again: what was in flight at the kill (maxInFlight, 64), and what was acked
    // since the read position last committed — it is saved with the store's writes, one commit
    // per 50-ms window, not awaited by the acks: about one window of exports, plus a commit
    // (README, "The local store"). Bounded by the pace at the kill over 150 ms (a window, and
    // a commit that may be slow on a loaded machine); a run that kept no position sends ≥ n / 3.
    expect(duplicates).toBeLessThanOrEqual(64 + Math.ceil(pace * 150));
    expect(duplicates).toBeLessThan(n / 4);
  }, 180_000);

  it('a second run on the same store is refused naming the store; failed list, failed replay and rejected list work beside the running one', async () => {
    const dir = tempDir();
    const path = `/beside-${Date.now()}`;
    const events = writeEvents(dir, [enter('p-1'), enter('p-2', 'aud-2'), '{not json']);
    const cfg = writeConfig(dir, config(path));
    const worker = startCli(['run', '--config', cfg]);
    await rx.waitFor(() => rx.at(path).length === 1 && rx.at('/refuse').length >= 1, 20_000);

    const second = await runCli(['run', '--config', cfg, '--once']);
    expect(second.code).toBe(1);
    expect(second.stderr + second.stdout).toContain(join(dir, 'http-destination.state'));
    expect(second.stderr + second.stdout).toMatch(/in use by another run/);

    // The refused stored request and the rejected line, listed while run goes on.
    let failed: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 100 && failed.length === 0; i++) {
      const list = await runCli(['failed', 'list', '--config', cfg, '--json']);
      expect(list.code, list.stderr).toBe(0);
      failed = jsonLines(list.stdout);
      if (failed.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    // p-2's export (and, when the start-up backfill of the new mapping saw p-2 already, its
    // backfill export too: SPEC §8), refused with 400 and stored.
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const f of failed) expect(f).toMatchObject({ dataflowId: 'flow-2', profileId: 'p-2', lastStatus: 400 });
    const rejected = await runCli(['rejected', 'list', '--config', cfg, '--json']);
    expect(rejected.code, rejected.stderr).toBe(0);
    expect(jsonLines(rejected.stdout)).toMatchObject([{ sourceKey: expect.stringMatching(/:3$/), code: 'ERR_EVENT_JSON' }]);
    const replay = await runCli(['failed', 'replay', '--config', cfg]);
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toContain(`replayed ${failed.length}: delivered 0, failed ${failed.length}`);

    // The running worker still works: an appended line is exported.
    appendFileSync(events, `${JSON.stringify(enter('p-3'))}\n`);
    await rx.waitFor(() => rx.at(path).length === 2, 10_000);
    worker.signal('SIGTERM');
    const stopped = await worker.exited;
    expect(stopped.code, stopped.stderr).toBe(0);
    // The lock went with it: the next run starts.
    const next = await runCli(['run', '--config', cfg, '--once', '--json']);
    expect(next.code, next.stderr).toBe(0);
    expect(summaryOf(next.stdout)).toMatchObject({ eventsRead: 0 });
  }, 60_000);
});
