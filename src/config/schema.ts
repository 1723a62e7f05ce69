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
  /** How long a graceful stop waits for in-flight exports before giving up. */
  drainTimeoutMs: 30_000,
  /** Largest accepted input event, in bytes. */
  maxEventBytes: 1_048_576,
} as const;

const nonEmpty = z.string().trim().min(1, 'must not be empty');
const httpUrl = z
  .string()
  .trim()
  .min(1, 'required')
  .refine((v) => {
    try {
      const u = new URL(v);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL');

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
  ackWaitMs: z.number().int().min(100).default(30_000),
  /** Messages asked for per pull request. */
  batchSize: z.number().int().positive().max(10_000).default(256),
  /**
   * Updates go to `<subject>.<partition>`, partition = fnv1a32(profileId) mod partitions
   * (src/domain/partition.ts). With `store.kind: redis` the workers of a pool share the
   * partitions; changing this on a live pool is refused.
   */
  partitions: z.number().int().min(1).max(1024).default(16),
  /** Pool mode: how long a partition lease lives without renewal (a crashed worker's partitions move after it). */
  leaseMs: z.number().int().min(500).max(120_000).default(5_000),
});

export const sourceSchema = z.discriminatedUnion('kind', [fileSource, jetstreamSource]);

const memoryStore = z.strictObject({ kind: z.literal('memory') });
const redisStore = z.strictObject({
  kind: z.literal('redis'),
  url: nonEmpty.default('redis://127.0.0.1:6379'),
  keyPrefix: z.string().default('hd:'),
});
export const storeSchema = z.discriminatedUnion('kind', [memoryStore, redisStore]);

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
export const failedRequestsSchema = z.discriminatedUnion('kind', [fileFailed, jetstreamFailed]);

export const audienceSchema = z.strictObject({
  id: nonEmpty,
  name: z.string(),
  mergePolicyId: nonEmpty,
  createdAt: z.number().int().nonnegative(),
  updatedAt: z.number().int().nonnegative(),
  origin: z.enum(['segmentation', 'upload']).default('segmentation'),
});

const authNone = z.strictObject({ type: z.literal('none') });
const authBearer = z.strictObject({ type: z.literal('bearer'), token: nonEmpty });
const authClientCredentials = z.strictObject({
  type: z.literal('oauth2-client-credentials'),
  accessTokenUrl: httpUrl,
  clientId: nonEmpty,
  clientSecret: nonEmpty,
  credentialsType: z.enum(['body-form', 'basic']).default('body-form'),
  scope: z.string().optional(),
});
const authPassword = z.strictObject({
  type: z.literal('oauth2-password'),
  accessTokenUrl: httpUrl,
  clientId: nonEmpty,
  clientSecret: nonEmpty,
  username: nonEmpty,
  password: nonEmpty,
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
  endpoint: httpUrl,
  headers: z.union([z.string(), z.record(z.string(), z.string())]).optional(),
  queryParameters: z.union([z.string(), z.record(z.string(), z.string())]).optional(),
  auth: authSchema.default({ type: 'none' }),
  tls: tlsSchema.optional(),
  includeSegmentNames: z.boolean().default(false),
  includeSegmentTimestamps: z.boolean().default(false),
  signing: signingSchema.optional(),
  retry: z
    .strictObject({
      minDelayMs: z.number().int().nonnegative().default(DEFAULTS.retryMinDelayMs),
      maxDelayMs: z.number().int().nonnegative().default(DEFAULTS.retryMaxDelayMs),
      retryAfterMaxMs: z.number().int().nonnegative().default(DEFAULTS.retryAfterMaxMs),
    })
    .default({
      minDelayMs: DEFAULTS.retryMinDelayMs,
      maxDelayMs: DEFAULTS.retryMaxDelayMs,
      retryAfterMaxMs: DEFAULTS.retryAfterMaxMs,
    }),
  timeoutMs: z.number().int().positive().default(DEFAULTS.timeoutMs),
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
    .min(1, 'must map at least one audience'),
  attributes: z.array(attributePath).default([]),
  filter: filterSchema.optional(),
  rateLimit: z
    .number()
    .positive()
    .max(DEFAULTS.maxRateLimit, `must be at most ${DEFAULTS.maxRateLimit}`)
    .default(DEFAULTS.rateLimit),
});

export const configSchema = z.strictObject({
  source: sourceSchema,
  store: storeSchema.default({ kind: 'memory' }),
  failedRequests: failedRequestsSchema.default({ kind: 'file', path: 'failed.jsonl' }),
  audiences: z.array(audienceSchema).default([]),
  destinations: z.array(destinationSchema).min(1, 'must list at least one destination'),
  dataflows: z.array(dataflowSchema).min(1, 'must list at least one dataflow'),
  worker: z
    .strictObject({
      maxInFlight: z.number().int().positive().default(DEFAULTS.maxInFlight),
      drainTimeoutMs: z.number().int().positive().default(DEFAULTS.drainTimeoutMs),
      maxEventBytes: z.number().int().positive().default(DEFAULTS.maxEventBytes),
    })
    .default({
      maxInFlight: DEFAULTS.maxInFlight,
      drainTimeoutMs: DEFAULTS.drainTimeoutMs,
      maxEventBytes: DEFAULTS.maxEventBytes,
    }),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .default({ level: 'info' }),
});

export type RawConfig = z.output<typeof configSchema>;
export type RawDestination = z.output<typeof destinationSchema>;
export type AuthConfig = z.output<typeof authSchema>;
export type TlsConfig = z.output<typeof tlsSchema>;
