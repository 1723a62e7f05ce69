import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, ConfigErrors } from '../../src/errors.js';
import { DEFAULTS } from '../../src/config/schema.js';
import { loadConfigFile, resolveConfig, type AppConfig } from '../../src/config/load.js';
import { httpThreadOf } from '../../src/worker/runtime.js';
import { generatePki, type TestPki } from '../support/pki.js';

let dir: string;
let pki: TestPki;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hd-config-'));
  pki = await generatePki({ passphrase: 'Key-Passphrase-7c1d' });
});

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await pki?.cleanup();
});

/** Writes `text` to `name` inside a fresh folder of the temp dir and returns the file's path. */
let n = 0;
function writeConfig(name: string, text: string): { file: string; folder: string } {
  const folder = join(dir, `case-${++n}`);
  mkdirSync(folder, { recursive: true });
  const file = join(folder, name);
  writeFileSync(file, text);
  return { file, folder };
}

/** The smallest valid raw config. */
type Raw = {
  [k: string]: unknown;
  audiences: Array<Record<string, unknown>>;
  destinations: Array<Record<string, unknown>>;
  dataflows: Array<Record<string, unknown>>;
};
function minimal(): Raw {
  return {
    source: { kind: 'file', path: 'events.jsonl' },
    audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 2 }],
    destinations: [{ id: 'dest-1', endpoint: 'https://collector.example.com/profiles' }],
    dataflows: [{ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] }],
  };
}

/** Resolves with an empty environment (unless given) and a fixed base folder. */
function resolve(raw: unknown, env: NodeJS.ProcessEnv = {}, baseDir = '/base'): AppConfig {
  return resolveConfig(raw, { env, baseDir });
}

/** Runs `fn`, which must throw ConfigError or ConfigErrors, and returns every ConfigError. */
function issues(fn: () => unknown): ConfigError[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigErrors) {
      expect(err.code).toBe('ERR_CONFIG');
      return err.issues;
    }
    expect(err).toBeInstanceOf(ConfigError);
    return [err as ConfigError];
  }
  throw new Error('expected a config error, nothing was thrown');
}

/** The only problem `fn` reports. */
function onlyIssue(fn: () => unknown): ConfigError {
  const all = issues(fn);
  expect(all.map((i) => i.message)).toHaveLength(1);
  return all[0];
}

/** Every message `fn` reports, joined (to check that none echoes a secret). */
function allText(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    const e = err as Error & { issues?: Error[] };
    return [e.message, ...(e.issues ?? []).map((i) => i.message)].join('\n');
  }
  throw new Error('expected an error, nothing was thrown');
}

const SPEC_YAML = `
source:
  kind: file
  path: events.jsonl
store:
  kind: memory
failedRequests:
  kind: file
  path: failed.jsonl
audiences:
  - { id: aud-1, name: "First name equals John", mergePolicyId: mp-1,
      createdAt: 1648553325000, updatedAt: 1648553330000, origin: segmentation }
destinations:
  - id: dest-1
    name: My analytics endpoint
    endpoint: https://collector.example.com/profiles
    headers: "x-api-key:\${API_KEY},x-tenant:acme"
    queryParameters: "source=aep&v=2"
    auth: { type: bearer, token: "\${BEARER_TOKEN}" }
    includeSegmentNames: true
    includeSegmentTimestamps: true
    retry: { minDelayMs: 1000, maxDelayMs: 60000 }   # two retries always; delays are tunable
    timeoutMs: 10000
dataflows:
  - id: flow-1
    destination: dest-1
    audiences: [ { id: aud-1, mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570000 } ]
    attributes: [ person.name.firstName, person.name.lastName, person.birthDate, personalEmail.address ]
    rateLimit: 10000
`;

const SPEC_ENV = { API_KEY: 'api-key-3f9a1c', BEARER_TOKEN: 'bearer-token-77d2e0' };

function expectSpecExample(cfg: AppConfig, folder: string): void {
  expect(cfg.source).toEqual({ kind: 'file', path: join(folder, 'events.jsonl') });
  expect(cfg.store).toEqual({ kind: 'memory' });
  expect(cfg.failedRequests).toEqual({
    kind: 'file',
    path: join(folder, 'failed.jsonl'),
    rejectedPath: join(folder, 'rejected.jsonl'),
  });
  expect(cfg.audiences).toEqual([
    {
      id: 'aud-1',
      name: 'First name equals John',
      mergePolicyId: 'mp-1',
      createdAt: 1648553325000,
      updatedAt: 1648553330000,
      origin: 'segmentation',
    },
  ]);
  expect(cfg.destinations).toHaveLength(1);
  const d = cfg.destinations[0];
  expect(d).toMatchObject({
    id: 'dest-1',
    name: 'My analytics endpoint',
    url: 'https://collector.example.com/profiles?source=aep&v=2',
    headers: { 'x-api-key': 'api-key-3f9a1c', 'x-tenant': 'acme' },
    auth: { type: 'bearer', token: 'bearer-token-77d2e0' },
    includeSegmentNames: true,
    includeSegmentTimestamps: true,
    retry: { minDelayMs: 1000, maxDelayMs: 60000, retryAfterMaxMs: DEFAULTS.retryAfterMaxMs },
    timeoutMs: 10000,
  });
  expect(d.tls).toBeUndefined();
  expect(d.signing).toBeUndefined();
  expect(cfg.dataflows).toEqual([
    {
      id: 'flow-1',
      destinationId: 'dest-1',
      audiences: [{ id: 'aud-1', mappingCreatedAt: 1649856570000, mappingUpdatedAt: 1649856570000 }],
      attributes: ['person.name.firstName', 'person.name.lastName', 'person.birthDate', 'personalEmail.address'],
      includeSegmentNames: true,
      includeSegmentTimestamps: true,
      rateLimit: 10000,
    },
  ]);
  expect(cfg.secrets).toEqual(expect.arrayContaining(['api-key-3f9a1c', 'bearer-token-77d2e0']));
}

describe('loadConfigFile — the SPEC §11 example', () => {
  it('YAML: resolves, with relative paths against the config file folder', () => {
    const { file, folder } = writeConfig('config.yaml', SPEC_YAML);
    const cfg = loadConfigFile(file, { env: SPEC_ENV });
    expect(cfg.configPath).toBe(file);
    expectSpecExample(cfg, folder);
  });

  it('JSON: the same configuration resolves to the same result', async () => {
    const { parse } = await import('yaml');
    const { file, folder } = writeConfig('config.json', JSON.stringify(parse(SPEC_YAML), null, 2));
    const cfg = loadConfigFile(file, { env: SPEC_ENV });
    expect(cfg.configPath).toBe(file);
    expectSpecExample(cfg, folder);
    const yaml = writeConfig('config.yml', SPEC_YAML);
    const fromYaml = loadConfigFile(yaml.file, { env: SPEC_ENV });
    // Same shape apart from where it was loaded from.
    expect({ ...cfg, configPath: undefined, source: undefined, failedRequests: undefined }).toEqual({
      ...fromYaml,
      configPath: undefined,
      source: undefined,
      failedRequests: undefined,
    });
  });

  it('baseDir overrides the config file folder', () => {
    const { file } = writeConfig('config.yaml', SPEC_YAML);
    const cfg = loadConfigFile(file, { env: SPEC_ENV, baseDir: '/elsewhere' });
    expect(cfg.source).toEqual({ kind: 'file', path: '/elsewhere/events.jsonl' });
  });

  it('a missing file, bad YAML and bad JSON are ConfigErrors', () => {
    expect(onlyIssue(() => loadConfigFile(join(dir, 'nope.yaml'))).message).toMatch(/^cannot read config file .*nope\.yaml: ENOENT$/);
    const yaml = writeConfig('bad.yaml', 'source: [unclosed\n');
    expect(onlyIssue(() => loadConfigFile(yaml.file)).message).toMatch(/is not valid YAML/);
    const json = writeConfig('bad.json', '{"source": ');
    expect(onlyIssue(() => loadConfigFile(json.file)).message).toMatch(/is not valid JSON/);
  });
});

describe('defaults', () => {
  it('a minimal JSON config gets every documented default', () => {
    const { file, folder } = writeConfig('min.json', JSON.stringify(minimal()));
    const cfg = loadConfigFile(file, { env: {} });
    // The embedded default is durable: the local store beside the config file, failed requests in it.
    expect(cfg.store).toEqual({ kind: 'local', path: join(folder, 'http-destination.state') });
    expect(cfg.failedRequests).toEqual({ kind: 'local', path: join(folder, 'http-destination.state') });
    expect(cfg.audiences[0].origin).toBe('segmentation');
    const d = cfg.destinations[0];
    expect(d.url).toBe('https://collector.example.com/profiles');
    expect(d.headers).toEqual({});
    expect(d.auth).toEqual({ type: 'none' });
    expect(d.retry).toEqual({ minDelayMs: 1000, maxDelayMs: 60000, retryAfterMaxMs: 120000 });
    expect(d.timeoutMs).toBe(10000);
    expect(d.connections).toBe(64);
    expect(d.includeSegmentNames).toBe(false);
    expect(d.includeSegmentTimestamps).toBe(false);
    expect(d.tls).toBeUndefined();
    expect(d.signing).toBeUndefined();
    expect(cfg.dataflows[0]).toEqual({
      id: 'flow-1',
      destinationId: 'dest-1',
      audiences: [{ id: 'aud-1' }],
      attributes: [],
      includeSegmentNames: false,
      includeSegmentTimestamps: false,
      rateLimit: 10000,
    });
    expect(cfg.worker).toEqual({ maxInFlight: 512, drainTimeoutMs: 30000, maxEventBytes: 1048576, maxSnapshotBytes: 1048576, startupTimeoutMs: 30000 });
    expect(cfg.log).toEqual({ level: 'info' });
    expect(cfg.secrets).toEqual([]);
  });

  it('worker.maxSnapshotBytes: an integer from 1 KiB to 256 MiB, the field named', () => {
    for (const bad of [0, 1023, 268_435_457, 1.5, '1MB']) {
      const raw = minimal() as Raw & { worker?: unknown };
      raw.worker = { maxSnapshotBytes: bad };
      expect(onlyIssue(() => resolve(raw)).message).toMatch(/^worker\.maxSnapshotBytes: /);
    }
    const raw = minimal() as Raw & { worker?: unknown };
    raw.worker = { maxSnapshotBytes: 4096 };
    expect(resolve(raw).worker.maxSnapshotBytes).toBe(4096);
  });

  it('worker.httpThread: unset by default (also when worker is given without it), true and false accepted, a wrong type names the field', () => {
    const withWorker = minimal() as Raw & { worker?: unknown };
    withWorker.worker = { maxInFlight: 64 };
    expect(resolve(withWorker).worker.httpThread).toBeUndefined();
    for (const v of [true, false]) {
      const raw = minimal() as Raw & { worker?: unknown };
      raw.worker = { httpThread: v };
      expect(resolve(raw).worker.httpThread).toBe(v);
    }
    for (const bad of ['yes', 1, null]) {
      const raw = minimal() as Raw & { worker?: unknown };
      raw.worker = { httpThread: bad };
      expect(onlyIssue(() => resolve(raw)).message).toMatch(/^worker\.httpThread: /);
    }
  });

  it('httpThreadOf: unset, the thread for every store (local, memory, redis); set, as set', () => {
    const on = (store: unknown, httpThread?: boolean): boolean => {
      const raw = minimal() as Raw & { worker?: unknown; store?: unknown };
      raw.store = store;
      if (store && (store as { kind: string }).kind === 'redis') raw.source = { kind: 'jetstream' };
      if (httpThread !== undefined) raw.worker = { httpThread };
      return httpThreadOf(resolve(raw));
    };
    expect(on(undefined)).toBe(true); // the embedded default: the local store
    expect(on({ kind: 'memory' })).toBe(true);
    expect(on({ kind: 'redis', url: 'redis://127.0.0.1:6379' })).toBe(true); // a pool: the thread checks each send slot's age
    expect(on({ kind: 'redis', url: 'redis://127.0.0.1:6379' }, false)).toBe(false);
    expect(on({ kind: 'memory' }, false)).toBe(false);
  });

  it('oauth2-client-credentials defaults credentialsType to body-form', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'oauth2-client-credentials', accessTokenUrl: 'https://idp.example/token', clientId: 'c', clientSecret: 'cs-123456' };
    expect(resolve(raw).destinations[0].auth).toEqual({
      type: 'oauth2-client-credentials',
      accessTokenUrl: 'https://idp.example/token',
      clientId: 'c',
      clientSecret: 'cs-123456',
      credentialsType: 'body-form',
    });
  });

  it('a rejectedPath defaults beside a failed file in a sub-folder; both resolve against the config folder', () => {
    const raw = minimal();
    raw.failedRequests = { kind: 'file', path: 'out/failed.jsonl' };
    expect(resolve(raw).failedRequests).toEqual({
      kind: 'file',
      path: '/base/out/failed.jsonl',
      rejectedPath: '/base/out/rejected.jsonl',
    });
    raw.failedRequests = { kind: 'file', path: '/abs/failed.jsonl', rejectedPath: 'rej/r.jsonl' };
    expect(resolve(raw).failedRequests).toEqual({
      kind: 'file',
      path: '/abs/failed.jsonl',
      rejectedPath: '/base/rej/r.jsonl',
    });
  });

  it('jetstream failedRequests take the jetstream source servers by default', () => {
    const raw = minimal();
    raw.source = { kind: 'jetstream', servers: 'nats://a:4222, nats://b:4222' };
    raw.failedRequests = { kind: 'jetstream' };
    const cfg = resolve(raw);
    expect(cfg.source).toEqual({
      kind: 'jetstream',
      servers: ['nats://a:4222', 'nats://b:4222'],
      stream: 'PROFILES',
      subject: 'profiles.updates',
      durable: 'http-destination',
      ackWaitMs: 30_000,
      batchSize: 256,
      partitions: 16,
      leaseMs: 5_000,
    });
    expect(cfg.failedRequests).toEqual({
      kind: 'jetstream',
      servers: ['nats://a:4222', 'nats://b:4222'],
      stream: 'HTTP_DESTINATION_FAILED',
      rejectedStream: 'HTTP_DESTINATION_REJECTED',
    });
  });
});

describe('errors name the field path', () => {
  it('a missing required field: destinations[0].auth.clientSecret: required', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'oauth2-client-credentials', accessTokenUrl: 'https://idp.example/token', clientId: 'c' };
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('destinations[0].auth.clientSecret');
    expect(err.message).toBe('destinations[0].auth.clientSecret: required');
  });

  it('backfill pace and page size of a jetstream source: positive, named by their path', () => {
    const raw = minimal();
    raw.source = { kind: 'jetstream', backfillPublishPerSecond: 0 };
    expect(onlyIssue(() => resolve(raw)).path).toBe('source.backfillPublishPerSecond');
    raw.source = { kind: 'jetstream', backfillPageSize: 1.5 };
    expect(onlyIssue(() => resolve(raw)).path).toBe('source.backfillPageSize');
    raw.source = { kind: 'jetstream', backfillPageSize: 50, backfillPublishPerSecond: 500 };
    expect(resolve(raw).source).toMatchObject({ backfillPageSize: 50, backfillPublishPerSecond: 500 });
  });

  it('missing top-level sections are "required"', () => {
    const raw: Record<string, unknown> = minimal();
    delete raw.destinations;
    delete raw.source;
    expect(issues(() => resolve(raw)).map((i) => i.message).sort()).toEqual(['destinations: required', 'source: required']);
  });

  it('unknown keys at the top level and nested', () => {
    const raw = minimal();
    raw.bar = 1;
    raw.destinations[0].foo = 'x';
    raw.destinations[0].auth = { type: 'bearer', token: 'tok-123456', extra: true };
    raw.destinations[0].tls = { rejectUnauthorized: true, certFile: 'x' };
    raw.dataflows[0].rate = 5;
    expect(issues(() => resolve(raw)).map((i) => i.message).sort()).toEqual(
      [
        'bar: unknown key',
        'destinations[0].foo: unknown key',
        'destinations[0].auth.extra: unknown key',
        'destinations[0].tls.certFile: unknown key',
        'dataflows[0].rate: unknown key',
      ].sort(),
    );
    const foo = issues(() => resolve(raw)).find((i) => i.message === 'destinations[0].foo: unknown key');
    expect(foo?.path).toBe('destinations[0].foo');
  });

  it('a bad auth.type names destinations[i].auth.type and lists the allowed values', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'basic', token: 'x' };
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('destinations[0].auth.type');
    for (const t of ['none', 'bearer', 'oauth2-client-credentials', 'oauth2-password']) expect(err.message).toContain(t);
  });

  it('a bad credentialsType names destinations[i].auth.credentialsType', () => {
    const raw = minimal();
    raw.destinations[0].auth = {
      type: 'oauth2-client-credentials',
      accessTokenUrl: 'https://idp.example/token',
      clientId: 'c',
      clientSecret: 'cs-123456',
      credentialsType: 'digest',
    };
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('destinations[0].auth.credentialsType');
    expect(err.message).toMatch(/^destinations\[0\]\.auth\.credentialsType: .*body-form.*basic/);
  });

  it('store.kind: local resolves its path against the config folder, and failedRequests.kind: local follows it', () => {
    const raw = minimal();
    raw.store = { kind: 'local', path: 'data/state' };
    raw.failedRequests = { kind: 'local' };
    const cfg = resolveConfig(raw, { baseDir: '/base', env: {} });
    expect(cfg.store).toEqual({ kind: 'local', path: '/base/data/state' });
    expect(cfg.failedRequests).toEqual({ kind: 'local', path: '/base/data/state' });
    raw.store = { kind: 'local', path: 'x', colour: 'blue' };
    expect(onlyIssue(() => resolve(raw)).path).toBe('store.colour');
    raw.store = { kind: 'local', path: 'x', profileCacheBytes: 1_048_576 };
    expect(resolveConfig(raw, { baseDir: '/base', env: {} }).store).toEqual({ kind: 'local', path: '/base/x', profileCacheBytes: 1_048_576 });
    raw.store = { kind: 'local', profileCacheBytes: -1 };
    expect(onlyIssue(() => resolve(raw)).path).toBe('store.profileCacheBytes');
  });

  it('a bad store.kind names store.kind', () => {
    const raw = minimal();
    raw.store = { kind: 'mongo' };
    expect(onlyIssue(() => resolve(raw)).path).toBe('store.kind');
  });

  it.each([
    [10001, 'dataflows[0].rateLimit: must be at most 10000'],
    [0, undefined],
    [-5, undefined],
  ])('rateLimit %s is rejected naming dataflows[0].rateLimit', (rateLimit, message) => {
    const raw = minimal();
    raw.dataflows[0].rateLimit = rateLimit;
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('dataflows[0].rateLimit');
    if (message) expect(err.message).toBe(message);
  });

  it('rateLimit 10000 and 1 are accepted', () => {
    for (const rateLimit of [10000, 1]) {
      const raw = minimal();
      raw.dataflows[0].rateLimit = rateLimit;
      expect(resolve(raw).dataflows[0].rateLimit).toBe(rateLimit);
    }
  });

  it.each(['ftp://collector.example.com/p', 'not a url', 'mailto:a@b.c', 'collector.example.com/p', ''])(
    'endpoint %j is not http/https',
    (endpoint) => {
      const raw = minimal();
      raw.destinations[0].endpoint = endpoint;
      const all = issues(() => resolve(raw));
      expect(all.length).toBeGreaterThan(0);
      for (const err of all) expect(err.path).toBe('destinations[0].endpoint');
      if (endpoint !== '') expect(all.map((e) => e.message)).toEqual(['destinations[0].endpoint: must be an http:// or https:// URL']);
    },
  );

  it('http:// and https:// endpoints are accepted', () => {
    const raw = minimal();
    raw.destinations[0].endpoint = 'http://127.0.0.1:8080/in';
    expect(resolve(raw).destinations[0].url).toBe('http://127.0.0.1:8080/in');
  });

  it.each(['ftp://idp.example/token', 'not a url'])('accessTokenUrl %j is not http/https', (accessTokenUrl) => {
    for (const auth of [
      { type: 'oauth2-client-credentials', accessTokenUrl, clientId: 'c', clientSecret: 'cs-123456' },
      { type: 'oauth2-password', accessTokenUrl, clientId: 'c', clientSecret: 'cs-123456', username: 'u', password: 'pw-123456' },
    ]) {
      const raw = minimal();
      raw.destinations[0].auth = auth;
      const err = onlyIssue(() => resolve(raw));
      expect(err.path).toBe('destinations[0].auth.accessTokenUrl');
      expect(err.message).toBe('destinations[0].auth.accessTokenUrl: must be an http:// or https:// URL');
    }
  });

  it('a header value with CR/LF (string form) names the header item', () => {
    const raw = minimal();
    raw.destinations[0].headers = 'x-a:1,x-b:2\r\nx-injected:1';
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('destinations[0].headers[1]');
    expect(err.message).toBe('destinations[0].headers[1]: header names and values must not contain CR or LF');
  });

  it('a header name with LF (string form) names the header item', () => {
    const raw = minimal();
    raw.destinations[0].headers = 'x-a\n:1';
    expect(onlyIssue(() => resolve(raw)).path).toBe('destinations[0].headers[0]');
  });

  it('a header value with CR/LF (map form) names the header', () => {
    const raw = minimal();
    raw.destinations[0].headers = { 'x-a': '1', 'x-b': 'two\nx-injected: 1' };
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('destinations[0].headers.x-b');
    expect(err.message).toBe('destinations[0].headers.x-b: header names and values must not contain CR or LF');
  });

  it('a header with CR/LF written in a YAML file is caught too', () => {
    const { file } = writeConfig(
      'config.yaml',
      `${SPEC_YAML.replace('headers: "x-api-key:${API_KEY},x-tenant:acme"', 'headers: "x-tenant:acme\\r\\nx-injected: 1"')}`,
    );
    const err = onlyIssue(() => loadConfigFile(file, { env: SPEC_ENV }));
    expect(err.path).toBe('destinations[0].headers[0]');
  });

  it('a dataflow naming an unknown destination', () => {
    const raw = minimal();
    raw.dataflows[0].destination = 'dest-nope';
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('dataflows[0].destination');
    expect(err.message).toMatch(/^dataflows\[0\]\.destination: unknown destination "dest-nope"/);
  });

  it('a dataflow naming an unknown audience (string and object form)', () => {
    const raw = minimal();
    raw.dataflows[0].audiences = ['aud-1', 'aud-nope', { id: 'aud-gone', mappingCreatedAt: 1 }];
    expect(issues(() => resolve(raw)).map((i) => i.path)).toEqual(['dataflows[0].audiences[1].id', 'dataflows[0].audiences[2].id']);
  });

  it('duplicate ids in audiences, destinations and dataflows', () => {
    const raw = minimal();
    raw.audiences.push({ ...raw.audiences[0] });
    raw.destinations.push({ id: 'dest-1', endpoint: 'https://other.example/p' });
    raw.dataflows.push({ id: 'flow-1', destination: 'dest-1', audiences: ['aud-1'] });
    const all = issues(() => resolve(raw));
    expect(all.map((i) => i.path).sort()).toEqual(['audiences[1].id', 'dataflows[1].id', 'destinations[1].id']);
    expect(all.find((i) => i.path === 'destinations[1].id')?.message).toBe('destinations[1].id: duplicate id "dest-1"');
  });

  it('retry.minDelayMs above retry.maxDelayMs', () => {
    const raw = minimal();
    raw.destinations[0].retry = { minDelayMs: 5000, maxDelayMs: 1000 };
    expect(onlyIssue(() => resolve(raw)).path).toBe('destinations[0].retry.minDelayMs');
  });

  it('several problems are reported together in one ConfigErrors (schema stage)', () => {
    const raw = minimal();
    raw.destinations[0].endpoint = 'ftp://x';
    raw.destinations[0].auth = { type: 'bearer' };
    raw.dataflows[0].rateLimit = 20000;
    raw.extra = true;
    let caught: unknown;
    try {
      resolve(raw);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigErrors);
    const e = caught as ConfigErrors;
    expect(e.issues.map((i) => i.path).sort()).toEqual(
      ['destinations[0].endpoint', 'destinations[0].auth.token', 'dataflows[0].rateLimit', 'extra'].sort(),
    );
    for (const i of e.issues) expect(e.message.split('\n')).toContain(i.message);
  });

  it('several problems are reported together in one ConfigErrors (cross-field stage)', () => {
    const raw = minimal();
    raw.destinations.push({ id: 'dest-2', endpoint: 'https://b.example/p', headers: { 'x-b': 'a\nb' } });
    raw.destinations.push({ id: 'dest-1', endpoint: 'https://c.example/p' });
    raw.destinations.push({ id: 'dest-4', endpoint: 'https://d.example/p', tls: { ca: 'missing-ca.pem' } });
    raw.dataflows.push({ id: 'flow-2', destination: 'dest-9', audiences: ['aud-9'] });
    let caught: unknown;
    try {
      resolve(raw, {}, dir);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigErrors);
    expect((caught as ConfigErrors).issues.map((i) => i.path).sort()).toEqual(
      [
        'destinations[2].id',
        'destinations[1].headers.x-b',
        'destinations[3].tls.ca',
        'dataflows[1].destination',
        'dataflows[1].audiences[0].id',
      ].sort(),
    );
  });
});

describe('tls', () => {
  function withTls(tls: Record<string, unknown>): Raw {
    const raw = minimal();
    raw.destinations[0].tls = tls;
    return raw;
  }

  it('reads cert, key and ca relative to the config file folder; verification stays on by default', () => {
    const { file } = writeConfig(
      'config.json',
      JSON.stringify(withTls({ cert: 'client.crt', key: 'client.key', ca: 'ca.crt' })),
    );
    // The TLS files live in the PKI folder; point the config at it with relative paths.
    const cfg = loadConfigFile(file, { env: {}, baseDir: pki.dir });
    const tls = cfg.destinations[0].tls;
    expect(tls?.cert?.toString()).toBe(pki.client.cert);
    expect(tls?.key?.toString()).toBe(pki.client.key);
    expect(tls?.ca?.toString()).toBe(pki.ca.cert);
    expect(tls?.rejectUnauthorized).toBe(true);
    expect(tls?.passphrase).toBeUndefined();
  });

  it('relative tls paths resolve against the config file folder itself', () => {
    const { file, folder } = writeConfig('config.yaml', '');
    writeFileSync(join(folder, 'ca.pem'), pki.ca.cert);
    writeFileSync(file, JSON.stringify(withTls({ ca: 'ca.pem', rejectUnauthorized: false })));
    const tls = loadConfigFile(file, { env: {} }).destinations[0].tls;
    expect(tls?.ca?.toString()).toBe(pki.ca.cert);
    expect(tls?.rejectUnauthorized).toBe(false);
  });

  it('an encrypted key with the right passphrase loads; the passphrase and key are secrets', () => {
    const cfg = resolve(
      withTls({ cert: pki.encryptedClient.certPath, key: pki.encryptedClient.keyPath, passphrase: pki.encryptedClient.passphrase }),
    );
    expect(cfg.destinations[0].tls?.passphrase).toBe('Key-Passphrase-7c1d');
    expect(cfg.secrets).toContain('Key-Passphrase-7c1d');
    expect(cfg.secrets).toContain(pki.encryptedClient.key);
  });

  it('cert without key names tls.key; key without cert names tls.cert', () => {
    const a = onlyIssue(() => resolve(withTls({ cert: pki.client.certPath })));
    expect(a.path).toBe('destinations[0].tls.key');
    const b = onlyIssue(() => resolve(withTls({ key: pki.client.keyPath })));
    expect(b.path).toBe('destinations[0].tls.cert');
  });

  it('a missing tls file: destinations[0].tls.ca: cannot read file …', () => {
    const err = onlyIssue(() => resolve(withTls({ ca: 'no-such-ca.pem' }), {}, pki.dir));
    expect(err.path).toBe('destinations[0].tls.ca');
    expect(err.message).toMatch(/^destinations\[0\]\.tls\.ca: cannot read file no-such-ca\.pem/);
    const cert = onlyIssue(() => resolve(withTls({ cert: 'nope.crt', key: 'client.key' }), {}, pki.dir));
    expect(cert.path).toBe('destinations[0].tls.cert');
    expect(cert.message).toMatch(/^destinations\[0\]\.tls\.cert: cannot read file nope\.crt/);
  });

  it('an encrypted key with a wrong passphrase names tls.passphrase and does not echo it', () => {
    const err = onlyIssue(() =>
      resolve(withTls({ cert: pki.encryptedClient.certPath, key: pki.encryptedClient.keyPath, passphrase: 'Wrong-Pass-5e5e' })),
    );
    expect(err.path).toBe('destinations[0].tls.passphrase');
    expect(err.message).not.toContain('Wrong-Pass-5e5e');
    expect(err.message).not.toContain('Key-Passphrase-7c1d');
  });

  it('an encrypted key without a passphrase names tls.passphrase', () => {
    const err = onlyIssue(() => resolve(withTls({ cert: pki.encryptedClient.certPath, key: pki.encryptedClient.keyPath })));
    expect(err.path).toBe('destinations[0].tls.passphrase');
    expect(err.message).toMatch(/passphrase is required/);
  });

  it('a key that does not match the cert names tls.key and does not echo key material', () => {
    const err = onlyIssue(() => resolve(withTls({ cert: pki.client.certPath, key: pki.otherClient.keyPath })));
    expect(err.path).toBe('destinations[0].tls.key');
    expect(err.message).not.toContain('PRIVATE KEY');
  });

  it('a cert file that is not a certificate names tls.cert', () => {
    const err = onlyIssue(() => resolve(withTls({ cert: pki.client.keyPath, key: pki.client.keyPath })));
    expect(err.path).toBe('destinations[0].tls.cert');
  });

  it('a ca file that is not a certificate names tls.ca', () => {
    // A private key (or any non-certificate file) given as the CA must stop the start, like a
    // bad cert does; otherwise it only shows as a TLS handshake failure at the first export.
    const err = onlyIssue(() => resolve(withTls({ ca: pki.client.keyPath })));
    expect(err.path).toBe('destinations[0].tls.ca');
  });
});

describe('${ENV} substitution', () => {
  it('replaces variables in any string, whole or in part, at any depth', () => {
    const raw = minimal();
    raw.source = { kind: 'file', path: '${DATA_DIR}/events.jsonl' };
    raw.audiences[0].name = 'Audience ${AUD_NAME}';
    raw.destinations[0].endpoint = 'https://${HOST}/profiles';
    raw.destinations[0].headers = { 'x-tenant': '${TENANT}' };
    raw.dataflows[0].attributes = ['person.name', '${ATTR}'];
    const cfg = resolve(raw, {
      DATA_DIR: '/data',
      AUD_NAME: 'Johns',
      HOST: 'collector.example.com:8443',
      TENANT: 'acme-tenant',
      ATTR: 'person.birthDate',
    });
    expect(cfg.source).toEqual({ kind: 'file', path: '/data/events.jsonl' });
    expect(cfg.audiences[0].name).toBe('Audience Johns');
    expect(cfg.destinations[0].url).toBe('https://collector.example.com:8443/profiles');
    expect(cfg.destinations[0].headers).toEqual({ 'x-tenant': 'acme-tenant' });
    expect(cfg.dataflows[0].attributes).toEqual(['person.name', 'person.birthDate']);
    // Every substituted value is remembered as a secret.
    expect(cfg.secrets).toEqual(
      expect.arrayContaining(['/data', 'Johns', 'collector.example.com:8443', 'acme-tenant', 'person.birthDate']),
    );
  });

  it('an unset variable is a ConfigError naming the field', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'bearer', token: '${X}' };
    const err = onlyIssue(() => resolve(raw, { OTHER: 'y' }));
    expect(err.path).toBe('destinations[0].auth.token');
    expect(err.message).toBe('destinations[0].auth.token: environment variable X is not set');
  });

  it('an unset variable inside an array names the item', () => {
    const raw = minimal();
    raw.dataflows[0].attributes = ['person.name', 'x.${MISSING_ATTR}'];
    expect(onlyIssue(() => resolve(raw)).path).toBe('dataflows[0].attributes[1]');
  });

  it('several unset variables are all reported together', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'bearer', token: '${TOKEN_X}' };
    raw.destinations[0].headers = { 'x-api-key': '${API_KEY_Y}' };
    expect(issues(() => resolve(raw)).map((i) => i.message).sort()).toEqual([
      'destinations[0].auth.token: environment variable TOKEN_X is not set',
      'destinations[0].headers.x-api-key: environment variable API_KEY_Y is not set',
    ]);
  });

  it('a variable set to "" is substituted (then fails as an empty value, not as unset)', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'bearer', token: '${EMPTY}' };
    const err = onlyIssue(() => resolve(raw, { EMPTY: '' }));
    expect(err.message).toBe('destinations[0].auth.token: must not be empty');
  });

  it('reads process.env when no env is given', () => {
    const name = `HD_CONFIG_TEST_${process.pid}`;
    process.env[name] = 'tok-from-process-env';
    try {
      const raw = minimal();
      raw.destinations[0].auth = { type: 'bearer', token: `\${${name}}` };
      const cfg = resolveConfig(raw, { baseDir: '/base' });
      expect(cfg.destinations[0].auth).toEqual({ type: 'bearer', token: 'tok-from-process-env' });
      expect(cfg.secrets).toContain('tok-from-process-env');
    } finally {
      delete process.env[name];
    }
  });
});

describe('config.secrets', () => {
  it('holds bearer tokens, client secrets, passwords, signing secrets and sensitive header values', () => {
    const raw = minimal();
    raw.destinations = [
      {
        id: 'd-bearer',
        endpoint: 'https://a.example/p',
        auth: { type: 'bearer', token: 'literal-bearer-1a2b' },
        headers: 'x-api-key:literal-api-key-3c4d,x-tenant:acme',
      },
      {
        id: 'd-cc',
        endpoint: 'https://b.example/p',
        auth: { type: 'oauth2-client-credentials', accessTokenUrl: 'https://idp.example/t', clientId: 'cid', clientSecret: 'literal-cs-5e6f' },
        headers: { Authorization: 'Basic literal-authz-7a8b' },
      },
      {
        id: 'd-pw',
        endpoint: 'https://c.example/p',
        auth: {
          type: 'oauth2-password',
          accessTokenUrl: 'https://idp.example/t',
          clientId: 'cid',
          clientSecret: 'literal-cs2-9c0d',
          username: 'user',
          password: 'literal-password-1e2f',
        },
        signing: { secrets: ['whsec_c2lnbmluZy1rZXktb25l', 'whsec_c2lnbmluZy1rZXktdHdv'] },
      },
    ];
    raw.dataflows = [{ id: 'flow-1', destination: 'd-bearer', audiences: ['aud-1'] }];
    const cfg = resolve(raw);
    expect(cfg.secrets).toEqual(
      expect.arrayContaining([
        'literal-bearer-1a2b',
        'literal-api-key-3c4d',
        'literal-cs-5e6f',
        'Basic literal-authz-7a8b',
        'literal-cs2-9c0d',
        'literal-password-1e2f',
        'whsec_c2lnbmluZy1rZXktb25l',
        'whsec_c2lnbmluZy1rZXktdHdv',
      ]),
    );
    // The base64 part alone is what the signer uses: it is masked too.
    expect(cfg.secrets).toEqual(expect.arrayContaining(['c2lnbmluZy1rZXktb25l', 'c2lnbmluZy1rZXktdHdv']));
    // Secrets are listed once.
    expect(new Set(cfg.secrets).size).toBe(cfg.secrets.length);
  });

  it('a secret that came from the environment is listed once', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'bearer', token: '${T}' };
    const cfg = resolve(raw, { T: 'env-token-abcdef' });
    expect(cfg.secrets.filter((s) => s === 'env-token-abcdef')).toHaveLength(1);
  });
});

describe('error messages never contain a secret value', () => {
  const SECRET = 'Zq9Zq9Zq9Zq9';

  it('an invalid signing secret is not echoed', () => {
    const raw = minimal();
    raw.destinations[0].signing = { secret: `whsec_${SECRET}!!` };
    expect(allText(() => resolve(raw))).not.toContain(SECRET);
  });

  it('a wrongly typed or empty token is not echoed', () => {
    const raw = minimal();
    raw.destinations[0].auth = { type: 'bearer', token: 123456789 };
    expect(allText(() => resolve(raw))).not.toContain('123456789');
    raw.destinations[0].auth = { type: 'bearer', token: ['tok', SECRET] };
    expect(allText(() => resolve(raw))).not.toContain(SECRET);
  });

  it('credentials in a bad accessTokenUrl are not echoed', () => {
    const raw = minimal();
    raw.destinations[0].auth = {
      type: 'oauth2-client-credentials',
      accessTokenUrl: `ftp://user:${SECRET}@idp.example/token`,
      clientId: 'c',
      clientSecret: 'cs-123456',
    };
    expect(allText(() => resolve(raw))).not.toContain(SECRET);
  });

  it('a sensitive header value with CR/LF is not echoed (string and map form)', () => {
    const raw = minimal();
    raw.destinations[0].headers = `x-api-key:${SECRET}\r\nx-evil: 1`;
    expect(allText(() => resolve(raw))).not.toContain(SECRET);
    raw.destinations[0].headers = { authorization: `Bearer ${SECRET}\n` };
    expect(allText(() => resolve(raw))).not.toContain(SECRET);
  });

  it('a secret value from the environment is not echoed when it breaks a rule', () => {
    const raw = minimal();
    raw.destinations[0].signing = { secret: '${SIGNING_SECRET}' };
    raw.destinations[0].headers = 'x-api-key:${API_KEY}';
    expect(allText(() => resolve(raw, { SIGNING_SECRET: `not-whsec-${SECRET}`, API_KEY: `${SECRET}\r\n` }))).not.toContain(SECRET);
  });

  it('a YAML syntax error does not echo the file content', () => {
    const { file } = writeConfig('config.yaml', `source: {kind: file, path: e}\ndestinations:\n  - auth: {type: bearer, token: ${SECRET}: x}\n`);
    const text = allText(() => loadConfigFile(file));
    expect(text).toMatch(/is not valid YAML/);
    expect(text).not.toContain('Zq9');
  });

  it('a JSON syntax error does not echo the file content', () => {
    // A secret written with single quotes: V8's message quotes the text around the bad token.
    const { file } = writeConfig(
      'config.json',
      `{"source": {"kind": "file", "path": "e"}, "destinations": [{"auth": {"type": "bearer", "token": '${SECRET}'}}]}`,
    );
    const text = allText(() => loadConfigFile(file));
    expect(text).toMatch(/is not valid JSON/);
    expect(text).not.toContain('Zq9');
  });
});

describe('headers and query parameters in a destination', () => {
  it('string form headers: values may contain ":" and whitespace is trimmed', () => {
    const raw = minimal();
    raw.destinations[0].headers = ' x-origin : https://a.example:8443/p , x-tenant:acme ';
    expect(resolve(raw).destinations[0].headers).toEqual({ 'x-origin': 'https://a.example:8443/p', 'x-tenant': 'acme' });
  });

  it('map form headers', () => {
    const raw = minimal();
    raw.destinations[0].headers = { 'x-list': 'a, b', 'x-tenant': 'acme' };
    expect(resolve(raw).destinations[0].headers).toEqual({ 'x-list': 'a, b', 'x-tenant': 'acme' });
  });

  it('query string "a=1&b=two words" is appended to an endpoint that has a query, correctly encoded', () => {
    const raw = minimal();
    raw.destinations[0].endpoint = 'https://x.example/p?k=1';
    raw.destinations[0].queryParameters = 'a=1&b=two words';
    const url = resolve(raw).destinations[0].url;
    expect(url.startsWith('https://x.example/p?k=1&')).toBe(true);
    expect(url).not.toMatch(/\s/);
    expect([...new URL(url).searchParams]).toEqual([
      ['k', '1'],
      ['a', '1'],
      ['b', 'two words'],
    ]);
  });

  it('query map form is encoded', () => {
    const raw = minimal();
    raw.destinations[0].queryParameters = { a: '1', 'b c': 'x&y=z' };
    const url = resolve(raw).destinations[0].url;
    expect([...new URL(url).searchParams]).toEqual([
      ['a', '1'],
      ['b c', 'x&y=z'],
    ]);
  });

  it('empty query parameters leave the endpoint unchanged', () => {
    for (const queryParameters of ['', {}]) {
      const raw = minimal();
      raw.destinations[0].endpoint = 'https://x.example/p?k=1';
      raw.destinations[0].queryParameters = queryParameters;
      expect(resolve(raw).destinations[0].url).toBe('https://x.example/p?k=1');
    }
  });

  it('a badly encoded query parameter names the item', () => {
    const raw = minimal();
    raw.destinations[0].queryParameters = 'a=1&b=50%';
    expect(onlyIssue(() => resolve(raw)).path).toBe('destinations[0].queryParameters[1]');
  });
});

describe('signing', () => {
  it('{ secret } is normalised to signing.secrets', () => {
    const raw = minimal();
    raw.destinations[0].signing = { secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' };
    expect(resolve(raw).destinations[0].signing).toEqual({ secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'] });
  });

  it('{ secrets: [...] } keeps the order', () => {
    const raw = minimal();
    raw.destinations[0].signing = { secrets: ['whsec_bmV3LWtleQ==', 'whsec_b2xkLWtleQ=='] };
    expect(resolve(raw).destinations[0].signing).toEqual({ secrets: ['whsec_bmV3LWtleQ==', 'whsec_b2xkLWtleQ=='] });
  });

  it('a secret without whsec_ is rejected naming signing.secret', () => {
    const raw = minimal();
    raw.destinations[0].signing = { secret: 'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' };
    const err = onlyIssue(() => resolve(raw));
    expect(err.path).toBe('destinations[0].signing.secret');
    expect(err.message).toMatch(/^destinations\[0\]\.signing\.secret: .*whsec_/);
  });

  it('a bad entry in secrets names its index', () => {
    const raw = minimal();
    raw.destinations[0].signing = { secrets: ['whsec_bmV3LWtleQ==', 'sk_live_abc'] };
    expect(onlyIssue(() => resolve(raw)).path).toBe('destinations[0].signing.secrets[1]');
  });

  it('an empty secrets list is rejected', () => {
    const raw = minimal();
    raw.destinations[0].signing = { secrets: [] };
    expect(onlyIssue(() => resolve(raw)).path).toBe('destinations[0].signing.secrets');
  });
});

describe('the written files are only read', () => {
  it('loading does not change the config file', () => {
    const { file } = writeConfig('config.yaml', SPEC_YAML);
    loadConfigFile(file, { env: SPEC_ENV });
    expect(readFileSync(file, 'utf8')).toBe(SPEC_YAML);
  });
});
