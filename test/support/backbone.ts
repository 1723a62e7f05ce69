/**
 * Test support for the backbone tests (test/backbone): real nats-server and redis-server,
 * configs written to a temporary folder, a recording HTTP receiver that can fail or go
 * down, the CLI (`node dist/cli/main.js …`, built by `npm run build`) as a child process,
 * and an oracle that computes, from the pure domain functions, the exports a single clean
 * run makes.
 *
 * Every setup is isolated by its `name`: stream `<NAME>_UPDATES`, subject `<name>.updates`,
 * durable `<name>-worker`, Redis prefix `<name>:`, receiver path `/<name>`.
 *
 * @example
 * const bb = await startBackbone();
 * const rx = await startRecordingReceiver();
 * const s = singleFlow({ bb, rx, name: 'demo' });
 * const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
 * await s.prime();
 * await publish(bb, s.cfg, 'demo.jsonl', events);
 * const summary = await runOnce(s.cfg);
 * expect(coverage(rx.delivered(s.path), expected).missing).toEqual([]);
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';
import { decideExports, exitedAudiences } from '../../src/domain/diff.js';
import { eventIdentity, idempotencyKey } from '../../src/domain/keys.js';
import { applyUpdate } from '../../src/domain/merge.js';
import { buildPayload, preparePayloadRules } from '../../src/domain/payload.js';
import type { Audience, DataflowRules, ExportPayload, ProfileSnapshot, ProfileUpdate } from '../../src/domain/types.js';
import { startNatsServer, type NatsServer } from './nats-server.js';
import { startRedisServer, type RedisServer } from './redis-server.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = join(REPO, 'dist/cli/main.js');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fails fast with a clear message when `npm run build` was not run. */
export function requireBuiltCli(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the backbone tests`);
}

// ------------------------------------------------------------------------------------------
// Servers

export interface Backbone {
  nats: NatsServer;
  redis: RedisServer;
  /** A temporary folder for configs, event files and CSVs; removed by `stop()`. */
  dir: string;
  /** Writes `content` (an object → JSON, a string as is) to `dir/name`; returns the path. */
  writeFile(name: string, content: unknown): string;
  /** Writes JSON Lines (one object per line; a string is written as the raw line). */
  writeJsonl(name: string, lines: Array<object | string>): string;
  stop(): Promise<void>;
}

/** Starts a nats-server (JetStream) and a redis-server on free ports, and a temp folder. */
export async function startBackbone(): Promise<Backbone> {
  requireBuiltCli();
  const [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
  const dir = mkdtempSync(join(tmpdir(), 'hd-backbone-'));
  const writeFile = (name: string, content: unknown): string => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
    return path;
  };
  return {
    nats,
    redis,
    dir,
    writeFile,
    writeJsonl: (name, lines) =>
      writeFile(name, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n'),
    async stop() {
      await Promise.allSettled([nats.stop(), redis.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------------------------
// Configs

export interface ConfigOptions {
  bb: Backbone;
  /** Names the stream, subject, durable, Redis prefix and failed streams: isolates a test. */
  name: string;
  audiences: Audience[];
  destinations: object[];
  dataflows: object[];
  /** @default 2000 */
  ackWaitMs?: number;
  /** More `source` settings (e.g. `leaseMs`). */
  source?: object;
  /** @default `{ kind: 'redis', … }` on the backbone's Redis */
  store?: object;
  worker?: object;
  /** @default 'warn' */
  logLevel?: string;
}

/** A full backbone config (JetStream source, Redis store, JetStream failed stores). */
export function backboneConfig(o: ConfigOptions): Record<string, unknown> {
  const up = o.name.toUpperCase().replace(/[^A-Z0-9]/g, '_');
  return {
    source: {
      kind: 'jetstream',
      servers: o.bb.nats.url,
      stream: `${up}_UPDATES`,
      subject: `${o.name}.updates`,
      durable: `${o.name}-worker`,
      ackWaitMs: o.ackWaitMs ?? 2_000,
      ...(o.source ?? {}),
    },
    store: o.store ?? { kind: 'redis', url: o.bb.redis.url, keyPrefix: `${o.name}:` },
    // servers left out on purpose: they default to the source's.
    failedRequests: { kind: 'jetstream', stream: `${up}_FAILED`, rejectedStream: `${up}_REJECTED` },
    audiences: o.audiences,
    destinations: o.destinations,
    dataflows: o.dataflows,
    worker: { drainTimeoutMs: 5_000, ...(o.worker ?? {}) },
    log: { level: o.logLevel ?? 'warn' },
  };
}

/** The small retry delays every backbone destination uses. */
export const FAST_RETRY = { minDelayMs: 50, maxDelayMs: 200 } as const;

/** One audience `aud-1` (merge policy mp-1) for the single-flow setups. */
export const AUD_1: Audience = { id: 'aud-1', name: 'Audience one', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2, origin: 'segmentation' };

export interface FlowSetup {
  /** Path of the config file. */
  cfg: string;
  config: Record<string, unknown>;
  /** The dataflow's rules, for the oracle. */
  rules: DataflowRules;
  audiences: Audience[];
  /** Receiver path of this setup's destination (`/<name>`). */
  path: string;
  stream: string;
  durable: string;
  /** Redis key prefix (`<name>:`). */
  prefix: string;
  /** Starts `run --config cfg` (no --once). */
  start(): CliProcess;
  /**
   * Creates the stream (`publish` of nothing), then `run --once` on the still empty stream and
   * store: the dataflow's backfill finishes with nothing to send, so no backfill export mixes
   * with what a test checks afterwards.
   */
  prime(): Promise<void>;
}

/**
 * A config with one destination (`rx.url/<name>`) and one dataflow `flow-1` mapping `aud-1`
 * with `person.name.firstName`, on its own stream, durable and Redis prefix.
 */
export function singleFlow(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  name: string;
  ackWaitMs?: number;
  source?: object;
  worker?: object;
  rateLimit?: number;
}): FlowSetup {
  const audiences = [AUD_1];
  const dest = { id: 'dest-1', endpoint: `${o.rx.url}/${o.name}`, retry: FAST_RETRY, includeSegmentNames: true };
  const flow = {
    id: 'flow-1',
    destination: 'dest-1',
    audiences: [{ id: 'aud-1', mappingCreatedAt: 10, mappingUpdatedAt: 11 }],
    attributes: ['person.name.firstName'],
    ...(o.rateLimit !== undefined ? { rateLimit: o.rateLimit } : {}),
  };
  const config = backboneConfig({
    bb: o.bb,
    name: o.name,
    audiences,
    destinations: [dest],
    dataflows: [flow],
    ackWaitMs: o.ackWaitMs,
    source: o.source,
    worker: { drainTimeoutMs: 3_000, ...(o.worker ?? {}) },
  });
  const source = config.source as { stream: string; durable: string };
  const cfg = o.bb.writeFile(`${o.name}.json`, config);
  return {
    cfg,
    config,
    rules: rulesOf(flow, dest),
    audiences,
    path: `/${o.name}`,
    stream: source.stream,
    durable: source.durable,
    prefix: `${o.name}:`,
    start: () => spawnCli(['run', '--config', cfg]),
    async prime() {
      // `publish` of nothing creates the stream (see the round-trip test for `run` creating it).
      await publish(o.bb, cfg, `${o.name}-empty.jsonl`, []);
      const r = await runOnce(cfg);
      if (r.eventsRead !== 0 || r.delivered !== 0) throw new Error(`prime: expected an empty run, got ${JSON.stringify(r)}`);
    },
  };
}

/**
 * Waits until `done()` holds, or until the durable consumer has nothing pending or unacked
 * and no request reached the receiver for `quietMs`, or `timeoutMs` passed. Never throws:
 * the caller asserts what it expects afterwards.
 */
export async function settle(o: {
  bb: Backbone;
  rx: RecordingReceiver;
  stream: string;
  durable: string;
  done: () => boolean;
  quietMs?: number;
  timeoutMs: number;
}): Promise<void> {
  await settleWhenIdle({
    ...o,
    idle: async () => {
      const st = await consumerState(o.bb.nats.url, o.stream, o.durable).catch(() => null);
      return st !== null && st.pending === 0 && st.ackPending === 0;
    },
  });
}

/**
 * Waits until `done()` holds, or until no request reached the receiver for `quietMs` and
 * then `idle()` says the source has nothing left, or `timeoutMs` passed. Never throws.
 */
export async function settleWhenIdle(o: {
  rx: RecordingReceiver;
  done: () => boolean;
  idle: () => Promise<boolean>;
  quietMs?: number;
  timeoutMs: number;
}): Promise<void> {
  const quietMs = o.quietMs ?? 3_000;
  const deadline = Date.now() + o.timeoutMs;
  let quietSince = Date.now();
  let lastCount = o.rx.requests.length;
  while (Date.now() < deadline && !o.done()) {
    if (o.rx.requests.length !== lastCount) {
      lastCount = o.rx.requests.length;
      quietSince = Date.now();
    }
    if (Date.now() - quietSince > quietMs) {
      if (await o.idle()) return;
      quietSince = Date.now();
    }
    await sleep(50);
  }
}

// ------------------------------------------------------------------------------------------
// The CLI

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/cli/main.js …args` to its end (killed after `timeoutMs`). */
export function runCli(args: string[], options: { timeoutMs?: number } = {}): Promise<CliResult> {
  const p = spawnCli(args);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
  return p.exited.finally(() => clearTimeout(timer));
}

export interface CliProcess {
  child: ChildProcess;
  /** Output so far. */
  readonly stdout: string;
  readonly stderr: string;
  exited: Promise<CliResult>;
  readonly running: boolean;
  kill(signal?: NodeJS.Signals): void;
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** SIGKILLs every CLI process still running (for afterAll) and waits for them. */
export async function killAllCli(): Promise<void> {
  const running = [...children];
  await Promise.all(
    running.map(
      (c) =>
        new Promise<void>((r) => {
          if (c.exitCode !== null || c.signalCode !== null) return r();
          c.once('close', () => r());
          c.kill('SIGKILL');
        }),
    ),
  );
}

/** Starts `node dist/cli/main.js …args` and returns at once. */
export function spawnCli(args: string[]): CliProcess {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-200_000)));
  let running = true;
  const exited = new Promise<CliResult>((res) => {
    child.once('error', (err) => {
      running = false;
      children.delete(child);
      res({ code: null, signal: null, stdout, stderr: `${stderr}\nspawn error: ${err.message}` });
    });
    child.once('close', (code, signal) => {
      running = false;
      children.delete(child);
      res({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    get running() {
      return running;
    },
    exited,
    kill: (signal = 'SIGTERM') => {
      if (running) child.kill(signal);
    },
  };
}

/** `run --config cfg --once --json`: resolves with the parsed summary (throws with output otherwise). */
export async function runOnce(cfg: string, timeoutMs = 90_000): Promise<RunSummaryJson> {
  const r = await runCli(['run', '--config', cfg, '--once', '--json'], { timeoutMs });
  if (r.code !== 0) throw new Error(`run --once exited ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr.slice(-4_000)}`);
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as RunSummaryJson;
  } catch {
    throw new Error(`run --once printed no JSON summary:\n${r.stdout}\n${r.stderr.slice(-4_000)}`);
  }
}

export interface RunSummaryJson {
  eventsRead: number;
  rejected: number;
  backfilled: number;
  delivered: number;
  failed: number;
  dataflows: Record<string, { delivered: number; failed: number }>;
  abandoned: number;
  durationMs: number;
}

/** `publish --config cfg file` for these events; returns the CLI result (asserting exit 0). */
export async function publish(bb: Backbone, cfg: string, name: string, lines: Array<object | string>): Promise<CliResult> {
  const file = bb.writeJsonl(name, lines);
  const r = await runCli(['publish', '--config', cfg, file]);
  if (r.code !== 0) throw new Error(`publish exited ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

// ------------------------------------------------------------------------------------------
// A recording HTTP receiver

export interface Recorded {
  /** 0-based arrival order. */
  index: number;
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  key: string;
  raw: string;
  body: unknown;
  /** Arrival time (ms since epoch). */
  at: number;
  /** Status answered; 0 while not answered (or never: connection gone). */
  status: number;
}

export interface RecordingReceiver {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** Every request, in arrival order (answered or not). */
  readonly requests: Recorded[];
  /** Requests answered 2xx (a request not answered yet has status 0). */
  delivered(path?: string): Recorded[];
  /**
   * Status to answer a request with (a promise holds the answer back until it resolves; the
   * request is recorded at arrival, its `status` set when answered). @default 200
   */
  respond: (r: { path: string; key: string; body: unknown }) => number | Promise<number>;
  /** Closes the listening socket and every open connection: new requests get ECONNREFUSED. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  /** Polls `pred` every 20 ms until true; throws after `timeoutMs` with `what`. */
  waitFor(pred: () => boolean, timeoutMs: number, what?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startRecordingReceiver(): Promise<RecordingReceiver> {
  const requests: Recorded[] = [];
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const rx: RecordingReceiver = {
    url: '',
    port: 0,
    requests,
    delivered: (path) => requests.filter((r) => r.status >= 200 && r.status < 300 && (path === undefined || r.path === path)),
    respond: () => 200,
    async down() {
      const s = server;
      server = undefined;
      if (!s) return;
      const closed = new Promise<void>((r) => s.close(() => r()));
      for (const sock of sockets) sock.destroy();
      s.closeAllConnections();
      await closed;
    },
    async up() {
      if (server) return;
      await listen();
    },
    async waitFor(pred, timeoutMs, what = 'condition') {
      const deadline = Date.now() + timeoutMs;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`receiver: timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(20);
      }
    },
    close: () => rx.down(),
  };

  async function listen(): Promise<void> {
    const s = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(raw);
        } catch {
          body = undefined;
        }
        const path = (req.url ?? '/').split('?')[0];
        const key = String(req.headers['idempotency-key'] ?? '');
        const rec: Recorded = { index: requests.length, method: req.method ?? '', path, headers: req.headers, key, raw, body, at: Date.now(), status: 0 };
        requests.push(rec);
        const answer = (status: number): void => {
          if (res.destroyed || res.writableEnded) return;
          rec.status = status;
          res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
        };
        try {
          const status = rx.respond({ path, key, body });
          if (typeof status === 'number') answer(status);
          else status.then(answer, () => answer(500));
        } catch {
          answer(500);
        }
      });
    });
    s.on('connection', (sock: Socket) => {
      sockets.add(sock);
      sock.once('close', () => sockets.delete(sock));
    });
    await new Promise<void>((res, rej) => {
      s.once('error', rej);
      s.listen(port, '127.0.0.1', () => res());
    });
    port = (s.address() as AddressInfo).port;
    server = s;
    rx.port = port;
    rx.url = `http://127.0.0.1:${port}`;
  }

  await listen();
  return rx;
}

// ------------------------------------------------------------------------------------------
// Redis, JetStream

/** Reads snapshots `<prefix>p:<id>` field `s` (parsed) with ioredis. */
export async function readSnapshots(
  url: string,
  prefix: string,
  profileIds: readonly string[],
): Promise<Map<string, ProfileSnapshot | null>> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: false });
  try {
    const out = new Map<string, ProfileSnapshot | null>();
    const pipe = redis.pipeline();
    for (const id of profileIds) pipe.hget(`${prefix}p:${id}`, 's');
    const replies = (await pipe.exec()) ?? [];
    profileIds.forEach((id, i) => {
      const [err, raw] = replies[i] ?? [null, null];
      if (err) throw err;
      out.set(id, typeof raw === 'string' ? (JSON.parse(raw) as ProfileSnapshot) : null);
    });
    return out;
  } finally {
    redis.disconnect();
  }
}

/** Members of `<prefix>a:<audienceId>`. */
export async function readMembers(url: string, prefix: string, audienceId: string): Promise<string[]> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    return (await redis.smembers(`${prefix}a:${audienceId}`)).sort();
  } finally {
    redis.disconnect();
  }
}

/**
 * `num_pending` and `num_ack_pending` summed over the stream's consumers whose name is
 * `durable` or starts with `durable-` (a single worker's consumer, or a pool's per-partition
 * consumers `<durable>-p<n>`); null when there is none.
 */
export async function consumerState(
  natsUrl: string,
  stream: string,
  durable: string,
): Promise<{ pending: number; ackPending: number; redelivered: number; consumers: number } | null> {
  const nc = await connect({ servers: natsUrl, reconnect: false, timeout: 2_000 });
  try {
    const jsm = await jetstreamManager(nc);
    const out = { pending: 0, ackPending: 0, redelivered: 0, consumers: 0 };
    for await (const info of jsm.consumers.list(stream)) {
      // nats-server 2.9 lists a consumer deleted while the list is read as null
      if (!info) continue;
      const name = info.name;
      if (name !== durable && !name.startsWith(`${durable}-`)) continue;
      out.consumers++;
      out.pending += info.num_pending;
      out.ackPending += info.num_ack_pending;
      out.redelivered += info.num_redelivered;
    }
    return out.consumers > 0 ? out : null;
  } finally {
    await nc.close();
  }
}

// ------------------------------------------------------------------------------------------
// The oracle: what one clean, in-order run exports

export interface ExpectedExport {
  dataflowId: string;
  profileId: string;
  key: string;
  payload: ExportPayload;
}

export interface Oracle {
  /** Exports in source order. */
  exports: ExpectedExport[];
  byKey: Map<string, ExpectedExport>;
  /** Final snapshot per profile. */
  snapshots: Map<string, ProfileSnapshot>;
}

/**
 * Applies `events` in order with the domain's pure functions and lists the exports each
 * makes (SPEC §3, §4), keyed like the product keys them: the event's `eventId`, else
 * `sourceKey(index)` (for JetStream, `js:<stream>:<1-based sequence>`).
 */
export function oracle(
  events: readonly ProfileUpdate[],
  config: { audiences: Audience[]; dataflows: DataflowRules[] },
  sourceKey: (index: number) => string = () => {
    throw new Error('oracle: an event without eventId needs sourceKey');
  },
): Oracle {
  const snapshots = new Map<string, ProfileSnapshot>();
  const rules = new Map(config.dataflows.map((f) => [f.id, preparePayloadRules(f, config.audiences)]));
  const exports: ExpectedExport[] = [];
  events.forEach((update, i) => {
    const before = snapshots.get(update.profileId) ?? null;
    const after = applyUpdate(before, update);
    snapshots.set(update.profileId, after);
    const applied = { update, before, after };
    const exited = exitedAudiences(applied);
    for (const d of decideExports(applied, config.dataflows)) {
      const event = eventIdentity(update, update.eventId === undefined ? sourceKey(i) : '');
      exports.push({
        dataflowId: d.dataflowId,
        profileId: update.profileId,
        key: idempotencyKey({ dataflowId: d.dataflowId, profileId: update.profileId, event }),
        payload: JSON.parse(JSON.stringify(buildPayload(applied, rules.get(d.dataflowId)!, exited))) as ExportPayload,
      });
    }
  });
  return { exports, byKey: new Map(exports.map((e) => [e.key, e])), snapshots };
}

/** DataflowRules as the config loader makes them (for the oracle). */
export function rulesOf(
  flow: { id: string; destination: string; audiences: Array<{ id: string; mappingCreatedAt?: number; mappingUpdatedAt?: number }>; attributes: string[] },
  destination: { id: string; includeSegmentNames?: boolean; includeSegmentTimestamps?: boolean },
): DataflowRules {
  return {
    id: flow.id,
    destinationId: flow.destination,
    audiences: flow.audiences.map((a) => ({
      id: a.id,
      mappingCreatedAt: a.mappingCreatedAt as number,
      mappingUpdatedAt: a.mappingUpdatedAt as number,
    })),
    attributes: flow.attributes,
    includeSegmentNames: destination.includeSegmentNames ?? false,
    includeSegmentTimestamps: destination.includeSegmentTimestamps ?? false,
  };
}

/** Compares what a receiver got against the oracle: missing keys, unknown keys, duplicates with another body. */
export function coverage(received: readonly Recorded[], expected: Oracle): {
  missing: string[];
  unexpected: string[];
  duplicates: number;
  conflictingDuplicates: string[];
} {
  const seen = new Map<string, string>();
  const conflicting = new Set<string>();
  const unexpected = new Set<string>();
  let duplicates = 0;
  for (const r of received) {
    if (!expected.byKey.has(r.key)) unexpected.add(r.key);
    const prev = seen.get(r.key);
    if (prev === undefined) seen.set(r.key, r.raw);
    else {
      duplicates++;
      if (!isDeepStrictEqual(JSON.parse(prev), JSON.parse(r.raw))) conflicting.add(r.key);
    }
  }
  const missing = expected.exports.filter((e) => !seen.has(e.key)).map((e) => e.key);
  return { missing, unexpected: [...unexpected], duplicates, conflictingDuplicates: [...conflicting] };
}

/** A small deterministic PRNG (mulberry32), so a failing run can be reproduced from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Interleaves per-profile event lists at random, keeping each profile's order. */
export function interleave<T>(lists: T[][], rand: () => number): T[] {
  const queues = lists.map((l) => l.slice());
  const out: T[] = [];
  let live = queues.filter((q) => q.length > 0);
  while (live.length > 0) {
    const i = Math.floor(rand() * live.length);
    out.push(live[i].shift() as T);
    if (live[i].length === 0) live = live.filter((q) => q.length > 0);
  }
  return out;
}

/**
 * A workload where every update exports to a dataflow mapping `audience` with
 * `person.name.firstName` mapped: per profile, in order: enter (+ firstName), firstName,
 * lastName is not mapped so it rides along with firstName, exit, enter again (`existing`),
 * identity added, firstName, exit, enter, firstName … (`perProfile` updates per profile).
 */
export function exportingWorkload(options: {
  profiles: number;
  perProfile: number;
  audience: string;
  prefix: string;
  seed: number;
  /** @default true */
  eventIds?: boolean;
}): { perProfile: ProfileUpdate[][]; events: ProfileUpdate[] } {
  const rand = prng(options.seed);
  const lists: ProfileUpdate[][] = [];
  for (let p = 0; p < options.profiles; p++) {
    const profileId = `${options.prefix}-${p}`;
    const list: ProfileUpdate[] = [];
    let inside = false;
    for (let j = 0; j < options.perProfile; j++) {
      const base: ProfileUpdate = { profileId, timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, j)).toISOString() };
      if (options.eventIds ?? true) base.eventId = `${profileId}-e${j}`;
      const t = `2026-01-01T00:00:${String(j).padStart(2, '0')}Z`;
      const step = j % 5;
      if (!inside) {
        // Enter (first time `realized`, later `existing`), with an attribute write.
        list.push({
          ...base,
          attributes: { person: { name: { firstName: `F${j}`, lastName: `L${j}` } } },
          segmentMembership: { ups: { [options.audience]: { status: j === 0 ? 'realized' : 'existing', lastQualificationTime: t } } },
        });
        inside = true;
      } else if (step === 3) {
        list.push({ ...base, segmentMembership: { ups: { [options.audience]: { status: 'exited', lastQualificationTime: t } } } });
        inside = false;
      } else if (step === 2) {
        list.push({ ...base, identityMap: { ecid: [{ id: `${profileId}-ecid-${j}` }] } });
      } else {
        list.push({ ...base, attributes: { person: { name: { firstName: `F${j}-${Math.floor(rand() * 1e6)}` } } } });
      }
    }
    lists.push(list);
  }
  return { perProfile: lists, events: interleave(lists, rand) };
}

/**
 * The fixture most backbone and pool test files share: a backbone and a recording receiver
 * started before the file's (or describe block's) tests, handed to `set`; after them every
 * CLI process is killed and both are stopped.
 *
 * @example
 * let bb: Backbone;
 * let rx: RecordingReceiver;
 * useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));
 */
export function useBackboneAndReceiver(set: (bb: Backbone, rx: RecordingReceiver) => void): void {
  let bb: Backbone | undefined;
  let rx: RecordingReceiver | undefined;
  beforeAll(async () => {
    bb = await startBackbone();
    rx = await startRecordingReceiver();
    set(bb, rx);
  });
  afterAll(async () => {
    await killAllCli();
    await rx?.close();
    await bb?.stop();
  });
}
