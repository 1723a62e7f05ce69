/**
 * The `delay` alert (SPEC §10: the oldest update waiting, unacknowledged or not yet read, older
 * than thresholdMs) through the built command against real servers: a receiver that holds every
 * answer makes the backlog wait; the alert is raised once, and cleared once when the receiver
 * answers and the backlog drains. On the embedded file source, on JetStream with one worker, and
 * for a pool of two workers (one alert for the pool). Meanwhile `/api/partitions` and the
 * source-lag gauges show what waits.
 *
 * Nothing here depends on speed: each step waits for a logged or observable state (the raise
 * is only possible once the updates have waited longer than the threshold, whenever that is).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  publish,
  singleFlow,
  sleep,
  spawnCli,
  startRecordingReceiver,
  useBackboneAndReceiver,
  type Backbone,
  type CliProcess,
  type RecordingReceiver,
} from '../support/backbone.js';
import { parseLogs } from '../support/pool.js';
import { ensureBuilt, removeTempDirs, startCli, stopAll, tempDir, writeConfig, writeEvents } from '../support/cli.js';
import { freePort } from '../support/redis-server.js';

const AUD1 = { id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 };
const THRESHOLD_MS = 1_500;
const enter = (id: string): object => ({ profileId: id, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' } } } });

/** Holds every answer of `rx` until `release()`; answers 200 at once afterwards. */
function hold(rx: RecordingReceiver): { release(): void; held(): number } {
  let open = false;
  const waiting: Array<() => void> = [];
  rx.respond = () => (open ? 200 : new Promise<number>((r) => waiting.push(() => r(200))));
  return {
    release() {
      open = true;
      for (const w of waiting.splice(0)) w();
    },
    held: () => waiting.length,
  };
}

async function until<T>(what: string, read: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000, explain: () => string = () => ''): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${explain()}`);
    await sleep(50);
  }
}

const getJson = async (port: number, path: string): Promise<unknown> => {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10_000) }).catch(() => undefined);
  return r?.ok ? r.json() : undefined;
};
const metricsText = async (port: number): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
const gauge = (text: string, line: string): number | undefined => {
  const l = text.split('\n').find((x) => x.startsWith(`${line} `));
  return l === undefined ? undefined : Number(l.slice(line.length + 1));
};

/** Log messages of alert transitions in `stderr`s, in order. */
const transitions = (...stderrs: string[]): string[] =>
  stderrs.flatMap((s) => parseLogs(s)).filter((l) => /^alert (raised|cleared)/.test(l.msg)).map((l) => `${l.msg.split(':')[0]} ${String(l.alertId)}`);

describe('delay alert on the embedded file source', () => {
  let rx: RecordingReceiver;
  beforeAll(async () => {
    await ensureBuilt();
    rx = await startRecordingReceiver();
  });
  afterAll(async () => {
    stopAll();
    await rx?.close();
    removeTempDirs();
  });

  it('raised once while the exports hang, cleared once when they drain; /api/partitions and the gauges show the backlog', async () => {
    const gate = hold(rx);
    const dir = tempDir();
    writeEvents(dir, [enter('f-1'), enter('f-2'), enter('f-3')]);
    const port = await freePort();
    const cfg = writeConfig(dir, {
      source: { kind: 'file', path: 'events.jsonl' },
      audiences: [AUD1],
      destinations: [{ id: 'dest-1', endpoint: `${rx.url}/delay-file`, timeoutMs: 300_000 }],
      dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
      alerts: { rules: [{ id: 'stalled', kind: 'delay', thresholdMs: THRESHOLD_MS }], evaluateEveryMs: 200 },
      log: { level: 'info' },
    });
    const worker = startCli(['run', '--config', cfg, '--metrics-port', String(port)]);
    await worker.waitForOutput(/alert raised: the oldest update waiting is/, 60_000);
    expect(gate.held()).toBe(3);
    const api = (await getJson(port, '/api/partitions')) as { mode: string; source: string; lag: { pending: number; ackPending: number; oldestWaitingMs: number }; partitions: unknown[] };
    expect(api).toMatchObject({ mode: 'single', source: 'file', partitions: [], lag: { pending: 0, ackPending: 3 } });
    expect(api.lag.oldestWaitingMs).toBeGreaterThan(THRESHOLD_MS);
    // The gauges follow the 5-s measurement: wait for one taken while the three wait.
    await until('the gauges to show the backlog', async () => {
      const text = await metricsText(port);
      return gauge(text, 'http_destination_source_unacked_messages{source="file",partition="all"}') === 3 ? text : undefined;
    });
    gate.release();
    await worker.waitForOutput(/alert cleared: no update waiting/, 60_000);
    const text = await until('the gauges to show nothing waiting', async () => {
      const text = await metricsText(port);
      return gauge(text, 'http_destination_source_oldest_waiting_seconds{source="file"}') === 0 ? text : undefined;
    });
    // One host: undici on the transport thread, whose troubles the worker counts (none here).
    for (const kind of ['exited', 'failed', 'stuck']) expect(gauge(text, `http_destination_transport_thread_troubles_total{kind="${kind}"}`)).toBe(0);
    worker.signal('SIGTERM');
    const { code, stderr } = await worker.exited;
    expect(code).toBe(0);
    expect(transitions(stderr)).toEqual(['alert raised stalled:flow-1', 'alert cleared stalled:flow-1']);
  }, 120_000);
});

describe('delay alert on JetStream', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;
  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));

  /** A singleFlow config with the delay rule, long timeouts, and `store`/`source` overrides. */
  function delayFlow(name: string, extra: { store?: object; source?: object }): { cfg: string; setup: ReturnType<typeof singleFlow> } {
    const setup = singleFlow({ bb, rx, name, source: extra.source });
    const config = setup.config as Record<string, unknown> & { destinations: Array<Record<string, unknown>> };
    config.destinations[0].timeoutMs = 300_000;
    if (extra.store) config.store = extra.store;
    config.alerts = { rules: [{ id: 'stalled', kind: 'delay', thresholdMs: THRESHOLD_MS }], evaluateEveryMs: 200 };
    config.log = { level: 'info' };
    const cfg = bb.writeFile(`${name}.json`, config);
    return { cfg, setup: { ...setup, cfg } };
  }

  const stopAndCollect = async (w: CliProcess): Promise<string> => {
    w.kill('SIGTERM');
    const killer = setTimeout(() => w.kill('SIGKILL'), 30_000);
    const r = await w.exited.finally(() => clearTimeout(killer));
    expect(r.code, r.stderr.slice(-2_000)).toBe(0);
    return r.stderr;
  };

  it('one worker: raised once while the exports hang, cleared once when they drain', async () => {
    const gate = hold(rx);
    const { cfg } = delayFlow('delay-one', { store: { kind: 'memory' } });
    await publish(bb, cfg, 'delay-one.jsonl', [enter('j-1'), enter('j-2'), enter('j-3'), enter('j-4')]);
    const port = await freePort();
    const worker = spawnCli(['run', '--config', cfg, '--metrics-port', String(port)]);
    await until('the delay alert to be raised', () => /alert raised: the oldest update waiting/.test(worker.stderr) || undefined, 60_000, () => worker.stderr.slice(-2_000));
    const api = (await getJson(port, '/api/partitions')) as { mode: string; source: string; lag: { pending: number; ackPending: number; oldestWaitingMs: number } };
    expect(api).toMatchObject({ mode: 'single', source: 'jetstream' });
    expect(api.lag.pending + api.lag.ackPending).toBe(4);
    expect(api.lag.oldestWaitingMs).toBeGreaterThan(THRESHOLD_MS);
    gate.release();
    await until('the delay alert to be cleared', () => /alert cleared/.test(worker.stderr) || undefined, 60_000, () => worker.stderr.slice(-2_000));
    expect(rx.delivered('/delay-one')).toHaveLength(4);
    const stderr = await stopAndCollect(worker);
    expect(transitions(stderr)).toEqual(['alert raised stalled:flow-1', 'alert cleared stalled:flow-1']);
  }, 120_000);

  it('a pool of two workers: one alert for the pool, raised once and cleared once; /api/partitions shows owners, epochs, state and lag', async () => {
    const gate = hold(rx);
    const { cfg, setup } = delayFlow('delay-pool', { source: { partitions: 4, leaseMs: 1_500 } });
    await setup.prime();
    const ports = [await freePort(), await freePort()];
    const workers = ports.map((port) => spawnCli(['run', '--config', cfg, '--metrics-port', String(port)]));
    const logs = (): string => workers.map((w, i) => `\n--- worker ${i + 1}\n${w.stderr.slice(-1_500)}`).join('');
    type Partitions = { mode: string; pool: string; partitionCount: number; workers: Array<{ id: string; live: boolean; partitions: number[] }>; partitions: Array<{ partition: number; state: string; owner: string | null; epoch: number | null; consumer: string | null; pending: number | null; ackPending: number | null; oldestWaitingMs: number | null }> };
    // Both workers hold partitions (whatever the speed of each), before anything is published.
    const split = await until(
      'both workers to hold partitions',
      async () => {
        const p = (await getJson(ports[0], '/api/partitions')) as Partitions | undefined;
        if (!p) return undefined;
        const owners = new Set(p.partitions.filter((x) => x.state === 'held').map((x) => x.owner));
        return p.partitions.every((x) => x.state === 'held') && owners.size === 2 ? p : undefined;
      },
      60_000,
      logs,
    );
    expect(split).toMatchObject({ mode: 'pool', pool: 'delay-pool-worker', partitionCount: 4 });
    expect(split.workers.filter((w) => w.live)).toHaveLength(2);
    for (const p of split.partitions) expect(p.epoch).toBeGreaterThan(0);
    // Both ready, the pool check included (each holds a lease).
    for (const port of ports) {
      const ready = (await until('/readyz to answer 200', () => getJson(port, '/readyz'), 30_000, logs)) as { ready: boolean; checks: Array<{ name: string; ok: boolean }> };
      expect(ready.ready).toBe(true);
      expect(ready.checks.map((c) => c.name).sort()).toEqual(['nats', 'pool', 'redis', 'worker']);
    }
    const events = Array.from({ length: 12 }, (_, i) => enter(`pool-${i}`));
    await publish(bb, cfg, 'delay-pool.jsonl', events);
    await until('the delay alert to be raised', () => transitions(...workers.map((w) => w.stderr)).length >= 1 || undefined, 60_000, logs);
    // Each worker measures on its own 5-s tick: the alert may come from the other worker's
    // reading, so wait for this worker's reading to be past the threshold too.
    const during = (await until(
      'worker 2 reading an oldest wait past the threshold',
      async () => {
        const p = (await getJson(ports[1], '/api/partitions')) as Partitions | undefined;
        return p && Math.max(...p.partitions.map((x) => x.oldestWaitingMs ?? 0)) > THRESHOLD_MS ? p : undefined;
      },
      30_000,
      logs,
    )) as Partitions;
    expect(during.partitions.reduce((n, p) => n + (p.pending ?? 0) + (p.ackPending ?? 0), 0)).toBe(12);
    expect(Math.max(...during.partitions.map((p) => p.oldestWaitingMs ?? 0))).toBeGreaterThan(THRESHOLD_MS);
    for (const p of during.partitions) expect(p.consumer).toBe(`delay-pool-worker-p${p.partition}-e${p.epoch}`);
    gate.release();
    await until('the delay alert to be cleared', () => transitions(...workers.map((w) => w.stderr)).length >= 2 || undefined, 60_000, logs);
    await rx.waitFor(() => rx.delivered('/delay-pool').length >= 12, 30_000, 'the 12 deliveries');
    // About five more evaluations of each worker (every 200 ms) after the clear: nothing raised again.
    await sleep(1_000);
    const stderrs = await Promise.all(workers.map(stopAndCollect));
    expect(transitions(...stderrs).sort()).toEqual(['alert cleared stalled:flow-1', 'alert raised stalled:flow-1']);
  }, 180_000);
});
