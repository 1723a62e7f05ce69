/**
 * The configuration file's schema (SPEC §11), validated once at start. Unknown keys are
 * rejected everywhere (`strictObject`); every default is named here and nowhere else.
 * Cross-field rules live in `load.ts`.
 */
import { z } from 'zod';

export const DEFAULTS = {
  rateLimit: 10_000,
  maxRateLimit: 10_000,
  timeoutMs: 10_000,
  retryMinDelayMs: 1_000,
  retryMaxDelayMs: 60_000,
  /** Longest `Retry-After` we honour; a longer ask is capped to this. */
  retryAfterMaxMs: 120_000,
  /** Keep-alive connections per destination origin. */
  connections: 64,
  /** Source messages in flight at once in one worker. */
  maxInFlight: 512,
  /**
   * How long a graceful stop waits for in-flight exports before giving up; in pool mode also how
   * long a partition moving to another worker drains before it is released anyway (its unacked
   * messages go to the next owner, this worker's late sends fail the fence).
   */
  drainTimeoutMs: 30_000,
  /** Largest accepted input event, in bytes. */
  maxEventBytes: 1_048_576,
  /** Largest profile snapshot (its JSON, in UTF-8 bytes); an update that would pass it is rejected. */
  maxSnapshotBytes: 1_048_576,
  /** How long a starting worker retries reaching NATS and Redis before it exits 1. */
  startupTimeoutMs: 30_000,
} as const;

/**
 * Hard limits of a config (README "Limits"): a value past one is a ConfigError naming its field.
 */
export const LIMITS = {
  /**
   * Longest duration (ms) of any setting: Node timers cannot wait longer than 2³¹−1 ms
   * (≈ 24.8 days); a longer one fires after 1 ms instead (a `timeoutMs` of 3e9 failed every
   * export at once, a `drainTimeoutMs` of 1e14 abandoned in-flight work on SIGTERM).
   */
  maxDurationMs: 2_147_483_647,
  /** Lowest `rateLimit` (requests per second): one request every 10 s. */
  minRateLimit: 0.1,
  /** Largest TLS file (`tls.cert`, `tls.key`, `tls.ca`), in bytes. */
  maxTlsFileBytes: 1_048_576,
  maxAudiences: 100_000,
  maxDestinations: 1_000,
  maxDataflows: 1_000,
  /**
   * Most `dataflows × audiences`: each dataflow keeps a view of the audience catalog, so the
   * product is what memory and start-up time grow with.
   */
  maxDataflowsTimesAudiences: 1_000_000,
} as const;

/**
 * A duration in ms, an integer from `min` to `LIMITS.maxDurationMs` (or a smaller `max`).
 * Other settings in ms use it too, so every timer stays within what Node can wait.
 */
export const durationMs = (min = 0, max: number = LIMITS.maxDurationMs) =>
  z
    .number()
    .int()
    .min(min, `must be at least ${min} ms`)
    .max(max, max === LIMITS.maxDurationMs ? `must be at most ${max} ms (2^31-1, about 24.8 days: the longest a timer can wait)` : `must be at most ${max} ms`);

/** ASCII control characters (CR, LF, NUL, TAB, DEL, …): never in a value that ends up in a header line. */
const CONTROL = /[\x00-\x1f\x7f]/;
/** A non-empty string that goes into a request header (token, client credentials): no control characters. */
const headerSafe = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .refine((v) => !CONTROL.test(v), 'must not contain CR, LF or other control characters (it is sent in a request header)');

const nonEmpty = z.string().trim().min(1, 'must not be empty');

function parseUrl(v: string): URL | undefined {
  try {
    return new URL(v);
  } catch {
    return undefined;
  }
}
const isHttp = (u: URL | undefined): boolean => u?.protocol === 'http:' || u?.protocol === 'https:';

/**
 * An http(s) URL without credentials in it: `user:pass@` would be dropped by the HTTP client
 * (and printed wherever the URL is). The message never echoes the URL.
 */
const httpUrl = (credentialsGoTo: string) =>
  z
    .string()
    .trim()
    .min(1, 'required')
    .refine((v) => isHttp(parseUrl(v)), 'must be an http:// or https:// URL')
    .refine((v) => {
      const u = parseUrl(v);
      return !isHttp(u) || (u?.username === '' && u?.password === '');
    }, `must not contain credentials (user:password@); ${credentialsGoTo}`)
    .refine((v) => !CONTROL.test(v), 'must not contain control characters');
const endpointUrl = httpUrl('put them in auth (bearer, oauth2-*) or in headers, with ${ENV} references');
const tokenUrl = httpUrl('put them in auth.clientId / auth.clientSecret (or auth.username / auth.password)');

const fileSource = z.strictObject({
  kind: z.literal('file'),
  path: nonEmpty,
});

const natsServers = z
  .union([nonEmpty, z.array(nonEmpty).min(1)])
  .default('nats://127.0.0.1:4222')
  .transform((v) => (Array.isArray(v) ? v : v.split(',').map((s) => s.trim()).filter(Boolean)));

const jetstreamSource = z.strictObject({
  kind: z.literal('jetstream'),
  servers: natsServers,
  stream: nonEmpty.default('PROFILES'),
  subject: nonEmpty.default('profiles.updates'),
  durable: nonEmpty.default('http-destination'),
  /** Unacknowledged for this long → redelivered (the consumer's ack_wait; kept alive while exports retry). */
  ackWaitMs: durationMs(100).default(30_000),
  /** Messages asked for per pull request. */
  batchSize: z.number().int().positive().max(10_000).default(256),
  /**
   * Updates go to `<subject>.<partition>`, partition = fnv1a32(profileId) mod partitions
   * (src/domain/partition.ts). With `store.kind: redis` the workers of a pool share the
   * partitions; changing this on a live pool is refused.
   */
  partitions: z.number().int().min(1).max(1024).default(16),
  /** Pool mode: how long a partition lease lives without renewal (a crashed worker's partitions move after it). */
  leaseMs: durationMs(500, 120_000).default(5_000),
  /** Backfill (SPEC §8): members per page the backfiller publishes and checkpoints. Unset: 500. */
  backfillPageSize: z.number().int().positive().max(10_000).optional(),
  /**
   * Backfill: most items the backfiller publishes per second (paced page by page), so a large
   * backfill does not flood the partitions ahead of live updates. Unset: as fast as JetStream acks.
   */
  backfillPublishPerSecond: z.number().positive().max(1_000_000).optional(),
});

export const sourceSchema = z.discriminatedUnion('kind', [fileSource, jetstreamSource]);

const memoryStore = z.strictObject({ kind: z.literal('memory') });
/** The embedded default: durable, on this host (LMDB). */
const localStore = z.strictObject({
  kind: z.literal('local'),
  /** The store's folder; default `http-destination.state` beside the config file. */
  path: nonEmpty.optional(),
  /**
   * Profiles `run` keeps decoded in memory, at most this many bytes of their JSON text (the
   * least recently used let go first); a profile found there is not read back and parsed.
   * The heap they take is about 2–3 times this, and the garbage collector marks all of it at
   * each full collection (a pause in the pipeline as long as that marking). @default 4194304 (4 MiB)
   */
  profileCacheBytes: z.number().int().nonnegative().optional(),
});
const redisStore = z.strictObject({
  kind: z.literal('redis'),
  url: nonEmpty.default('redis://127.0.0.1:6379'),
  keyPrefix: z.string().default('hd:'),
});
export const storeSchema = z.discriminatedUnion('kind', [localStore, memoryStore, redisStore]);

/** Failed requests and rejected events in the local store (`store.kind: local`, or its folder at `store.path`'s default). */
const localFailed = z.strictObject({ kind: z.literal('local') });
const fileFailed = z.strictObject({
  kind: z.literal('file'),
  path: nonEmpty,
  /** Where rejected input events are kept; default `rejected.jsonl` beside `path`. */
  rejectedPath: nonEmpty.optional(),
});
const jetstreamFailed = z.strictObject({
  kind: z.literal('jetstream'),
  /** Default: the source's servers when the source is JetStream, else nats://127.0.0.1:4222. */
  servers: z.union([nonEmpty, z.array(nonEmpty).min(1)]).optional(),
  stream: nonEmpty.default('HTTP_DESTINATION_FAILED'),
  rejectedStream: nonEmpty.default('HTTP_DESTINATION_REJECTED'),
});
export const failedRequestsSchema = z.discriminatedUnion('kind', [localFailed, fileFailed, jetstreamFailed]);

export const audienceSchema = z.strictObject({
  id: nonEmpty,
  name: z.string(),
  mergePolicyId: nonEmpty,
  createdAt: z.number().int().nonnegative(),
  updatedAt: z.number().int().nonnegative(),
  origin: z.enum(['segmentation', 'upload']).default('segmentation'),
});

const authNone = z.strictObject({ type: z.literal('none') });
const authBearer = z.strictObject({ type: z.literal('bearer'), token: headerSafe });
const authClientCredentials = z.strictObject({
  type: z.literal('oauth2-client-credentials'),
  accessTokenUrl: tokenUrl,
  clientId: headerSafe,
  clientSecret: headerSafe,
  credentialsType: z.enum(['body-form', 'basic']).default('body-form'),
  scope: z.string().optional(),
});
const authPassword = z.strictObject({
  type: z.literal('oauth2-password'),
  accessTokenUrl: tokenUrl,
  clientId: headerSafe,
  clientSecret: headerSafe,
  username: headerSafe,
  password: headerSafe,
  scope: z.string().optional(),
});
export const authSchema = z.discriminatedUnion('type', [
  authNone,
  authBearer,
  authClientCredentials,
  authPassword,
]);

export const tlsSchema = z.strictObject({
  cert: nonEmpty.optional(),
  key: nonEmpty.optional(),
  ca: nonEmpty.optional(),
  passphrase: z.string().optional(),
  rejectUnauthorized: z.boolean().default(true),
});

/**
 * A destination's HTTP(S) proxy: `"http://proxy:3128"` or `{ url, noProxy? }`. Credentials
 * in the URL (`http://user:${PROXY_PASSWORD}@proxy:3128`) are accepted only from `${ENV}`
 * (checked in load.ts, which sees the text before substitution); they are secrets.
 * `noProxy`: hosts reached directly, as in `NO_PROXY` (`example.com`, `.example.com`,
 * `10.0.0.1`, `host:8443`, `*`).
 */
const proxyUrl = z
  .string()
  .trim()
  .min(1, 'required')
  .refine((v) => isHttp(parseUrl(v)), 'must be an http:// or https:// proxy URL')
  .refine((v) => !CONTROL.test(v), 'must not contain control characters');
export const proxySchema = z.preprocess(
  (v) => (typeof v === 'string' ? { url: v } : v),
  z.strictObject({
    url: proxyUrl,
    noProxy: z.union([z.string(), z.array(nonEmpty)]).optional(),
  }),
);

const whsec = z
  .string()
  .trim()
  .regex(/^whsec_[A-Za-z0-9+/]+={0,2}$/, 'must be a Standard Webhooks secret (whsec_ + base64)');
export const signingSchema = z.union([
  z.strictObject({ secret: whsec }),
  z.strictObject({ secrets: z.array(whsec).min(1, 'must list at least one secret') }),
]);

export const destinationSchema = z.strictObject({
  id: nonEmpty,
  name: z.string().optional(),
  description: z.string().optional(),
  endpoint: endpointUrl,
  headers: z.union([z.string(), z.record(z.string(), z.string())]).optional(),
  queryParameters: z.union([z.string(), z.record(z.string(), z.string())]).optional(),
  auth: authSchema.default({ type: 'none' }),
  tls: tlsSchema.optional(),
  proxy: proxySchema.optional(),
  includeSegmentNames: z.boolean().default(false),
  includeSegmentTimestamps: z.boolean().default(false),
  signing: signingSchema.optional(),
  retry: z
    .strictObject({
      minDelayMs: durationMs().default(DEFAULTS.retryMinDelayMs),
      maxDelayMs: durationMs().default(DEFAULTS.retryMaxDelayMs),
      retryAfterMaxMs: durationMs().default(DEFAULTS.retryAfterMaxMs),
    })
    .default({
      minDelayMs: DEFAULTS.retryMinDelayMs,
      maxDelayMs: DEFAULTS.retryMaxDelayMs,
      retryAfterMaxMs: DEFAULTS.retryAfterMaxMs,
    }),
  timeoutMs: durationMs(1).default(DEFAULTS.timeoutMs),
  connections: z.number().int().positive().max(1024).default(DEFAULTS.connections),
});

const attributePath = z
  .string()
  .trim()
  .regex(/^[^.\s]+(\.[^.\s]+)*$/, 'must be a dotted attribute path like person.name.firstName');

const filterScalar = z.union([z.string(), z.number(), z.boolean()]);

/**
 * `dataflows[].filter`: export only profiles whose attribute passes one test (see
 * operators/filter-exports.ts). Exactly one of equals, notEquals, in, notIn, exists.
 */
export const filterSchema = z
  .strictObject({
    attribute: attributePath,
    equals: filterScalar.optional(),
    notEquals: filterScalar.optional(),
    in: z.array(filterScalar).min(1, 'must list at least one value').optional(),
    notIn: z.array(filterScalar).min(1, 'must list at least one value').optional(),
    exists: z.boolean().optional(),
  })
  .superRefine((f, ctx) => {
    const tests = (['equals', 'notEquals', 'in', 'notIn', 'exists'] as const).filter((k) => f[k] !== undefined);
    if (tests.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: tests.length === 0 ? 'needs one of equals, notEquals, in, notIn, exists' : `takes one test, got ${tests.join(' and ')}`,
      });
    }
  });

export const dataflowSchema = z.strictObject({
  id: nonEmpty,
  destination: nonEmpty,
  audiences: z
    .array(
      z.union([
        nonEmpty.transform((id) => ({ id })),
        z.strictObject({
          id: nonEmpty,
          mappingCreatedAt: z.number().int().nonnegative().optional(),
          mappingUpdatedAt: z.number().int().nonnegative().optional(),
        }),
      ]),
    )
    .min(1, 'must map at least one audience')
    .max(LIMITS.maxAudiences, `must map at most ${LIMITS.maxAudiences} audiences`),
  attributes: z.array(attributePath).default([]),
  filter: filterSchema.optional(),
  rateLimit: z
    .number()
    .min(LIMITS.minRateLimit, `must be at least ${LIMITS.minRateLimit} (one request every ${1 / LIMITS.minRateLimit} s)`)
    .max(DEFAULTS.maxRateLimit, `must be at most ${DEFAULTS.maxRateLimit}`)
    .default(DEFAULTS.rateLimit),
});

/** Alerts (SPEC §10): where they go and when they fire. */
const alertChannelSchema = z.discriminatedUnion('kind', [
  z.strictObject({ id: nonEmpty, kind: z.literal('webhook'), url: endpointUrl, signing: signingSchema.optional(), timeoutMs: durationMs(1).default(10_000) }),
  z.strictObject({ id: nonEmpty, kind: z.literal('nats'), subject: nonEmpty }),
]);
const alertWindowMs = z.number().int().min(10_000).max(7_200_000, 'must be at most 7200000 (2 h: the figures kept per 10 s slot)');
const alertRuleBase = { id: nonEmpty, channels: z.array(nonEmpty).default([]), dataflows: z.array(nonEmpty).optional() };
const alertRuleSchema = z.discriminatedUnion('kind', [
  z.strictObject({ ...alertRuleBase, kind: z.literal('failedRequests'), threshold: z.number().int().positive(), windowMs: alertWindowMs }),
  z.strictObject({ ...alertRuleBase, kind: z.literal('failureRate'), threshold: z.number().min(0).max(1), windowMs: alertWindowMs }),
  z.strictObject({ ...alertRuleBase, kind: z.literal('latencyP95'), thresholdMs: z.number().int().positive(), windowMs: alertWindowMs }),
  z.strictObject({ ...alertRuleBase, kind: z.literal('delay'), thresholdMs: z.number().int().positive() }),
]);
export const alertsSchema = z.strictObject({
  channels: z.array(alertChannelSchema).default([]),
  rules: z.array(alertRuleSchema).default([]),
  /** How often the rules are evaluated (SPEC §10: at least every 5 s). */
  evaluateEveryMs: z.number().int().min(100).max(5_000).default(5_000),
});

export const configSchema = z.strictObject({
  source: sourceSchema,
  store: storeSchema.default({ kind: 'local' }),
  failedRequests: failedRequestsSchema.default({ kind: 'local' }),
  audiences: z.array(audienceSchema).max(LIMITS.maxAudiences, `must list at most ${LIMITS.maxAudiences} audiences`).default([]),
  destinations: z
    .array(destinationSchema)
    .min(1, 'must list at least one destination')
    .max(LIMITS.maxDestinations, `must list at most ${LIMITS.maxDestinations} destinations`),
  dataflows: z
    .array(dataflowSchema)
    .min(1, 'must list at least one dataflow')
    .max(LIMITS.maxDataflows, `must list at most ${LIMITS.maxDataflows} dataflows`),
  worker: z
    .strictObject({
      maxInFlight: z.number().int().positive().default(DEFAULTS.maxInFlight),
      drainTimeoutMs: durationMs(1).default(DEFAULTS.drainTimeoutMs),
      maxEventBytes: z.number().int().positive().default(DEFAULTS.maxEventBytes),
      /** 1 KiB … 256 MiB (Redis refuses larger strings than 512 MB; a snapshot is rewritten on every update). */
      maxSnapshotBytes: z.number().int().min(1_024).max(268_435_456).default(DEFAULTS.maxSnapshotBytes),
      startupTimeoutMs: durationMs(0).default(DEFAULTS.startupTimeoutMs),
      /**
       * undici on a worker thread (true) or on the main thread (false). Unset: the thread, for
       * every store (in a pool, store `redis`, the thread checks each request's send slot for
       * age right before undici gets it). See `httpThreadOf`.
       */
      httpThread: z.boolean().optional(),
    })
    .default({
      maxInFlight: DEFAULTS.maxInFlight,
      drainTimeoutMs: DEFAULTS.drainTimeoutMs,
      maxEventBytes: DEFAULTS.maxEventBytes,
      maxSnapshotBytes: DEFAULTS.maxSnapshotBytes,
      startupTimeoutMs: DEFAULTS.startupTimeoutMs,
    }),
  /** The admin server (`run --metrics-port`): `token` guards actions and any non-loopback bind. */
  admin: z.strictObject({ token: nonEmpty.optional() }).optional(),
  alerts: alertsSchema.optional(),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .default({ level: 'info' }),
});

export type RawConfig = z.output<typeof configSchema>;
export type AlertsConfig = z.output<typeof alertsSchema>;
export type AlertRuleConfig = AlertsConfig['rules'][number];
export type AlertChannelConfig = AlertsConfig['channels'][number];
export type RawDestination = z.output<typeof destinationSchema>;
export type AuthConfig = z.output<typeof authSchema>;
export type TlsConfig = z.output<typeof tlsSchema>;
