/**
 * Alerts (SPEC §10) against real servers: a signed webhook and a NATS subject get one raised
 * and one cleared message per condition; two workers sharing Redis alert once; an unreachable
 * channel neither blocks the evaluation nor the other channels; the config is validated.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { resolveConfig } from '../../src/config/load.js';
import type { AlertsConfig } from '../../src/config/schema.js';
import { openAlertChannels } from '../../src/observability/alert-channels.js';
import { MemoryAlertStateStore, readRule, startAlerts, type AlertMessage } from '../../src/observability/alerts.js';
import { RedisAlertStateStore } from '../../src/observability/alerts-redis.js';
import { MemoryFiguresStore, type FiguresDelta } from '../../src/observability/figures.js';
import { RedisFiguresStore } from '../../src/observability/figures-redis.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import { figureBucket } from '../../src/observability/metrics.js';
import { verifyWebhook } from '../../src/sinks/http/signing.js';
import { startNatsServer, type NatsServer } from '../support/nats-server.js';
import { closedPort } from '../support/receiver.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const silent = createLogger({ level: 'silent' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Hook {
  url: string;
  messages: AlertMessage[];
  /** Every message's signature verified. */
  allSigned: boolean;
  close(): Promise<void>;
}

async function startHook(): Promise<Hook> {
  const hook = { messages: [] as AlertMessage[], allSigned: true };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      const ok = verifyWebhook({
        secrets: [SECRET],
        id: String(req.headers['webhook-id']),
        timestamp: String(req.headers['webhook-timestamp']),
        body,
        signature: String(req.headers['webhook-signature'] ?? ''),
      });
      if (!ok || req.headers['content-type'] !== 'application/json') hook.allSigned = false;
      hook.messages.push(JSON.parse(body) as AlertMessage);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    messages: hook.messages,
    get allSigned() {
      return hook.allSigned;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const failures = (n: number, dataflowId = 'flow-1'): FiguresDelta => ({
  rejected: 0,
  flows: [{ dataflowId, counts: { received: n, exported: 0, excluded: 0, failed: n }, latency: {}, lastDeliveredAt: 0 }],
});

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

const alertsConfig = (url: string, extra: Partial<AlertsConfig> = {}): AlertsConfig => ({
  channels: [{ id: 'hook', kind: 'webhook', url, signing: { secret: SECRET }, timeoutMs: 2_000 }],
  rules: [{ id: 'failures', kind: 'failedRequests', threshold: 3, windowMs: 60_000, channels: ['hook'] }],
  evaluateEveryMs: 5_000,
  ...extra,
});

describe('alert rules', () => {
  it('reads failedRequests, failureRate (only from 20 exports) and latencyP95', () => {
    const fr = { id: 'r', kind: 'failedRequests' as const, threshold: 2, windowMs: 60_000, channels: [] as string[] };
    expect(readRule(fr, { exported: 9, failed: 1, latency: {} })).toMatchObject({ value: 1, firing: false });
    expect(readRule(fr, { exported: 0, failed: 2, latency: {} })).toMatchObject({ value: 2, firing: true, message: '2 requests stored as failed in the last 60 s' });
    const rate = { id: 'r', kind: 'failureRate' as const, threshold: 0.05, windowMs: 300_000, channels: [] as string[] };
    expect(readRule(rate, { exported: 10, failed: 9, latency: {} })?.firing).toBe(false);
    expect(readRule(rate, { exported: 18, failed: 2, latency: {} })).toMatchObject({ value: 0.1, firing: true });
    expect(readRule(rate, { exported: 99, failed: 1, latency: {} })?.firing).toBe(false);
    const slow = { id: 'r', kind: 'latencyP95' as const, thresholdMs: 1_000, windowMs: 300_000, channels: [] as string[] };
    expect(readRule(slow, { exported: 100, failed: 0, latency: { [figureBucket(50)]: 100 } })?.firing).toBe(false);
    expect(readRule(slow, { exported: 100, failed: 0, latency: { [figureBucket(50)]: 90, [figureBucket(5_000)]: 10 } })).toMatchObject({ firing: true });
  });
});

describe('alert config', () => {
  const base = {
    source: { kind: 'file', path: 'e.jsonl' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp', createdAt: 1, updatedAt: 2 }],
    destinations: [{ id: 'd', endpoint: 'http://127.0.0.1:9/x' }],
    dataflows: [{ id: 'flow-1', destination: 'd', audiences: ['aud-1'] }],
  };
  const problems = (alerts: unknown): string => {
    try {
      resolveConfig({ ...base, alerts }, { env: {} });
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  it('names the field of an unknown rule kind, an unknown channel, a NATS channel without JetStream, an unknown dataflow', () => {
    expect(problems({ rules: [{ id: 'x', kind: 'sometimes', windowMs: 60_000 }] })).toMatch(/alerts\.rules\[0\]\.kind/);
    expect(problems({ rules: [{ id: 'x', kind: 'failedRequests', threshold: 1, windowMs: 60_000, channels: ['nope'] }] })).toMatch(/alerts\.rules\[0\]\.channels\[0\]: unknown channel "nope"/);
    expect(problems({ channels: [{ id: 'bus', kind: 'nats', subject: 'a.b' }] })).toMatch(/alerts\.channels\[0\]\.kind: a nats channel needs source\.kind: jetstream/);
    expect(problems({ rules: [{ id: 'x', kind: 'failedRequests', threshold: 1, windowMs: 60_000, dataflows: ['flow-9'] }] })).toMatch(/alerts\.rules\[0\]\.dataflows\[0\]: unknown dataflow "flow-9"/);
    expect(problems({ rules: [{ id: 'x', kind: 'delay', thresholdMs: 0 }] })).toMatch(/alerts\.rules\[0\]\.thresholdMs/);
    expect(problems({ rules: [{ id: 'x', kind: 'delay', thresholdMs: 1_000, windowMs: 60_000 }] })).toMatch(/alerts\.rules\[0\]/);
    expect(problems({ rules: [{ id: 'x', kind: 'delay', thresholdMs: 900_000 }] })).toBe('');
    expect(problems({ channels: [{ id: 'h', kind: 'webhook', url: 'http://x/y' }], rules: [{ id: 'x', kind: 'failureRate', threshold: 0.1, windowMs: 60_000, channels: ['h'] }] })).toBe('');
  });
  it('keeps webhook signing secrets masked', () => {
    const c = resolveConfig({ ...base, alerts: { channels: [{ id: 'h', kind: 'webhook', url: 'http://x/y', signing: { secret: SECRET } }] } }, { env: {} });
    expect(c.secrets).toContain(SECRET);
  });
});

describe('alert engine against real servers', () => {
  let hook: Hook;
  let redis: RedisServer;
  let nats: NatsServer;
  beforeAll(async () => {
    [hook, redis, nats] = await Promise.all([startHook(), startRedisServer(), startNatsServer()]);
  });
  afterAll(async () => {
    await Promise.allSettled([hook?.close(), redis?.stop(), nats?.stop()]);
  });

  it('raises once and clears once, signed, on the webhook', async () => {
    hook.messages.length = 0;
    let now = Date.UTC(2026, 11, 5, 10, 0, 0);
    const figures = new MemoryFiguresStore();
    const config = alertsConfig(hook.url);
    const engine = startAlerts({ config, dataflowIds: ['flow-1'], figures, state: new MemoryAlertStateStore(), channels: openAlertChannels(config.channels, { logger: silent }), logger: silent, now: () => now, timer: false });
    await figures.add(failures(2), now);
    await engine.evaluate();
    await sleep(300);
    expect(hook.messages).toEqual([]);
    await figures.add(failures(1), now + 1_000);
    now += 5_000;
    await engine.evaluate();
    await engine.evaluate();
    await until(() => hook.messages.length >= 1);
    await sleep(300);
    expect(hook.messages).toHaveLength(1);
    expect(hook.messages[0]).toEqual({
      alertId: 'failures:flow-1', rule: 'failures', kind: 'failedRequests', dataflowId: 'flow-1', state: 'raised',
      at: new Date(now).toISOString(), value: 3, threshold: 3, windowMs: 60_000, message: '3 requests stored as failed in the last 60 s',
    });
    now += 70_000; // the failures left the window
    await engine.evaluate();
    await engine.evaluate();
    await until(() => hook.messages.length >= 2);
    await sleep(300);
    expect(hook.messages.map((m) => [m.alertId, m.state])).toEqual([['failures:flow-1', 'raised'], ['failures:flow-1', 'cleared']]);
    expect(hook.allSigned).toBe(true);
    await engine.close();
  });

  it('alerts once for a pool of two workers sharing Redis', async () => {
    hook.messages.length = 0;
    const now = Date.now();
    const config = alertsConfig(hook.url);
    const workers = [0, 1].map(() => {
      const figures = new RedisFiguresStore({ url: redis.url, keyPrefix: 'pool2:', pool: 'p' });
      const state = new RedisAlertStateStore({ url: redis.url, keyPrefix: 'pool2:', pool: 'p' });
      return { figures, state, engine: startAlerts({ config, dataflowIds: ['flow-1'], figures, state, channels: openAlertChannels(config.channels, { logger: silent }), logger: silent, now: () => now, timer: false }) };
    });
    // Each worker stored some of the failures: only the pool's sum reaches the threshold.
    await workers[0].figures.add(failures(2), now - 2_000);
    await workers[1].figures.add(failures(1), now - 1_000);
    await Promise.all(workers.map((w) => w.engine.evaluate()));
    await Promise.all(workers.map((w) => w.engine.evaluate()));
    await until(() => hook.messages.length >= 1);
    await sleep(500);
    expect(hook.messages.map((m) => m.state)).toEqual(['raised']);
    expect(await workers[1].state.active()).toMatchObject([{ alertId: 'failures:flow-1', value: 3 }]);
    // A worker whose evaluation started before another's clear cannot raise it again from that stale reading.
    const [a, b] = workers.map((w) => w.state);
    const alert = (await a.active())[0];
    expect(await a.clear(alert.alertId, now + 10)).toMatchObject({ alertId: alert.alertId });
    expect(await b.clear(alert.alertId, now + 11)).toBeUndefined();
    expect(await b.raise(alert, now + 9)).toBe(false);
    expect(await b.active()).toEqual([]);
    expect(await b.raise(alert, now + 12)).toBe(true);
    expect(await a.raise(alert, now + 13)).toBe(false);
    for (const w of workers) {
      await w.engine.close();
      await w.figures.close();
      await w.state.close();
    }
  });

  it('publishes on a NATS channel', async () => {
    const nc = await connect({ servers: nats.url });
    const got: AlertMessage[] = [];
    const sub = nc.subscribe('hd.alerts');
    void (async () => {
      for await (const m of sub) got.push(m.json<AlertMessage>());
    })();
    await nc.flush();
    const now = Date.now();
    const config: AlertsConfig = {
      channels: [{ id: 'bus', kind: 'nats', subject: 'hd.alerts' }],
      rules: [{ id: 'slow', kind: 'latencyP95', thresholdMs: 1_000, windowMs: 60_000, channels: ['bus'] }],
      evaluateEveryMs: 5_000,
    };
    const figures = new MemoryFiguresStore();
    await figures.add({ rejected: 0, flows: [{ dataflowId: 'flow-1', counts: { received: 20, exported: 20, excluded: 0, failed: 0 }, latency: { [figureBucket(4_000)]: 20 }, lastDeliveredAt: now }] }, now);
    const engine = startAlerts({ config, dataflowIds: ['flow-1'], figures, state: new MemoryAlertStateStore(), channels: openAlertChannels(config.channels, { logger: silent, natsServers: [nats.url] }), logger: silent, now: () => now, timer: false });
    await engine.evaluate();
    await until(() => got.length >= 1);
    expect(got[0]).toMatchObject({ alertId: 'slow:flow-1', kind: 'latencyP95', state: 'raised', threshold: 1_000 });
    expect(got[0].value).toBeGreaterThan(3_500);
    await engine.close();
    await nc.close();
  });

  it('an unreachable channel blocks neither the evaluation nor the other channels; it is logged and retried', async () => {
    hook.messages.length = 0;
    const warnings: string[] = [];
    const logger = { warn: (_o: unknown, msg: string) => warnings.push(msg), info: () => {}, debug: () => {}, error: () => {} } as unknown as Logger;
    const dead = `http://127.0.0.1:${await closedPort()}/hook`;
    const now = Date.now();
    const config: AlertsConfig = {
      channels: [
        { id: 'dead', kind: 'webhook', url: dead, timeoutMs: 1_000 },
        { id: 'hook', kind: 'webhook', url: hook.url, signing: { secret: SECRET }, timeoutMs: 1_000 },
      ],
      rules: [{ id: 'failures', kind: 'failedRequests', threshold: 1, windowMs: 60_000, channels: ['dead', 'hook'] }],
      evaluateEveryMs: 5_000,
    };
    const figures = new MemoryFiguresStore();
    await figures.add(failures(1), now);
    const engine = startAlerts({ config, dataflowIds: ['flow-1'], figures, state: new MemoryAlertStateStore(), channels: openAlertChannels(config.channels, { logger, retry: { firstDelayMs: 50 } }), logger, now: () => now, timer: false });
    const t0 = Date.now();
    await engine.evaluate();
    expect(Date.now() - t0).toBeLessThan(500);
    await until(() => hook.messages.length >= 1);
    await until(() => warnings.filter((w) => w === 'alert channel unreachable; retrying').length >= 2);
    expect(warnings).toContain('alert raised: 1 requests stored as failed in the last 60 s');
    await engine.close();
  });
});
