/**
 * CPU per export of the per-export steps outside the operator chain, each alone, in this
 * process: `npx tsx bench/hotpath.ts [--count N] [--rounds R] [--json] [--http-only]`.
 *
 * The embedded bench's backlog (single-update profiles, each update its profile's first,
 * exporting once to one dataflow) goes through, step by step:
 *
 * - `store`: `MemorySnapshotStore.apply` + `confirm` (merge included: src/domain/merge.ts);
 * - `payload`: `buildPayload` (src/domain/payload.ts);
 * - `key`: `eventIdentity` + `idempotencyKey` + `eventTime` (src/domain/keys.ts);
 * - `request`: the destination's `requestBuilder` (body JSON, headers; src/sinks/http/request.ts);
 * - `limiter`: `tokenBucket.acquire()` subscribed and granted (src/stores/memory-rate-limiter.ts);
 * - `transport`: `createTransport(...).send` of those requests to a node:http receiver in a
 *   child process, 64 in flight (src/sinks/http/transport.ts + undici): this process's CPU
 *   only;
 * - `sink attempt`: `HttpSink.attempt` (bearer auth, request, transport) as `attemptExports`
 *   calls it, 64 in flight (src/sinks/http/sink.ts).
 *
 * `--alloc` adds each step's bytes allocated per export (one more round under V8's sampling heap
 * profiler, every 256 bytes, freed objects included): unlike CPU time, not moved by the load.
 * `--http-only` runs only the HTTP steps (transport, sink attempt, their floor): copied into
 * another checkout, it gives that checkout's figures for an A/B in separate processes.
 *
 * Each step runs `rounds` times over the same inputs (a fresh store per round); the median
 * round's CPU µs per export is printed (GC included: it runs on this thread). The machine is
 * shared: compare figures of one run, or medians of several.
 */
import { fork } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import inspector from 'node:inspector';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { DestinationConfig } from '../src/config/load.js';
import { Agent, type Dispatcher } from 'undici';
import { exitedAudiences } from '../src/domain/diff.js';
import { applyUpdate } from '../src/domain/merge.js';
import { eventIdentity, eventTime, idempotencyKey } from '../src/domain/keys.js';
import { buildPayload, preparePayloadRules } from '../src/domain/payload.js';
import type { AppliedUpdate, ProfileUpdate } from '../src/domain/types.js';
import { requestBuilder, type HttpRequest } from '../src/sinks/http/request.js';
import { HttpSink } from '../src/sinks/http/sink.js';
import { createTransport } from '../src/sinks/http/transport.js';
import type { ExportJob, FailedRequestStore } from '../src/sinks/types.js';
import { AttemptHandle } from '../src/operators/attempt-exports.js';
import { tokenBucket } from '../src/stores/memory-rate-limiter.js';
import { MemorySnapshotStore } from '../src/stores/memory-snapshot-store.js';
import { benchAudiences, BENCH_TOKEN, dataflowRules } from './config.js';
import { EventGenerator, stamp } from './events.js';

const HERE = dirname(fileURLToPath(import.meta.url));

const { values } = parseArgs({
  options: {
    count: { type: 'string' },
    rounds: { type: 'string' },
    json: { type: 'boolean' },
    'no-transport': { type: 'boolean' },
    /** Only the HTTP steps (transport, sink attempt and their floor): for A/B runs of the sink. */
    'http-only': { type: 'boolean' },
    /** Also bytes allocated per export of each step (V8's sampling heap profiler, every 256 bytes, freed objects included). */
    alloc: { type: 'boolean' },
  },
});
const COUNT = Number(values.count ?? 20_000);
const ROUNDS = Number(values.rounds ?? 7);

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const session = values.alloc ? new inspector.Session() : undefined;
session?.connect();
const post = (method: string, params?: object): Promise<unknown> =>
  new Promise((resolve, reject) => session!.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
if (session) await post('HeapProfiler.enable');

interface SamplingNode {
  selfSize: number;
  children: SamplingNode[];
}
const totalSize = (n: SamplingNode): number => n.children.reduce((sum, c) => sum + totalSize(c), n.selfSize);

let profiles = 0;

/** Bytes allocated per item of one more round of `fn` (freed ones included), when `--alloc`. */
async function allocated(n: number, fn: () => void | Promise<void>, setup?: () => void): Promise<number | undefined> {
  if (!session) return undefined;
  setup?.();
  await post('HeapProfiler.startSampling', { samplingInterval: 256, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  await fn();
  const { profile } = (await post('HeapProfiler.stopSampling')) as { profile: { head: SamplingNode } };
  // HD_HOTPATH_ALLOC_DIR: each step's profile as a file, for `npx tsx bench/alloc-profile.ts FILE --exports N`
  const dir = process.env.HD_HOTPATH_ALLOC_DIR;
  if (dir) writeFileSync(join(dir, `hotpath-${++profiles}.heapprofile`), JSON.stringify(profile));
  return totalSize(profile.head) / n;
}

/** CPU µs per item of `fn` over `n` items, median of ROUNDS rounds (`setup` before each round, not timed). */
async function measure(
  name: string,
  n: number,
  fn: () => void | Promise<void>,
  setup?: () => void,
): Promise<{ name: string; usPerExport: number; rounds: number[]; bytesPerExport?: number }> {
  const rounds: number[] = [];
  // One warm-up round (JIT), then the measured ones.
  for (let r = 0; r <= ROUNDS; r++) {
    setup?.();
    const c0 = cpuUs();
    await fn();
    const us = (cpuUs() - c0) / n;
    if (r > 0) rounds.push(us);
  }
  return { name, usPerExport: median(rounds), rounds, bytesPerExport: await allocated(n, fn, setup) };
}

const flow = dataflowRules(1)[0];
const rules = preparePayloadRules(flow, benchAudiences);
const gen = new EventGenerator({ profiles: COUNT, prefix: 'hot', sequential: true });
const updates: ProfileUpdate[] = [];
for (let i = 0; i < COUNT; i++) updates.push(JSON.parse(stamp(gen.next().event, Date.now())) as ProfileUpdate);

// The applied updates and jobs every later step starts from.
const seed = new MemorySnapshotStore();
const applied: AppliedUpdate[] = [];
for (let i = 0; i < COUNT; i++) applied.push(await seed.apply(updates[i], { key: `file:/bench.jsonl:${i + 1}`, seq: i + 1 }));
const jobs: ExportJob[] = applied.map((a, i) => ({
  dataflowId: flow.id,
  destinationId: 'receiver',
  profileId: a.update.profileId,
  idempotencyKey: idempotencyKey({ dataflowId: flow.id, profileId: a.update.profileId, event: eventIdentity(a.update, `file:/bench.jsonl:${i + 1}`) }),
  payload: buildPayload(a, rules, exitedAudiences(a)),
  eventTime: eventTime(a.update),
}));

const results: Array<{ name: string; usPerExport: number; rounds: number[]; bytesPerExport?: number }> = [];

let store = new MemorySnapshotStore();
if (!values['http-only']) results.push(
  await measure(
    'store apply+confirm (memory; merge incl.)',
    COUNT,
    async () => {
      for (let i = 0; i < COUNT; i++) {
        const key = `file:/bench.jsonl:${i + 1}`;
        await store.apply(updates[i], { key, seq: i + 1 });
        await store.confirm(updates[i].profileId, key);
      }
    },
    () => (store = new MemorySnapshotStore()),
  ),
);

let sink = 0;
// Floors (code this step cannot avoid, in files outside its reach), printed for reference.
if (!values['http-only']) results.push(
  await measure('  floor: applyUpdate alone (src/domain/merge.ts)', COUNT, () => {
    for (let i = 0; i < COUNT; i++) sink += applyUpdate(null, updates[i]).profileId.length;
  }),
);
if (!values['http-only']) results.push(
  await measure('payload (buildPayload)', COUNT, () => {
    for (let i = 0; i < COUNT; i++) sink += Object.keys(buildPayload(applied[i], rules, exitedAudiences(applied[i]))).length;
  }),
);
if (!values['http-only']) results.push(
  await measure('key (eventIdentity + idempotencyKey + eventTime)', COUNT, () => {
    for (let i = 0; i < COUNT; i++) {
      const u = updates[i];
      sink += idempotencyKey({ dataflowId: flow.id, profileId: u.profileId, event: eventIdentity(u, `file:/bench.jsonl:${i + 1}`) }).length;
      sink += eventTime(u) ?? 0;
    }
  }),
);

const dest: DestinationConfig = {
  id: 'receiver',
  url: 'http://127.0.0.1:1/export',
  headers: { 'x-tenant': 'bench' },
  auth: { type: 'none' } as DestinationConfig['auth'],
  includeSegmentNames: true,
  includeSegmentTimestamps: true,
  retry: { minDelayMs: 100, maxDelayMs: 1000 } as DestinationConfig['retry'],
  timeoutMs: 10_000,
  connections: 64,
};
const build = requestBuilder(dest);
if (!values['http-only']) results.push(
  await measure('  floor: JSON.stringify(payload) alone', COUNT, () => {
    for (let i = 0; i < COUNT; i++) sink += JSON.stringify(jobs[i].payload).length;
  }),
);
if (!values['http-only']) results.push(
  await measure('request (requestBuilder: body JSON + headers)', COUNT, () => {
    for (let i = 0; i < COUNT; i++) sink += build(jobs[i], 1_700_000_000_000).body.length;
  }),
);

const limiter = tokenBucket({ rate: 10_000, burst: 1_000_000 });
if (!values['http-only']) results.push(
  await measure('limiter (acquire, granted at once)', COUNT, () => {
    const observer = { next: () => void sink++, error: () => {}, complete: () => {} };
    for (let i = 0; i < COUNT; i++) limiter.acquire().subscribe(observer);
  }),
);

if (!values['no-transport']) {
  const child = fork(join(HERE, 'receiver.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((res) => child.once('message', (m: { port: number }) => res(m.port)));
  const transport = createTransport({ destination: dest });
  const reqs: HttpRequest[] = jobs.map((j) => {
    const r = requestBuilder({ ...dest, url: `http://127.0.0.1:${port}/export` })(j);
    r.headers.authorization = `Bearer ${BENCH_TOKEN}`;
    return r;
  });
  // The floor: undici's dispatch() with a handler that does nothing but wait for the end.
  const agent = new Agent({ connections: 64, pipelining: 1, keepAliveTimeout: 30_000, keepAliveMaxTimeout: 120_000, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const origin = `http://127.0.0.1:${port}`;
  const bare = (r: HttpRequest): Promise<void> =>
    new Promise((resolve, reject) => {
      const handler: Dispatcher.DispatchHandler = {
        onRequestStart: () => {},
        onResponseStart: () => {},
        onResponseData: () => {},
        onResponseEnd: () => resolve(),
        onResponseError: (_c, err) => reject(err),
      };
      agent.dispatch({ origin, path: '/export', method: 'POST', headers: r.headers, body: r.body }, handler);
    });
  results.push(
    await measure('  floor: bare undici dispatch(), 64 in flight', COUNT, async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < COUNT) await bare(reqs[next++]);
        }),
      );
    }),
  );
  await agent.close();
  results.push(
    await measure('transport send (undici dispatch, 64 in flight)', COUNT, async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < COUNT) await transport.send(reqs[next++]);
        }),
      );
    }),
  );
  // The sink's attempt (HttpSink.attempt, as attemptExports calls it once the permit is granted):
  // bearer auth, request build (body JSON, headers), transport. Its floor: the transport line
  // above plus the request line (body JSON) — the rest is the sink's own.
  const sinkDest: DestinationConfig = { ...dest, url: `http://127.0.0.1:${port}/export`, auth: { type: 'bearer', token: BENCH_TOKEN } as DestinationConfig['auth'] };
  const noStore: FailedRequestStore = { put: async () => {}, list: async () => [], remove: async () => {}, close: async () => {} };
  const httpSink = new HttpSink({ destination: sinkDest, limiter, failedStore: noStore, transport });
  results.push(
    await measure('sink attempt (HttpSink.attempt: bearer auth + request + transport, 64 in flight)', COUNT, async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < COUNT) await httpSink.attempt(jobs[next++], new AttemptHandle());
        }),
      );
    }),
  );
  await transport.close();
  child.disconnect();
}

if (values.json) {
  process.stdout.write(`${JSON.stringify({ count: COUNT, rounds: ROUNDS, results }, null, 2)}\n`);
} else {
  console.log(`per-export CPU of the steps outside the chain (${COUNT} single-update profiles, median of ${ROUNDS} rounds; ${sink > 0 ? 'ok' : ''})`);
  for (const r of results) {
    const bytes = r.bytesPerExport === undefined ? '' : `${Math.round(r.bytesPerExport).toLocaleString('en-US').padStart(7)} B  `;
    console.log(`  ${r.usPerExport.toFixed(2).padStart(8)} µs  ${bytes}${r.name}   [${r.rounds.map((x) => x.toFixed(1)).join(' ')}]`);
  }
}
