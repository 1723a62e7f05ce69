/**
 * Loads, validates and resolves a configuration file (YAML or JSON) once, at start.
 * Every problem becomes a ConfigError naming its field path; several are reported together.
 */
import type { ExportFilter } from '../operators/filter-exports.js';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError, ConfigErrors } from '../errors.js';
import type { Audience, AudienceMapping, DataflowRules } from '../domain/types.js';
import { configSchema, type AuthConfig, type RawConfig, type RawDestination } from './schema.js';
import { formatPath, substituteEnv } from './env.js';
import { appendQuery, parseHeaders, parseQueryParameters } from './strings.js';

/** TLS material, read once at start. */
export interface ResolvedTls {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
  passphrase?: string;
  rejectUnauthorized: boolean;
}

export interface RetryPolicy {
  minDelayMs: number;
  maxDelayMs: number;
  retryAfterMaxMs: number;
}

/** A destination, resolved: final URL (query appended), parsed headers, TLS files read. */
export interface DestinationConfig {
  id: string;
  name?: string;
  description?: string;
  /** The endpoint with the configured query parameters appended. */
  url: string;
  headers: Record<string, string>;
  auth: AuthConfig;
  tls?: ResolvedTls;
  includeSegmentNames: boolean;
  includeSegmentTimestamps: boolean;
  signing?: { secrets: string[] };
  retry: RetryPolicy;
  timeoutMs: number;
  connections: number;
}

export interface DataflowConfig extends DataflowRules {
  rateLimit: number;
  /** Export only the profiles this condition selects (operators/filter-exports.ts). */
  filter?: ExportFilter;
}

export type SourceConfig = RawConfig['source'];
export type StoreConfig = RawConfig['store'];
type RawFailed = RawConfig['failedRequests'];
export type FailedRequestsConfig =
  | (Extract<RawFailed, { kind: 'file' }> & { rejectedPath: string })
  | (Omit<Extract<RawFailed, { kind: 'jetstream' }>, 'servers'> & { servers: string[] });

export interface AppConfig {
  /** Absolute path of the file this was loaded from, when it came from a file. */
  configPath?: string;
  source: SourceConfig;
  store: StoreConfig;
  failedRequests: FailedRequestsConfig;
  audiences: Audience[];
  destinations: DestinationConfig[];
  dataflows: DataflowConfig[];
  worker: RawConfig['worker'];
  log: RawConfig['log'];
  /** Every secret value in this config, for the redactor. Never print this. */
  secrets: string[];
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Folder that relative paths are resolved against; default: the config file's folder. */
  baseDir?: string;
}

/** Reads and resolves a config file. Throws ConfigError / ConfigErrors. */
export function loadConfigFile(file: string, opts: LoadOptions = {}): AppConfig {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let raw: unknown;
  try {
    raw = /\.json$/i.test(abs) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    // Only a position, never the parser's excerpt of the file: the file holds secrets.
    throw new ConfigError('', `config file ${file} is not valid ${/\.json$/i.test(abs) ? 'JSON' : 'YAML'}${syntaxPosition(err, text)}`);
  }
  const cfg = resolveConfig(raw, { ...opts, baseDir: opts.baseDir ?? dirname(abs) });
  cfg.configPath = abs;
  return cfg;
}

function syntaxPosition(err: unknown, text: string): string {
  const e = err as { message?: string; linePos?: Array<{ line: number; col: number }> };
  if (Array.isArray(e.linePos) && e.linePos[0]) return ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})`;
  const m = /position (\d+)/.exec(e.message ?? '');
  if (!m) return '';
  const before = text.slice(0, Number(m[1]));
  const line = before.split('\n').length;
  return ` (line ${line}, column ${before.length - before.lastIndexOf('\n')})`;
}

/** Validates and resolves an already-parsed config object. */
export function resolveConfig(raw: unknown, opts: LoadOptions = {}): AppConfig {
  const baseDir = opts.baseDir ?? process.cwd();
  const { value, secrets } = substituteEnv(raw, opts.env ?? process.env);
  const parsed = configSchema.safeParse(value);
  if (!parsed.success) throw new ConfigErrors(parsed.error.issues.map(toConfigError));
  const c = parsed.data;
  const problems: ConfigError[] = [];
  const collect = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof ConfigError) problems.push(err);
      else throw err;
      return undefined;
    }
  };

  uniqueIds(c.audiences, 'audiences', problems);
  uniqueIds(c.destinations, 'destinations', problems);
  uniqueIds(c.dataflows, 'dataflows', problems);

  const audienceIds = new Set(c.audiences.map((a) => a.id));
  const destIds = new Set(c.destinations.map((d) => d.id));
  const destinations = c.destinations
    .map((d, i) => collect(() => resolveDestination(d, `destinations[${i}]`, baseDir)))
    .filter((d): d is DestinationConfig => d !== undefined);

  const byDest = new Map(destinations.map((d) => [d.id, d]));
  const dataflows: DataflowConfig[] = [];
  c.dataflows.forEach((f, i) => {
    const at = `dataflows[${i}]`;
    if (!destIds.has(f.destination)) {
      problems.push(new ConfigError(`${at}.destination`, `unknown destination "${f.destination}"`));
    }
    const seen = new Set<string>();
    f.audiences.forEach((a, j) => {
      if (!audienceIds.has(a.id)) {
        problems.push(new ConfigError(`${at}.audiences[${j}].id`, `unknown audience "${a.id}" (declare it under audiences)`));
      }
      if (seen.has(a.id)) problems.push(new ConfigError(`${at}.audiences[${j}].id`, `audience "${a.id}" is mapped twice`));
      seen.add(a.id);
    });
    const dest = byDest.get(f.destination);
    dataflows.push({
      id: f.id,
      destinationId: f.destination,
      audiences: f.audiences as AudienceMapping[],
      attributes: [...new Set(f.attributes)],
      includeSegmentNames: dest?.includeSegmentNames ?? false,
      includeSegmentTimestamps: dest?.includeSegmentTimestamps ?? false,
      rateLimit: f.rateLimit,
      ...(f.filter ? { filter: f.filter as ExportFilter } : {}),
    });
  });

  if (problems.length > 0) throw new ConfigErrors(problems);

  return {
    source: c.source.kind === 'file' ? { ...c.source, path: resolve(baseDir, c.source.path) } : c.source,
    store: c.store,
    failedRequests: resolveFailed(c, baseDir),
    audiences: c.audiences,
    destinations,
    dataflows,
    worker: c.worker,
    log: c.log,
    secrets: [...new Set(secrets.concat(collectSecrets(destinations)))],
  };
}

function resolveFailed(c: RawConfig, baseDir: string): FailedRequestsConfig {
  const f = c.failedRequests;
  if (f.kind === 'file') {
    const path = resolve(baseDir, f.path);
    return {
      ...f,
      path,
      rejectedPath: f.rejectedPath ? resolve(baseDir, f.rejectedPath) : resolve(dirname(path), 'rejected.jsonl'),
    };
  }
  const servers =
    f.servers === undefined
      ? c.source.kind === 'jetstream'
        ? c.source.servers
        : ['nats://127.0.0.1:4222']
      : Array.isArray(f.servers)
        ? f.servers
        : f.servers.split(',').map((s) => s.trim()).filter(Boolean);
  return { ...f, servers };
}

function toConfigError(issue: z.core.$ZodIssue): ConfigError {
  const path = formatPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((k) => (path ? `${path}.${k}` : k));
    return new ConfigError(keys.join(', '), keys.length > 1 ? 'unknown keys' : 'unknown key');
  }
  if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) {
    return new ConfigError(path, 'required');
  }
  if (issue.code === 'invalid_union' && 'discriminator' in issue && issue.discriminator) {
    return new ConfigError(path, `must be one of ${(issue as { options?: unknown[] }).options?.map((o) => JSON.stringify(o)).join(', ') ?? 'the documented values'}`);
  }
  // zod's own messages carry no input values (we never enable reportInput), so no secret leaks here.
  return new ConfigError(path, issue.message.replace(/^Invalid input: /, ''));
}

function uniqueIds(items: Array<{ id: string }>, at: string, problems: ConfigError[]): void {
  const seen = new Set<string>();
  items.forEach((it, i) => {
    if (seen.has(it.id)) problems.push(new ConfigError(`${at}[${i}].id`, `duplicate id "${it.id}"`));
    seen.add(it.id);
  });
}

function readTlsFile(path: string | undefined, field: string, baseDir: string): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(resolve(baseDir, path));
  } catch (err) {
    throw new ConfigError(field, `cannot read file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/**
 * Loads the TLS material once, so a wrong passphrase, a key that does not match its
 * certificate or a file that is not PEM stops the start naming the field. Node's messages
 * carry no key material or passphrase; only their first line is kept.
 */
function checkTlsMaterial(tls: ResolvedTls, at: string): void {
  if (tls.ca) {
    try {
      // createSecureContext ignores PEM blocks that are not certificates: parse one for real.
      new X509Certificate(tls.ca);
      createSecureContext({ ca: tls.ca });
    } catch (err) {
      throw new ConfigError(`${at}.ca`, `not a usable CA certificate (${short(err)})`);
    }
  }
  if (!tls.cert || !tls.key) return;
  try {
    createSecureContext({ cert: tls.cert });
  } catch (err) {
    throw new ConfigError(`${at}.cert`, `not a usable certificate (${short(err)})`);
  }
  try {
    createSecureContext({ cert: tls.cert, key: tls.key, passphrase: tls.passphrase });
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    const reason = (err as { reason?: string }).reason ?? '';
    if (/DECRYPT|PASSPHRASE|bad password/i.test(`${code} ${reason} ${short(err)}`)) {
      throw new ConfigError(`${at}.passphrase`, tls.passphrase ? 'does not decrypt tls.key' : 'tls.key is encrypted: a passphrase is required');
    }
    throw new ConfigError(`${at}.key`, `does not match tls.cert or is not a usable private key (${short(err)})`);
  }
}

function short(err: unknown): string {
  const e = err as { reason?: string; code?: string; message?: string };
  return (e.reason ?? e.code ?? e.message ?? 'error').split('\n')[0].slice(0, 120);
}

function resolveDestination(d: RawDestination, at: string, baseDir: string): DestinationConfig {
  const headers = parseHeaders(d.headers, `${at}.headers`);
  const query = parseQueryParameters(d.queryParameters, `${at}.queryParameters`);
  let tls: ResolvedTls | undefined;
  if (d.tls) {
    if ((d.tls.cert === undefined) !== (d.tls.key === undefined)) {
      throw new ConfigError(`${at}.tls.${d.tls.cert === undefined ? 'cert' : 'key'}`, 'cert and key go together');
    }
    tls = {
      cert: readTlsFile(d.tls.cert, `${at}.tls.cert`, baseDir),
      key: readTlsFile(d.tls.key, `${at}.tls.key`, baseDir),
      ca: readTlsFile(d.tls.ca, `${at}.tls.ca`, baseDir),
      passphrase: d.tls.passphrase,
      rejectUnauthorized: d.tls.rejectUnauthorized,
    };
    checkTlsMaterial(tls, `${at}.tls`);
  }
  if (d.retry.minDelayMs > d.retry.maxDelayMs) {
    throw new ConfigError(`${at}.retry.minDelayMs`, 'must not exceed retry.maxDelayMs');
  }
  return {
    id: d.id,
    name: d.name,
    description: d.description,
    url: appendQuery(d.endpoint, query),
    headers,
    auth: d.auth,
    tls,
    includeSegmentNames: d.includeSegmentNames,
    includeSegmentTimestamps: d.includeSegmentTimestamps,
    signing: d.signing ? { secrets: 'secret' in d.signing ? [d.signing.secret] : d.signing.secrets } : undefined,
    retry: d.retry,
    timeoutMs: d.timeoutMs,
    connections: d.connections,
  };
}

/** Header names whose values are credentials whatever their source. */
export const SENSITIVE_HEADER = /^(authorization|proxy-authorization|cookie|set-cookie|x-api-key|api-key|apikey)$|token|secret|key|auth|passw/i;

function collectSecrets(destinations: DestinationConfig[]): string[] {
  const out: string[] = [];
  for (const d of destinations) {
    for (const [k, v] of Object.entries(d.headers)) if (SENSITIVE_HEADER.test(k) && v) out.push(v);
    const a = d.auth;
    if (a.type === 'bearer') out.push(a.token);
    if (a.type === 'oauth2-client-credentials' || a.type === 'oauth2-password') out.push(a.clientSecret);
    if (a.type === 'oauth2-password') out.push(a.password);
    if (d.tls?.passphrase) out.push(d.tls.passphrase);
    if (d.tls?.key) out.push(d.tls.key.toString('utf8'));
    if (d.signing) for (const s of d.signing.secrets) out.push(s, s.slice('whsec_'.length));
  }
  return out.filter((s) => s.length >= 4);
}
