/**
 * No loss under crash (SPEC §6): 5,000 updates published to JetStream; the worker (`run`,
 * not --once) is killed with SIGKILL twice while it works and restarted each time. Every
 * export a single clean run makes reaches the receiver at least once, and a duplicate of an
 * export carries the same body (same Idempotency-Key, same payload).
 *
 * The clean run's exports come from the oracle (the domain's pure functions applied in
 * order): the workload is built so that every one of the 5,000 updates exports once.
 */
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Audience } from '../../src/domain/types.js';
import {
  backboneConfig,
  consumerState,
  coverage,
  exportingWorkload,
  FAST_RETRY,
  oracle,
  prng,
  publish,
  readSnapshots,
  rulesOf,
  sleep,
  spawnCli,
  startBackbone,
  startRecordingReceiver,
  type Backbone,
  type CliProcess,
  type RecordingReceiver,
} from '../support/backbone.js';

const ACK_WAIT_MS = 1_500;
/**
 * How long a killed worker stays down before its restart. Set to ACK_WAIT_MS + margin to
 * let JetStream queue the unacknowledged messages for redelivery first.
 */
const DOWN_MS = Number(process.env.HD_CRASH_DOWN_MS ?? 0);

const audiences: Audience[] = [
  { id: 'aud-1', name: 'Crash audience', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'segmentation' },
];

describe('no loss under crash: SIGKILL twice while working, restart each time', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;
  let worker: CliProcess | undefined;

  beforeAll(async () => {
    bb = await startBackbone();
    rx = await startRecordingReceiver();
  });

  afterAll(async () => {
    worker?.kill('SIGKILL');
    await worker?.exited;
    await rx?.close();
    await bb?.stop();
  });

  it('every export of a clean run arrives at least once; duplicates carry the same body', async () => {
    const seed = Number(process.env.HD_CRASH_SEED ?? Date.now() % 1_000_000);
    const rand = prng(seed);
    const { events } = exportingWorkload({ profiles: 500, perProfile: 10, audience: 'aud-1', prefix: 'c', seed });
    const dest = { id: 'dest-1', endpoint: `${rx.url}/crash`, retry: FAST_RETRY, includeSegmentNames: true };
    const flow = { id: 'flow-1', destination: 'dest-1', audiences: [{ id: 'aud-1', mappingCreatedAt: 10, mappingUpdatedAt: 11 }], attributes: ['person.name.firstName'] };
    const config = backboneConfig({ bb, name: 'crash', audiences, destinations: [dest], dataflows: [flow], ackWaitMs: ACK_WAIT_MS, worker: { drainTimeoutMs: 3_000 } });
    const cfg = bb.writeFile('crash.json', config);
    const expected = oracle(events, { audiences, dataflows: [rulesOf(flow, dest)] });
    // The workload makes every update export: a clean run makes 5,000 exports.
    expect(events).toHaveLength(5_000);
    expect(expected.exports).toHaveLength(5_000);

    await publish(bb, cfg, 'crash.jsonl', events);

    const distinct = (): number => new Set(rx.delivered().map((r) => r.key)).size;
    const start = (): CliProcess => spawnCli(['run', '--config', cfg]);
    const log: string[] = [];
    const started = Date.now();
    worker = start();
    for (const fraction of [0.15 + rand() * 0.1, 0.55 + rand() * 0.1]) {
      const threshold = Math.floor(fraction * expected.exports.length);
      await rx.waitFor(() => distinct() >= threshold || !worker!.running, 60_000, `${threshold} exports`);
      expect(worker.running, `worker exited before the kill:\n${worker.stderr.slice(-3_000)}`).toBe(true);
      worker.kill('SIGKILL');
      const r = await worker.exited;
      expect(r.signal).toBe('SIGKILL');
      log.push(`killed at +${Date.now() - started} ms, ${distinct()} distinct exports (threshold ${threshold}, ${rx.requests.length} requests)`);
      if (DOWN_MS > 0) await sleep(DOWN_MS);
      worker = start();
      const restartedAt = Date.now();
      const before = rx.requests.length;
      void rx.waitFor(() => rx.requests.length > before, 60_000).then(() => log.push(`first request ${Date.now() - restartedAt} ms after restart`), () => {});
    }
    // Until every expected export arrived, or the consumer is drained and nothing arrives for 3 s.
    let quietSince = Date.now();
    let lastCount = rx.requests.length;
    for (;;) {
      if (coverage(rx.delivered(), expected).missing.length === 0) break;
      if (rx.requests.length !== lastCount) {
        lastCount = rx.requests.length;
        quietSince = Date.now();
      }
      if (Date.now() - quietSince > 3_000) {
        const st = await consumerState(bb.nats.url, 'CRASH_UPDATES', 'crash-worker').catch(() => null);
        if (st && st.pending === 0 && st.ackPending === 0) break;
      }
      if (Date.now() - started > 100_000) break;
      await sleep(50);
    }
    const tookMs = Date.now() - started;
    const c = coverage(rx.delivered(), expected);
    console.log(
      `[crash] seed ${seed}; ${log.join('; ')}; all ${expected.exports.length} exports covered in ${tookMs} ms ` +
        `with ${c.duplicates} duplicates (${rx.requests.length} requests in all)`,
    );
    // Every event exports once, in order: the i-th export is the i-th event's.
    const eventOf = (key: string): string => events[expected.exports.findIndex((x) => x.key === key)]?.eventId ?? '?';
    const explain = (keys: string[]): string =>
      keys
        .slice(0, 3)
        .map((k) => {
          const e = expected.byKey.get(k);
          const history = rx
            .delivered()
            .filter((r) => expected.byKey.get(r.key)?.profileId === e?.profileId)
            .map((r) => `  #${r.index} +${r.at - started}ms ${r.key === k ? '*' : ' '} ${eventOf(r.key)} ${r.raw}`);
          return `\n${e?.profileId}: ${eventOf(k)} (key ${k}), clean body ${JSON.stringify(e?.payload)}; its requests (event, body):\n${history.join('\n')}`;
        })
        .join('\n');
    expect(c.missing, `seed ${seed}: exports of the clean run that never arrived; ${log.join('; ')}${explain(c.missing)}`).toEqual([]);
    expect(c.unexpected, `seed ${seed}`).toEqual([]);
    expect(c.conflictingDuplicates, `seed ${seed}: same Idempotency-Key, different body; ${log.join('; ')}${explain(c.conflictingDuplicates)}`).toEqual([]);
    // A key is an export: every body is the clean run's body for that key.
    const wrong = rx.delivered().filter((r) => !isDeepStrictEqual(r.body, expected.byKey.get(r.key)?.payload));
    expect(wrong.map((r) => expected.byKey.get(r.key)?.profileId), `seed ${seed}: bodies that differ from the clean run`).toEqual([]);

    // The third worker finishes the backlog and stops gracefully.
    expect(worker.running).toBe(true);
    worker.kill('SIGTERM');
    const end = await worker.exited;
    expect(end.code, end.stderr.slice(-3_000)).toBe(0);
    const st = await consumerState(bb.nats.url, 'CRASH_UPDATES', 'crash-worker');
    expect(st).toMatchObject({ pending: 0, ackPending: 0 });
    // Every update was merged: the final snapshots are the clean run's.
    const snaps = await readSnapshots(bb.redis.url, 'crash:', [...expected.snapshots.keys()]);
    const diverged = [...expected.snapshots].filter(([id, s]) => !isDeepStrictEqual(snaps.get(id), s)).map(([id]) => id);
    expect(diverged, `seed ${seed}: snapshots that differ from the clean run`).toEqual([]);
  }, 150_000);
});
