/**
 * The HTTP sink: export jobs in, delivery outcomes out. Each attempt waits for the
 * dataflow's rate limiter, takes the destination's auth headers, builds and sends the
 * request; retryable failures are retried with backoff (two retries, three attempts);
 * a final failure is stored in the failed-request store and reported as a `failed` outcome.
 */
import {
  asyncScheduler,
  catchError,
  concatMap,
  defer,
  from,
  map,
  Observable,
  of,
  take,
  throwError,
  type Observer,
  type SchedulerLike,
  type Subscriber,
  type Unsubscribable,
} from 'rxjs';
import { SENSITIVE_HEADER, type AppConfig, type DataflowConfig, type DestinationConfig } from '../../config/load.js';
import { DeliveryError, FencedError, HttpDestinationError, StoreError } from '../../errors.js';
import { retryWithBackoff, type RetryInfo } from '../../operators/retry-with-backoff.js';
import { tokenBucket } from '../../stores/memory-rate-limiter.js';
import type { RateLimiter } from '../../stores/rate-limiter.js';
import type { DeliveryOutcome, ExportJob, ExportSink, FailedRequest, FailedRequestStore } from '../types.js';
import { createAuthProvider, type AuthDeps } from './auth/index.js';
import type { AuthProvider } from './auth/types.js';
import { createRedactor, type Redactor } from '../../observability/redact.js';
import { requestBuilder, type HttpRequest, type RequestBuilder } from './request.js';
import { Cancellation, createTransport, type HttpTransport, type TransportResponse } from './transport.js';

/** The least a sink needs of a logger (pino's `Logger` fits). */
export interface SinkLogger {
  warn(obj: object, msg: string): void;
}

/** Every default of the HTTP sink, named in one place. */
export const HTTP_SINK_DEFAULTS = {
  /** Retries after the first attempt (SPEC §6: three attempts in all). */
  retries: 2,
  storeFailures: true,
  scheduler: asyncScheduler as SchedulerLike,
  random: Math.random,
  now: Date.now,
  /** Shortest header value treated as a secret when scrubbing error reasons. */
  minSecretLength: 4,
  /** At most one "stored as failed" warning per sink in this window; the others are counted in the next. */
  warnIntervalMs: 10_000,
} as const;

export interface HttpSinkOptions {
  /** The destination, as resolved by the config loader. */
  destination: DestinationConfig;
  /** The dataflow's limiter; every attempt (and a 401 resend) waits for one permit. */
  limiter: RateLimiter;
  /** Where final failures go. */
  failedStore: FailedRequestStore;
  /** @default createAuthProvider(destination.auth, …) */
  auth?: AuthProvider;
  /** @default createTransport({ destination }) */
  transport?: HttpTransport;
  /** Scheduler of the backoff waits. @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Jitter source, in [0, 1). @default Math.random */
  random?: () => number;
  /** Clock (signature timestamps, `failedAt`), ms since epoch. @default Date.now */
  now?: () => number;
  /** Store final failures; `failed replay` passes `false` and updates records itself. @default true */
  storeFailures?: boolean;
  /**
   * Receives a warning when an export is stored as failed: at most one per `warnIntervalMs`,
   * carrying how many were stored since the previous one (`storedSinceLastWarning`). @default none
   */
  logger?: SinkLogger;
  /** @default 10_000 */
  warnIntervalMs?: number;
  /**
   * Every secret value of the config (`AppConfig.secrets`: tokens, client secrets, values from
   * `${ENV}` such as a signed query parameter): masked, with their URL-encoded and base64
   * forms, in every reason before it is stored or emitted. @default none
   */
  secrets?: readonly string[];
  /** Called before each retry wait (metrics). @default none */
  onRetry?: (info: RetryInfo & { job: ExportJob }) => void;
}

/**
 * Runs a promise-returning function as a cold Observable; unsubscribing cancels it (the
 * transport rejects a cancelled or cancelling request, and the result is then ignored).
 */
function fromCancellable<T>(fn: (cancellation: Cancellation) => Promise<T>): Observable<T> {
  return new Observable<T>((subscriber) => {
    const cancellation = new Cancellation();
    fn(cancellation).then(
      (value) => {
        subscriber.next(value);
        subscriber.complete();
      },
      (err: unknown) => subscriber.error(err),
    );
    return () => cancellation.cancel();
  });
}

function isStatus(err: unknown, status: number): boolean {
  return err instanceof DeliveryError && err.statusCode === status;
}

function lowerKeys(headers: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in headers) out[k.toLowerCase()] = headers[k]!;
  return out;
}

function fenced(job: ExportJob): FencedError {
  return new FencedError(`export ${job.idempotencyKey} not sent: this worker no longer holds the profile's partition`);
}

/**
 * Delivers export jobs to one destination for one dataflow. `send(job)` is cold: nothing
 * happens until it is subscribed, and unsubscribing cancels the request or the wait in
 * progress. It emits exactly one outcome: `delivered` (any 2xx) or `failed` (after the
 * last retry, or at once for a permanent failure; the record is then already stored unless
 * `storeFailures` is false). It errors only when the failed-request store cannot keep the
 * record (`StoreError`), so that the source message is not acknowledged. (If the limiter
 * completes without granting, e.g. while shutting down, `send` completes with no outcome.)
 *
 * A 401 answered to credentials that `auth.invalidate()` can renew is resent once at once
 * (through the limiter) before the attempt counts as failed. Error reasons are scrubbed of
 * every auth and sensitive header value; stored records hold no header, URL or secret.
 *
 * @example
 * ```ts
 * const sink = new HttpSink({ destination, limiter, failedStore });
 * sink.send(job).subscribe((o) => console.log(o.status, o.attempts));
 * await sink.close();
 * ```
 *
 * @param options.auth @default createAuthProvider(destination.auth)
 * @param options.transport @default createTransport({ destination })
 * @param options.scheduler @default asyncScheduler
 * @param options.random @default Math.random
 * @param options.now @default Date.now
 * @param options.storeFailures @default true
 * @param options.logger @default none
 * @param options.warnIntervalMs @default 10_000
 */
export class HttpSink implements ExportSink {
  readonly destination: DestinationConfig;
  private readonly limiter: RateLimiter;
  private readonly failedStore: FailedRequestStore;
  private readonly transport: HttpTransport;
  private readonly auth: AuthProvider;
  private readonly scheduler: SchedulerLike;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly storeFailures: boolean;
  private readonly logger?: SinkLogger;
  private readonly onRetry?: HttpSinkOptions['onRetry'];
  private readonly warnIntervalMs: number;
  private lastWarnAt = Number.NEGATIVE_INFINITY;
  private storedSinceWarn = 0;
  /** Values of sensitive custom headers, scrubbed from reasons. */
  private readonly staticSecrets: string[];
  private readonly redactor: Redactor;
  private readonly build: RequestBuilder;
  /** What a first attempt (`FirstAttempt`) uses of this sink. */
  private readonly parts: FirstAttemptParts;
  private closed?: Promise<void>;

  constructor(options: HttpSinkOptions) {
    const d = HTTP_SINK_DEFAULTS;
    this.destination = options.destination;
    this.limiter = options.limiter;
    this.failedStore = options.failedStore;
    this.transport = options.transport ?? createTransport({ destination: options.destination });
    this.auth =
      options.auth ??
      createAuthProvider(options.destination.auth, authDepsFor(options.destination, this.transport));
    this.scheduler = options.scheduler ?? d.scheduler;
    this.random = options.random ?? d.random;
    this.now = options.now ?? d.now;
    this.storeFailures = options.storeFailures ?? d.storeFailures;
    this.logger = options.logger;
    this.onRetry = options.onRetry;
    this.warnIntervalMs = options.warnIntervalMs ?? d.warnIntervalMs;
    this.redactor = createRedactor(options.secrets ?? []);
    this.staticSecrets = Object.entries(options.destination.headers)
      .filter(([k, v]) => SENSITIVE_HEADER.test(k) && v.length >= d.minSecretLength)
      .map(([, v]) => v);
    this.build = requestBuilder(options.destination);
    this.parts = {
      limiter: this.limiter,
      auth: this.auth,
      transport: this.transport,
      build: (job) => this.build(job, this.now()),
      retryFrom: (job, err, used) => this.retryFrom(job, err, used),
    };
  }

  send(job: ExportJob): Observable<DeliveryOutcome> {
    // The first attempt runs without operators (`FirstAttempt`); only a failure builds the
    // retry chain, which goes on from there exactly as if it had made that attempt itself.
    return new Observable<DeliveryOutcome>((subscriber) => {
      const first = new FirstAttempt(this.parts, job, subscriber);
      first.start();
      return first;
    });
  }

  /**
   * The rest of a delivery whose first attempt failed with `err` (`used`: the auth headers
   * it was sent with, if it got that far): a renewable 401 resends at once, as part of attempt
   * 1; then retries with backoff from attempt 2 on, and the outcome or the failed record.
   */
  private retryFrom(job: ExportJob, err: unknown, used: Record<string, string> | undefined): Observable<DeliveryOutcome> {
    return defer(() => {
      const secrets = new Set(this.staticSecrets);
      if (used) for (const k in used) rememberSecret(secrets, used[k]!);
      // What the first attempt's own catchError does (see `attempt`), decided once and now.
      const first =
        used !== undefined && isStatus(err, 401) && this.auth.invalidate(used)
          ? this.attempt(job, false, secrets)
          : throwError(() => err);
      return this.deliver(job, secrets, first);
    });
  }

  /**
   * Attempts with backoff: attempt 1 is `first`, every later one `attempt(job, …)`; maps the
   * result to the outcome, a final failure to `fail` (a fenced job errors instead).
   */
  private deliver(job: ExportJob, secrets: Set<string>, first: Observable<TransportResponse>): Observable<DeliveryOutcome> {
    let attempts = 0;
    const { retry } = this.destination;
    return defer(() => {
      attempts += 1;
      return attempts === 1 ? first : this.attempt(job, true, secrets);
    }).pipe(
      retryWithBackoff<TransportResponse>({
        retries: HTTP_SINK_DEFAULTS.retries,
        minDelayMs: retry.minDelayMs,
        maxDelayMs: retry.maxDelayMs,
        retryAfterMaxMs: retry.retryAfterMaxMs,
        isRetryable: (err) => err instanceof DeliveryError && err.retryable,
        retryAfterMs: (err) => (err instanceof DeliveryError ? err.retryAfterMs : undefined),
        random: this.random,
        scheduler: this.scheduler,
        onRetry: this.onRetry ? (info) => this.onRetry?.({ ...info, job }) : undefined,
      }),
      map((res): DeliveryOutcome => ({ status: 'delivered', job, attempts, statusCode: res.statusCode })),
      // Fenced: not a delivery failure, and not to be stored: the new owner exports it.
      catchError((err: unknown) => (err instanceof FencedError ? throwError(() => err) : this.fail(job, attempts, err, secrets))),
    );
  }

  /** One attempt: permit → auth headers → request; a renewable 401 is resent once. */
  private attempt(job: ExportJob, renewOn401: boolean, secrets: Set<string>): Observable<TransportResponse> {
    return defer(() => {
      let used: Record<string, string> | undefined;
      return this.limiter.acquire().pipe(
        take(1),
        concatMap(() =>
          fromCancellable(async (cancellation) => {
            // Pool mode: after a pause past the lease, nothing may go out for this partition.
            if (job.guard && !job.guard()) throw fenced(job);
            const authHeaders = lowerKeys(await this.auth.authorize());
            used = authHeaders;
            for (const k in authHeaders) rememberSecret(secrets, authHeaders[k]!);
            const req = this.build(job, this.now());
            for (const k in authHeaders) req.headers[k] = authHeaders[k]!;
            return this.transport.send(req, { cancellation });
          }),
        ),
        catchError((err: unknown) =>
          renewOn401 && used !== undefined && isStatus(err, 401) && this.auth.invalidate(used)
            ? this.attempt(job, false, secrets)
            : throwError(() => err),
        ),
      );
    });
  }

  private fail(job: ExportJob, attempts: number, err: unknown, secrets: Set<string>): Observable<DeliveryOutcome> {
    const code = err instanceof HttpDestinationError ? err.code : 'ERR_INTERNAL';
    const statusCode = err instanceof DeliveryError ? err.statusCode : undefined;
    const rawReason = err instanceof Error ? err.message : String(err);
    // An endpoint may echo the request (URL, headers) in its error body: mask what we know.
    const reason = this.redactor.text(scrub(rawReason, secrets));
    const outcome: DeliveryOutcome = { status: 'failed', job, attempts, statusCode, code, error: reason };
    if (!this.storeFailures) return of(outcome);
    const record: FailedRequest = {
      id: job.idempotencyKey,
      dataflowId: job.dataflowId,
      destinationId: this.destination.id,
      profileId: job.profileId,
      idempotencyKey: job.idempotencyKey,
      payload: job.payload,
      attempts,
      lastStatus: statusCode,
      lastErrorCode: code,
      lastError: reason,
      failedAt: new Date(this.now()).toISOString(),
    };
    return from(this.failedStore.put(record)).pipe(
      catchError((storeErr: unknown) =>
        throwError(
          () =>
            new StoreError(
              `could not store the failed request ${job.idempotencyKey} of dataflow ${job.dataflowId}`,
              { cause: storeErr },
            ),
        ),
      ),
      map(() => {
        this.warnStored(job, { attempts, code, statusCode, reason });
        return outcome;
      }),
    );
  }

  private warnStored(job: ExportJob, info: { attempts: number; code: string; statusCode?: number; reason: string }): void {
    if (!this.logger) return;
    this.storedSinceWarn += 1;
    const at = this.now();
    if (at - this.lastWarnAt < this.warnIntervalMs) return;
    this.lastWarnAt = at;
    const storedSinceLastWarning = this.storedSinceWarn;
    this.storedSinceWarn = 0;
    // The logger is the dataflow's child logger (it carries dataflowId already).
    this.logger.warn(
      {
        destinationId: this.destination.id,
        idempotencyKey: job.idempotencyKey,
        ...info,
        storedSinceLastWarning,
      },
      'export failed; stored as a failed request',
    );
  }

  /** Closes the transport and the auth provider (idempotent). */
  close(): Promise<void> {
    this.closed ??= Promise.allSettled([this.auth.close(), this.transport.close()]).then((results) => {
      const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (bad) throw bad.reason;
    });
    return this.closed;
  }
}

/** What `FirstAttempt` needs of its sink. */
interface FirstAttemptParts {
  readonly limiter: RateLimiter;
  readonly auth: AuthProvider;
  readonly transport: HttpTransport;
  /** The request of a job, without auth headers. */
  build(job: ExportJob): HttpRequest;
  /** The rest of the delivery after a failed first attempt (`HttpSink.retryFrom`). */
  retryFrom(job: ExportJob, err: unknown, used: Record<string, string> | undefined): Observable<DeliveryOutcome>;
}

/**
 * The first attempt of one `send`, without operators: this object is the limiter's observer
 * (taking the first permit, synchronous or later), runs fence check → `authorize()` →
 * request, emits `delivered` and completes. Any failure (limiter error, fence, auth, HTTP)
 * hands over to `retryFrom`, subscribed with the same subscriber, so retries, the 401 renewal
 * and storing follow the usual rules with the attempt count going on from 1. It is also the
 * teardown: unsubscribing gives up a waiting permit and cancels the request in flight (the
 * retry chain, subscribed with the same subscriber, is torn down by RxJS).
 */
class FirstAttempt implements Observer<void>, Unsubscribable {
  private permit: Unsubscribable | undefined;
  private granted = false;
  /** Unsubscribed, or handed over to the retry chain: this object does nothing more. */
  private over = false;
  private readonly cancellation = new Cancellation();
  /** The auth headers the request went out with (lower-cased). */
  private used: Record<string, string> | undefined;

  constructor(
    private readonly parts: FirstAttemptParts,
    private readonly job: ExportJob,
    private readonly out: Subscriber<DeliveryOutcome>,
  ) {}

  start(): void {
    let sub: Unsubscribable;
    try {
      sub = this.parts.limiter.acquire().subscribe(this);
    } catch (err) {
      // As inside the retry chain's `defer`: a throwing limiter fails the attempt.
      if (!this.over) this.handOver(err);
      return;
    }
    // The in-memory bucket grants (and completes) inside subscribe(); a later grant finds `permit` set.
    if (this.granted || this.over) sub.unsubscribe();
    else this.permit = sub;
  }

  /** The limiter granted a permit (only the first one counts, as with `take(1)`). */
  next(): void {
    if (this.granted || this.over) return;
    this.granted = true;
    this.permit?.unsubscribe();
    this.permit = undefined;
    void this.run();
  }

  error(err: unknown): void {
    if (!this.granted && !this.over) this.handOver(err);
  }

  /** The limiter completed: without a permit (shutting down), `send` completes with no outcome. */
  complete(): void {
    if (!this.granted && !this.over) this.out.complete();
  }

  private async run(): Promise<void> {
    const { job, parts } = this;
    try {
      // Pool mode: after a pause past the lease, nothing may go out for this partition.
      if (job.guard && !job.guard()) throw fenced(job);
      const authHeaders = lowerKeys(await parts.auth.authorize());
      this.used = authHeaders;
      if (this.over) return;
      const req = parts.build(job);
      for (const k in authHeaders) req.headers[k] = authHeaders[k]!;
      // Unsubscribing from here on cancels the request.
      const res = await parts.transport.send(req, { cancellation: this.cancellation });
      if (this.over) return;
      this.out.next({ status: 'delivered', job, attempts: 1, statusCode: res.statusCode });
      this.out.complete();
    } catch (err) {
      if (!this.over) this.handOver(err);
    }
  }

  private handOver(err: unknown): void {
    this.over = true;
    this.parts.retryFrom(this.job, err, this.used).subscribe(this.out);
  }

  unsubscribe(): void {
    this.over = true;
    this.permit?.unsubscribe();
    this.permit = undefined;
    this.cancellation.cancel();
  }
}

function rememberSecret(secrets: Set<string>, value: string): void {
  if (value.length < HTTP_SINK_DEFAULTS.minSecretLength) return;
  secrets.add(value);
  // `Bearer abc…` / `Basic …`: the credential alone may be echoed too
  const sp = value.indexOf(' ');
  if (sp > 0 && value.length - sp - 1 >= HTTP_SINK_DEFAULTS.minSecretLength) secrets.add(value.slice(sp + 1));
}

/** Masks every known secret value in a reason. */
function scrub(text: string, secrets: Set<string>): string {
  let out = text;
  // longest first, so a full `Bearer x` is masked before its `x`
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) {
    if (out.includes(s)) out = out.split(s).join('[REDACTED]');
  }
  return out;
}

/**
 * Token requests share the destination's Agent (and its TLS settings) only when the token
 * endpoint has the same origin; another origin goes through undici's global dispatcher, so a
 * private CA or client certificate meant for the export endpoint does not apply to it.
 */
export function authDepsFor(dest: DestinationConfig, transport: HttpTransport, logger?: AuthDeps['logger']): AuthDeps {
  const a = dest.auth;
  let dispatcher: AuthDeps['dispatcher'];
  if (a.type === 'oauth2-client-credentials' || a.type === 'oauth2-password') {
    try {
      if (new URL(a.accessTokenUrl).origin === new URL(dest.url).origin) dispatcher = transport.dispatcher;
    } catch {
      // validated URLs: cannot happen; fall back to the global dispatcher
    }
  }
  return { dispatcher, proxy: dest.proxy, timeoutMs: dest.timeoutMs, logger };
}

/** The HttpSinks of a config, by dataflow id. */
export interface HttpSinks {
  /** The sink of a dataflow, or undefined for an unknown id. */
  get(dataflowId: string): HttpSink | undefined;
  readonly sinks: ReadonlyMap<string, HttpSink>;
  /** Closes every sink, then each shared transport and auth provider once. */
  close(): Promise<void>;
}

export interface CreateSinksOptions {
  failedStore: FailedRequestStore;
  /**
   * The rate limiter of a dataflow, called once per dataflow; inject the Redis-backed limiter
   * for a pool. Every attempt of the sink takes one permit: do not also rate-limit the same
   * jobs upstream with the same limiter.
   * @default (flow) => tokenBucket({ rate: flow.rateLimit, scheduler }) — per worker
   */
  limiterFor?: (dataflow: DataflowConfig) => RateLimiter;
  /** @default createTransport({ destination }) — one per destination */
  transportFor?: (destination: DestinationConfig) => HttpTransport;
  /** @default createAuthProvider(destination.auth, authDepsFor(destination, transport)) — one per destination */
  authFor?: (destination: DestinationConfig, transport: HttpTransport) => AuthProvider;
  /** A logger, or a function giving one per dataflow (a child logger). @default none */
  loggerFor?: (dataflowId: string) => SinkLogger | undefined;
  /** The logger of a destination's auth provider (token renewal warnings). @default none */
  authLoggerFor?: (destinationId: string) => SinkLogger | undefined;
  warnIntervalMs?: number;
  storeFailures?: boolean;
  scheduler?: SchedulerLike;
  random?: () => number;
  now?: () => number;
  onRetry?: HttpSinkOptions['onRetry'];
}

/**
 * Builds one HttpSink per dataflow of a config: dataflows of the same destination share one
 * transport (connection pool) and one auth provider (one token); each dataflow has its own
 * limiter from `limiterFor` (default: an in-memory token bucket at the dataflow's
 * `rateLimit`). Closing the set closes each shared resource once.
 *
 * @example
 * ```ts
 * const sinks = createSinks(config, {
 *   failedStore,
 *   limiterFor: (flow) => tokenBucket({ rate: flow.rateLimit }), // the default; a pool passes its shared limiter
 *   loggerFor: (id) => logger.child({ dataflowId: id }),
 * });
 * sinks.get('flow-1')?.send(job);
 * await sinks.close();
 * ```
 */
export function createSinks(
  config: Pick<AppConfig, 'destinations' | 'dataflows'> & Partial<Pick<AppConfig, 'secrets'>>,
  options: CreateSinksOptions,
): HttpSinks {
  const limiterFor =
    options.limiterFor ?? ((flow: DataflowConfig) => tokenBucket({ rate: flow.rateLimit, scheduler: options.scheduler }));
  const transportFor = options.transportFor ?? ((destination: DestinationConfig) => createTransport({ destination }));
  const authFor =
    options.authFor ??
    ((destination: DestinationConfig, transport: HttpTransport) =>
      createAuthProvider(destination.auth, authDepsFor(destination, transport, options.authLoggerFor?.(destination.id))));
  const shared = new Map<string, { transport: HttpTransport; auth: AuthProvider }>();
  const sinks = new Map<string, HttpSink>();
  const byId = new Map(config.destinations.map((d) => [d.id, d]));

  for (const flow of config.dataflows) {
    const destination = byId.get(flow.destinationId);
    if (!destination) throw new TypeError(`dataflow ${flow.id}: unknown destination ${flow.destinationId}`);
    let found = shared.get(destination.id);
    if (!found) {
      const transport = transportFor(destination);
      found = { transport, auth: authFor(destination, transport) };
      shared.set(destination.id, found);
    }
    const res = found;
    sinks.set(
      flow.id,
      new HttpSink({
        destination,
        limiter: limiterFor(flow),
        failedStore: options.failedStore,
        // the set owns the shared resources: a sink's own close() must not close them
        transport: { send: (req, opts) => res.transport.send(req, opts), dispatcher: res.transport.dispatcher, close: () => Promise.resolve() },
        auth: {
          authorize: () => res.auth.authorize(),
          invalidate: (h) => res.auth.invalidate(h),
          close: () => Promise.resolve(),
        },
        scheduler: options.scheduler,
        random: options.random,
        now: options.now,
        storeFailures: options.storeFailures,
        secrets: config.secrets,
        logger: options.loggerFor?.(flow.id),
        warnIntervalMs: options.warnIntervalMs,
        onRetry: options.onRetry,
      }),
    );
  }

  let closing: Promise<void> | undefined;
  return {
    get: (id) => sinks.get(id),
    sinks,
    close(): Promise<void> {
      closing ??= (async () => {
        await Promise.allSettled([...sinks.values()].map((s) => s.close()));
        const results = await Promise.allSettled(
          [...shared.values()].flatMap((r) => [r.auth.close(), r.transport.close()]),
        );
        const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (bad) throw bad.reason;
      })();
      return closing;
    },
  };
}
