/**
 * `failed replay` in a pool (issue 13, SPEC §6 "Nothing goes back in time"), with real
 * nats-server and redis-server and two running workers: after an outage, a replay leaves every
 * profile at its newest state. Profiles `a-*` get v1 while the endpoint refuses connections
 * (stored as failed after three attempts), then v2 and v3 once it is back (delivered): their v1
 * records are superseded (shown by `failed list`, not queued by `failed replay`, counted).
 * Profiles `b-*` only get v1 during the outage: the replay queues them and the partitions'
 * owners deliver them. Then the same with `failed replay` sending from the command itself
 * (the default): the Redis marks drop the superseded records there too.
 */
import { describe, expect, it } from 'vitest';
import { publish, runCli } from '../support/backbone.js';
import { orderViolations, usePoolFixture } from '../support/pool.js';
import { newestSeq, until } from '../support/pool-queue.js';

const A = 60;
const B = 30;

const update = (id: string, v: number): object => ({
  profileId: id,
  eventId: `${id}-v${v}`,
  timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, v)).toISOString(),
  attributes: v === 1 ? { bench: { pid: id, seq: 1 } } : { bench: { seq: v } },
  ...(v === 1 ? { segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-01-01T00:00:00Z' } } } } : {}),
});

describe('failed replay in a pool', () => {
  const pool = usePoolFixture();

  async function outageThenReplay(name: string, mode: 'queue' | 'direct'): Promise<void> {
    const { bb, rx } = pool;
    const s = pool.flow({ name });
    await s.prime();
    const w1 = s.start();
    const w2 = s.start();
    const failedList = async (): Promise<Array<{ profileId: string; superseded?: boolean }>> => {
      const r = await runCli(['failed', 'list', '--config', s.cfg, '--json']);
      if (r.code !== 0) throw new Error(r.stderr);
      return r.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { profileId: string; superseded?: boolean });
    };

    // 1. The endpoint refuses connections: every v1 ends as a stored failed request.
    await rx.down();
    const as = Array.from({ length: A }, (_, i) => `a-${i}`);
    const bs = Array.from({ length: B }, (_, i) => `b-${i}`);
    await publish(bb, s.cfg, `${name}-v1.jsonl`, [...as, ...bs].map((id) => update(id, 1)));
    await until(async () => (await failedList()).length === A + B, 90_000, `${A + B} failed requests`);

    // 2. It is back: v2 and v3 of the a-* profiles are delivered.
    await rx.up();
    await publish(bb, s.cfg, `${name}-v23.jsonl`, [...as.map((id) => update(id, 2)), ...as.map((id) => update(id, 3))]);
    const newest = (): Map<string, number> => newestSeq(rx, s.path);
    await rx.waitFor(() => as.every((id) => newest().get(id) === 3), 90_000, 'v3 of every a-* profile');

    // 3. `failed list` shows the a-* records as superseded (the Redis marks); `failed replay
    //    --queue` queues only the b-* ones, which the workers deliver.
    const listed = await failedList();
    expect(listed.filter((r) => r.superseded).map((r) => r.profileId).sort()).toEqual([...as].sort());
    const replay = await runCli(['failed', 'replay', '--config', s.cfg, ...(mode === 'queue' ? ['--queue'] : [])], { timeoutMs: 60_000 });
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toMatch(mode === 'queue' ? new RegExp(`queued ${B}\\b`) : new RegExp(`replayed ${B}: delivered ${B}, failed 0`));
    expect(replay.stdout).toMatch(new RegExp(`superseded ${A}\\b`));
    await rx.waitFor(() => bs.every((id) => newest().get(id) === 1), 60_000, 'v1 of every b-* profile, replayed');
    await until(async () => (await failedList()).length === 0, 30_000, 'an empty failed store');

    // Every profile at its newest state; no a-* v1 went out after the outage; nothing older after newer.
    const state = newest();
    for (const id of as) expect(state.get(id), id).toBe(3);
    for (const id of bs) expect(state.get(id), id).toBe(1);
    const backAt = rx.requests.findIndex((r) => r.status === 200 && r.path === s.path);
    const lateV1 = rx.requests.slice(backAt).filter((r) => {
      if (r.path !== s.path) return false;
      const b = (r.body as { bench?: { pid?: string; seq?: number } }).bench;
      return b?.pid?.startsWith('a-') && b.seq === 1;
    });
    expect(lateV1).toEqual([]);
    expect(orderViolations(rx.requests, s.path)).toEqual([]);
    w1.kill('SIGKILL');
    w2.kill('SIGKILL');
    await Promise.all([w1.exited, w2.exited]);
  }

  it('after an outage leaves every profile at its newest state: with --queue, superseded records are not queued, the others are delivered by the workers', async () => {
    await outageThenReplay('rqr', 'queue');
  }, 300_000);

  it('after an outage leaves every profile at its newest state: sent from the command, superseded records are dropped (Redis marks)', async () => {
    await outageThenReplay('rqd', 'direct');
  }, 300_000);
});
