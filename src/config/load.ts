/**
 * Loads, validates and resolves a configuration file (YAML or JSON) once, at start.
 * Every problem becomes a ConfigError naming its field path; several are reported together.
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import type { ExportFilter } from '../operators/filter-exports.js';
import { dirname, resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError, ConfigErrors } from '../errors.js';
import type { Audience, AudienceMapping, DataflowRules } from '../domain/types.js';
import { configSchema, LIMITS, type AuthConfig, type RawConfig, type RawDestination } from './schema.js';
import { formatPath, substituteEnv, type UnsetVariable } from './env.js';
import { appendQuery, parseHeaders, parseQueryParameters } from './strings.js';

/** TLS material, read once at start. */
export interface ResolvedTls {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
  passphrase?: string;
  rejectUnauthorized: boolean;
}

/**
 * How a destination's requests reach the network when they go through a proxy (README
 * "Proxies"): the destination's own `proxy` if it has one, else `HTTPS_PROXY` / `HTTP_PROXY` /
 * `NO_PROXY` from the environment (lowercase before uppercase). `''`: no proxy for that scheme.
 * The URLs may hold credentials (then they are in `AppConfig.secrets`).
 */
export interface ResolvedProxy {
  /** Proxy for http:// endpoints. */
  httpProxy: string;
  /** Proxy for https:// endpoints (reached through a CONNECT tunnel; TLS stays end to end). */
  httpsProxy: string;
  /** Hosts reached directly, comma-separated, as `NO_PROXY`. */
  noProxy: string;
  /** Where this came from. */
  from: 'config' | 'env';
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
  /** Absent: requests go straight to the endpoint. */
  proxy?: ResolvedProxy;
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
type RawStore = RawConfig['store'];
/** The store, resolved: a local store's folder is absolute. */
export type StoreConfig = Exclude<RawStore, { kind: 'local' }> | (Extract<RawStore, { kind: 'local' }> & { path: string });
type RawFailed = RawConfig['failedRequests'];
export type FailedRequestsConfig =
  | { kind: 'local'; path: string }
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
  /** The admin server's settings; `token` is a secret. */
  admin?: RawConfig['admin'];
  /** Alert channels and rules (SPEC §10); webhook signing secrets are secrets. */
  alerts?: RawConfig['alerts'];
  /** Every secret value in this config, for the redactor. Never print this. */
  secrets: string[];
  /** `${NAME}` references whose variable is not set; only when loaded with `allowUnsetEnv`. */
  unsetEnv?: UnsetVariable[];
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Folder that relative paths are resolved against; default: the config file's folder. */
  baseDir?: string;
  /**
   * For commands that only read: a `${NAME}` whose variable is not set is kept as a
   * placeholder and listed in `unsetEnv` instead of failing the load (SPEC §12). @default false
   */
  allowUnsetEnv?: boolean;
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
  const { value, secrets, unset } = substituteEnv(raw, opts.env ?? process.env, { allowUnset: opts.allowUnsetEnv });
  const ctx = { raw, env: opts.env ?? process.env };
  if (unset.length === 0) return resolveSubstituted(value, secrets, baseDir, undefined, ctx);
  const placeholders = new Set(unset.map((u) => u.placeholder));
  try {
    const cfg = resolveSubstituted(value, secrets, baseDir, placeholders, ctx);
    // A placeholder is no secret (nor the base64 part of a signing secret's placeholder).
    const secretsLeft = cfg.secrets.filter((s) => !placeholders.has(s) && !placeholders.has(`whsec_${s}`));
    return { ...cfg, secrets: secretsLeft, unsetEnv: unset };
  } catch (err) {
    // A field that could not be validated without its variable: say so, not that it is malformed.
    throw blameUnset(err, unset);
  }
}

function blameUnset(err: unknown, unset: UnsetVariable[]): unknown {
  if (!(err instanceof ConfigError || err instanceof ConfigErrors)) return err;
  const issues = (err instanceof ConfigErrors ? err.issues : [err]).map((e) => {
    const u = unset.find((x) => e.path === x.path || e.path.startsWith(`${x.path}.`) || e.path.startsWith(`${x.path}[`));
    return u ? new ConfigError(u.path, `environment variable ${u.name} is not set (needed to check this field)`) : e;
  });
  return issues.length === 1 ? issues[0] : new ConfigErrors(issues);
}

function resolveSubstituted(
  value: unknown,
  secrets: string[],
  baseDir: string,
  placeholders: ReadonlySet<string> | undefined,
  ctx: { raw: unknown; env: NodeJS.ProcessEnv },
): AppConfig {
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

  if (c.dataflows.length * c.audiences.length > LIMITS.maxDataflowsTimesAudiences) {
    // Each dataflow keeps a view of the audience catalog: this product is what memory grows with.
    throw new ConfigError(
      'dataflows',
      `${c.dataflows.length} dataflows × ${c.audiences.length} audiences is more than ${LIMITS.maxDataflowsTimesAudiences.toLocaleString('en-US')} (dataflows × audiences); split the config over several deployments`,
    );
  }
  uniqueIds(c.audiences, 'audiences', problems);
  uniqueIds(c.destinations, 'destinations', problems);
  uniqueIds(c.dataflows, 'dataflows', problems);

  const audienceIds = new Set(c.audiences.map((a) => a.id));
  const destIds = new Set(c.destinations.map((d) => d.id));
  const { raw, env } = ctx;
  const envProxy = proxyFromEnv(env);
  const rawDestinations = (raw as { destinations?: unknown } | null)?.destinations;
  const destinations = c.destinations
    .map((d, i) =>
      collect(() => {
        const at = `destinations[${i}]`;
        const resolved = resolveDestination(d, at, baseDir, placeholders);
        if (d.proxy) {
          checkProxyCredentials(rawProxyUrl(Array.isArray(rawDestinations) ? rawDestinations[i] : undefined), `${at}.proxy`);
          const noProxy = Array.isArray(d.proxy.noProxy) ? d.proxy.noProxy.join(',') : (d.proxy.noProxy ?? '');
          resolved.proxy = { httpProxy: d.proxy.url, httpsProxy: d.proxy.url, noProxy, from: 'config' };
        } else if (envProxy) {
          resolved.proxy = envProxy;
        }
        return resolved;
      }),
    )
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

  checkAlerts(c, problems);
  if (problems.length > 0) throw new ConfigErrors(problems);

  return {
    source: c.source.kind === 'file' ? { ...c.source, path: resolve(baseDir, c.source.path) } : c.source,
    store: resolveStore(c.store, baseDir),
    failedRequests: resolveFailed(c, baseDir),
    audiences: c.audiences,
    destinations,
    dataflows,
    worker: c.worker,
    log: c.log,
    admin: c.admin,
    alerts: c.alerts,
    secrets: [
      ...new Set(
        secrets.concat(
          collectSecrets(destinations),
          envProxy ? [...proxySecrets(envProxy.httpProxy), ...proxySecrets(envProxy.httpsProxy)] : [],
          c.admin?.token ? [c.admin.token] : [],
          alertSecrets(c),
        ),
      ),
    ],
  };
}

/** Alerts: unique ids, channels and dataflows that exist, NATS channels only with a JetStream source. */
function checkAlerts(c: RawConfig, problems: ConfigError[]): void {
  if (!c.alerts) return;
  uniqueIds(c.alerts.channels, 'alerts.channels', problems);
  uniqueIds(c.alerts.rules, 'alerts.rules', problems);
  const channels = new Set(c.alerts.channels.map((ch) => ch.id));
  const flows = new Set(c.dataflows.map((f) => f.id));
  c.alerts.channels.forEach((ch, i) => {
    if (ch.kind === 'nats' && c.source.kind !== 'jetstream') {
      problems.push(new ConfigError(`alerts.channels[${i}].kind`, 'a nats channel needs source.kind: jetstream (it publishes on the source\'s servers)'));
    }
  });
  c.alerts.rules.forEach((r, i) => {
    r.channels.forEach((id, j) => {
      if (!channels.has(id)) problems.push(new ConfigError(`alerts.rules[${i}].channels[${j}]`, `unknown channel "${id}" (declare it under alerts.channels)`));
    });
    r.dataflows?.forEach((id, j) => {
      if (!flows.has(id)) problems.push(new ConfigError(`alerts.rules[${i}].dataflows[${j}]`, `unknown dataflow "${id}"`));
    });
  });
}

function alertSecrets(c: RawConfig): string[] {
  const out: string[] = [];
  for (const ch of c.alerts?.channels ?? []) {
    if (ch.kind !== 'webhook' || !ch.signing) continue;
    for (const s of 'secret' in ch.signing ? [ch.signing.secret] : ch.signing.secrets) out.push(s, s.slice('whsec_'.length));
  }
  return out;
}

/** The local store's folder: `store.path`, default `http-destination.state` beside the config file. */
export const DEFAULT_LOCAL_STORE = 'http-destination.state';

function resolveStore(s: RawStore, baseDir: string): StoreConfig {
  return s.kind === 'local' ? { ...s, path: resolve(baseDir, s.path ?? DEFAULT_LOCAL_STORE) } : s;
}

function resolveFailed(c: RawConfig, baseDir: string): FailedRequestsConfig {
  const f = c.failedRequests;
  if (f.kind === 'local') {
    // Kept in the local store: the configured one, or the default folder when the snapshots live elsewhere.
    const path = c.store.kind === 'local' && c.store.path !== undefined ? c.store.path : DEFAULT_LOCAL_STORE;
    return { kind: 'local', path: resolve(baseDir, path) };
  }
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

/**
 * Reads a TLS file: only a regular file (a symlink to one is fine: Kubernetes mounts secrets
 * that way) of at most `LIMITS.maxTlsFileBytes`. Opened non-blocking and checked on the open
 * descriptor, so a FIFO cannot hang the start, a device (`/dev/zero`) is never read, and the
 * file checked is the file read.
 */
function readTlsFile(path: string | undefined, field: string, baseDir: string): Buffer | undefined {
  if (path === undefined) return undefined;
  const cap = LIMITS.maxTlsFileBytes;
  let fd: number;
  try {
    fd = openSync(resolve(baseDir, path), fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new ConfigError(field, `cannot read file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ConfigError(field, `${path} is not a regular file`);
    if (st.size > cap) throw new ConfigError(field, `${path} is larger than ${cap} bytes (${st.size})`);
    // Read at most cap + 1 bytes whatever the size said (the file may grow meanwhile).
    const buf = Buffer.alloc(cap + 1);
    let got = 0;
    for (let n; got < buf.length && (n = readSync(fd, buf, got, buf.length - got, null)) > 0; ) got += n;
    if (got > cap) throw new ConfigError(field, `${path} is larger than ${cap} bytes`);
    return buf.subarray(0, got);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(field, `cannot read file ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  } finally {
    closeSync(fd);
  }
}

/** The raw (before `${ENV}` substitution) proxy URL of a raw destination, if it is a string. */
function rawProxyUrl(rawDestination: unknown): string | undefined {
  const p = (rawDestination as { proxy?: unknown } | null | undefined)?.proxy;
  const url = typeof p === 'string' ? p : (p as { url?: unknown } | null | undefined)?.url;
  return typeof url === 'string' ? url : undefined;
}

const ENV_REF = /\$\{[A-Za-z_][A-Za-z0-9_]*\}/g;

/**
 * A proxy URL may carry credentials only from the environment: `http://user:${PROXY_PASSWORD}@…`
 * or the whole URL as `${PROXY_URL}`. A password written in the file is refused (not echoed).
 */
function checkProxyCredentials(raw: string | undefined, at: string): void {
  if (raw === undefined) return;
  const literal = raw.replace(ENV_REF, '');
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)@/.exec(literal.trim());
  if (!m) return;
  const colon = m[1].indexOf(':');
  if (colon >= 0 && m[1].slice(colon + 1) !== '') {
    throw new ConfigError(
      `${at}.url`,
      'a proxy password must come from the environment: write it as ${PROXY_PASSWORD} (or the whole URL as ${PROXY_URL})',
    );
  }
}

/** The proxy settings of the environment (`https_proxy` before `HTTPS_PROXY`, …), if any is set. */
function proxyFromEnv(env: NodeJS.ProcessEnv): ResolvedProxy | undefined {
  const pick = (name: string): string => (env[name.toLowerCase()] ?? env[name.toUpperCase()] ?? '').trim();
  const httpProxy = pick('http_proxy');
  const httpsProxy = pick('https_proxy');
  if (httpProxy === '' && httpsProxy === '') return undefined;
  for (const [name, v] of [['HTTP_PROXY', httpProxy], ['HTTPS_PROXY', httpsProxy]] as const) {
    let u: URL | undefined;
    try {
      u = v === '' ? undefined : new URL(v);
    } catch {
      throw new ConfigError(`env ${name}`, 'is not a URL (expected http://host:port)');
    }
    if (u && u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(`env ${name}`, 'must be an http:// or https:// proxy URL');
    if (u && /[\x00-\x1f\x7f]/.test(v)) throw new ConfigError(`env ${name}`, 'must not contain control characters');
  }
  // As curl and undici: HTTPS_PROXY unset → https:// endpoints use HTTP_PROXY too.
  return { httpProxy, httpsProxy: httpsProxy || httpProxy, noProxy: pick('no_proxy'), from: 'env' };
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

function resolveDestination(d: RawDestination, at: string, baseDir: string, placeholders?: ReadonlySet<string>): DestinationConfig {
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
    // An unset passphrase (a command that only reads): the key cannot be checked without it.
    if (!(tls.passphrase !== undefined && placeholders?.has(tls.passphrase))) checkTlsMaterial(tls, `${at}.tls`);
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

/**
 * The secrets of a proxy URL with credentials: its password (as written and decoded), the
 * userinfo, and the `Proxy-Authorization` value undici derives from them.
 */
export function proxySecrets(url: string): string[] {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return [];
  }
  if (u.password === '') return [];
  const out = [u.password, `${u.username}:${u.password}`];
  try {
    const user = decodeURIComponent(u.username);
    const pass = decodeURIComponent(u.password);
    const basic = Buffer.from(`${user}:${pass}`).toString('base64');
    out.push(pass, basic, `Basic ${basic}`);
  } catch {
    // not validly percent-encoded: the raw forms above are all there is
  }
  return out;
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
    if (d.proxy) for (const url of [d.proxy.httpProxy, d.proxy.httpsProxy]) out.push(...proxySecrets(url));
  }
  return out.filter((s) => s.length >= 4);
}
