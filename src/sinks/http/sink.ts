/**
 * The HTTP sink: one attempt of an export job (credentials → request → fence check → the
 * transport), and the record of a final failure. The rate limit and the retries are the
 * chain's operators (`rateLimit`, `retryExports`); `send(job)` composes the same operators
 * for one job (what `failed replay` uses).
 */
import { performance } from 'node:perf_hooks';
import { asyncScheduler, Observable, of, type SchedulerLike } from 'rxjs';
import { SENSITIVE_HEADER, type DestinationConfig } from '../../config/load.js';
import { DeliveryError, FencedError, hasCode, HttpDestinationError, StoreError } from '../../errors.js';
import { throttledWarn, type WarnLogger } from '../../observability/throttled-warn.js';
import { attemptExports } from '../../operators/attempt-exports.js';
import { rateLimit, slot } from '../../operators/rate-limit.js';
import { retryExports } from '../../operators/retry-exports.js';
import type { RetryInfo } from '../../operators/retry-with-backoff.js';
import { storeFailedExports } from '../../operators/store-failed-exports.js';
import type { ExportTask } from '../../operators/deliver-exports.js';
import type { RateLimiter } from '../../stores/rate-limiter.js';
import type {
  AttemptCancellation,
  DeliveryOutcome,
  ExportJob,
  ExportSender,
  ExportSink,
  FailedRequest,
  FailedRequestStore,
  RetryDelays,
} from '../types.js';
import { authDepsFor, createAuthProvider } from './auth/index.js';
import type { AuthProvider } from './auth/types.js';
import { createRedactor, processSecrets, type Redactor } from '../../observability/redact.js';
import { requestBuilder, type HttpRequest, type RequestBuilder } from './request.js';
import { sharedClock } from './shared-clock.js';
import { createTransport, type HttpTransport, type Pace, type TransportResponse } from './transport.js';



/** The least a sink needs of a logger (pino's `Logger` fits). */
export type SinkLogger = WarnLogger;

/** Every default of the HTTP sink, named in one place. */
export const HTTP_SINK_DEFAULTS = {
  /** Retries after the first attempt (SPEC §6: three attempts in all). */
  retries: 2,
  storeFailures: true,
  scheduler: asyncScheduler as SchedulerLike,
  random: Math.random,
  now: Date.now,
  /** Monotonic clock of a permit's age, ms. */
  clock: (): number => performance.now(),
  /** Shortest header value treated as a secret when scrubbing error reasons. */
  minSecretLength: 4,
  /** Auth header values remembered for scrubbing (the newest; tokens are renewed now and then). */
  maxRememberedSecrets: 64,
  /** At most one "stored as failed" warning per sink in this window; the others are counted in the next. */
  warnIntervalMs: 10_000,
  /**
   * Stale-permit answers (`ERR_PERMIT_STALE`) in a row that one attempt resends after with a
   * new permit; the next one fails the attempt (retryable). Each resend costs a permit; on a
   * loaded 2-core host a stalled transport thread answered up to 3 in a row.
   */
  maxStaleResends: 5,
} as const;

export interface HttpSinkOptions {
  /** The destination, as resolved by the config loader. */
  destination: DestinationConfig;
  /** The dataflow's limiter: the chain's `rateLimit` and `send` take one slot per attempt from it. */
  limiter: RateLimiter;
  /** Where final failures go. */
  failedStore: FailedRequestStore;
  /** @default createAuthProvider(destination.auth, …) */
  auth?: AuthProvider;
  /** @default createTransport({ destination }) */
  transport?: HttpTransport;
  /** Scheduler of the backoff waits of `send`. @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Jitter source of `send`, in [0, 1). @default Math.random */
  random?: () => number;
  /** Clock (signature timestamps, `failedAt`), ms since epoch. @default Date.now */
  now?: () => number;
  /** Monotonic clock (ms) of a send permit's age (see `attempt`). @default performance.now */
  clock?: () => number;
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
  /** Called before each retry wait of `send` (metrics). @default none */
  onRetry?: (info: RetryInfo & { job: ExportJob }) => void;
  /**
   * Told the status of every HTTP attempt's answer (`undefined`: no answer — connection error,
   * timeout), for the per-dataflow response-class metric. Must not throw. @default none
   */
  onResponse?: (statusCode: number | undefined) => void;
  /**
   * Told of every stale-permit answer (`ERR_PERMIT_STALE`: the permit expired before the
   * request reached the socket, nothing was sent, the request takes a new permit), for the
   * per-dataflow metric. Must not throw. @default none
   */
  onStale?: () => void;
  /**
   * The dataflow's pace, given to the transport with every request (`SendOptions.pace`): a
   * transport that reaches the socket later than it is called (the thread transport) keeps
   * it there. @default none
   */
  pace?: Pace;
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
 * Delivers export jobs to one destination for one dataflow.
 *
 * - `attempt(job, cancellation)` — THE attempt, called as its send permit is granted: auth
 *   headers; a new permit from the limiter when the first is older than the limiter's
 *   `maxPermitAgeMs` by then; the request; the fence check (`job.guard()`) immediately before
 *   the request is handed to the transport (after every await); the transport, told until when
 *   the permit is good (`SendOptions.permitDeadline`, when the limiter has a `maxPermitAgeMs`).
 *   A transport that would reach the socket later (the thread transport: its message queue,
 *   its pace gate, a stall) sends nothing and answers `ERR_PERMIT_STALE`: that is no answer of
 *   the endpoint's, so the same attempt takes a new permit, checks the fence again and resends
 *   — no attempt counted, no `onResponse`, nothing stored; after `maxStaleResends` (5) such
 *   resends in a row the next stale answer fails the attempt like a connection error
 *   (retryable: the retry stage counts it, backs off, and takes a permit of its own). A 401 answered
 *   to credentials that `auth.invalidate()` can renew rejects with `credentialsRenewed` (the
 *   retry stage resends once at once). With fixed credentials (`auth.fixedHeaders`: none,
 *   bearer) they are built into every request once and nothing is awaited before the socket
 *   (no `authorize()` call, and the permit cannot age on the way).
 * - `fail(job, attempts, err)` — a final failure: the record (no header, URL or secret; every
 *   auth and sensitive header value scrubbed from the reason) goes to the failed-request store
 *   (unless `storeFailures` is false), a throttled warning, a `failed` outcome; `StoreError`
 *   when it cannot be stored.
 * - `send(job)` — one job end to end through the chain's own delivery operators (rate limit →
 *   attempt → retries → failed store): cold, emits exactly one outcome; errors with
 *   `FencedError`, `StoreError`, or `ERR_RATE_LIMITER` when the limiter closes first.
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
 * @param options.clock @default performance.now
 * @param options.storeFailures @default true
 * @param options.logger @default none
 * @param options.warnIntervalMs @default 10_000
 */
export class HttpSink implements ExportSink, ExportSender {
  readonly destination: DestinationConfig;
  /** The dataflow's limiter (the chain's `rateLimit` takes its slots from it). */
  readonly limiter: RateLimiter;
  readonly retryDelays: RetryDelays;
  private readonly failedStore: FailedRequestStore;
  private readonly transport: HttpTransport;
  private readonly auth: AuthProvider;
  private readonly scheduler: SchedulerLike;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly clock: () => number;
  /** The limiter's `maxPermitAgeMs`: Infinity when it has none (a permit is used whenever). */
  private readonly maxPermitAgeMs: number;
  private readonly storeFailures: boolean;
  private readonly onRetry?: HttpSinkOptions['onRetry'];
  private readonly onResponse?: HttpSinkOptions['onResponse'];
  private readonly onStale?: HttpSinkOptions['onStale'];
  private readonly pace: Pace | undefined;
  private readonly warnStored: (obj: object, msg: string) => void;
  /** Auth header values seen (the newest few) that the redactor does not know: scrubbed from reasons. */
  private readonly seenSecrets = new Set<string>();
  private readonly redactor: Redactor;
  private readonly build: RequestBuilder;
  /**
   * The request builder with the auth provider's `fixedHeaders` built in, when it has them:
   * `attempt` then has nothing to await before the socket.
   */
  private readonly buildFixed: RequestBuilder | undefined;
  private closed?: Promise<void>;

  constructor(options: HttpSinkOptions) {
    const d = HTTP_SINK_DEFAULTS;
    this.destination = options.destination;
    this.limiter = options.limiter;
    this.retryDelays = { ...options.destination.retry };
    this.failedStore = options.failedStore;
    this.transport = options.transport ?? createTransport({ destination: options.destination });
    this.auth =
      options.auth ??
      createAuthProvider(options.destination.auth, authDepsFor(options.destination, this.transport));
    this.scheduler = options.scheduler ?? d.scheduler;
    this.random = options.random ?? d.random;
    this.now = options.now ?? d.now;
    this.clock = options.clock ?? d.clock;
    this.maxPermitAgeMs = options.limiter.maxPermitAgeMs ?? Infinity;
    this.storeFailures = options.storeFailures ?? d.storeFailures;
    this.onRetry = options.onRetry;
    this.onResponse = options.onResponse;
    this.onStale = options.onStale;
    this.pace = options.pace;
    this.warnStored = throttledWarn({
      logger: options.logger,
      intervalMs: options.warnIntervalMs ?? d.warnIntervalMs,
      now: this.now,
      countAs: 'storedSinceLastWarning',
    });
    // Sensitive custom header values: masked by the redactor, in every form, with the config's.
    const staticSecrets = Object.entries(options.destination.headers)
      .filter(([k, v]) => SENSITIVE_HEADER.test(k) && v.length >= d.minSecretLength)
      .map(([, v]) => v);
    this.redactor = createRedactor([...(options.secrets ?? []), ...staticSecrets]);
    this.build = requestBuilder(options.destination);
    const fixed = this.auth.fixedHeaders;
    if (fixed) {
      for (const k in fixed) this.rememberSecret(fixed[k]!);
      this.buildFixed = requestBuilder(options.destination, fixed);
    }
  }

  attempt(job: ExportJob, cancellation: AttemptCancellation, options?: { renewOn401?: boolean }): Promise<{ statusCode: number }> {
    const build = this.buildFixed;
    if (build === undefined) return this.attemptWithAuth(job, cancellation, options);
    // Fixed credentials: nothing is awaited between the permit (granted in this synchronous
    // run) and the transport, so the permit is fresh and the fence check is the last moment on
    // this thread (a transport that reaches the socket later checks the permit's deadline there).
    if (job.guard && !job.guard()) return Promise.reject(fenced(job));
    let req: HttpRequest;
    try {
      req = build(job, this.now());
    } catch (err) {
      return Promise.reject(err);
    }
    // A 401 cannot be helped by renewing fixed credentials: no `invalidate` here.
    if (this.maxPermitAgeMs === Infinity) return this.transport.send(req, { cancellation, pace: this.pace }).then(this.answered, this.refused);
    // The permit was granted in this synchronous run: it is good for `maxPermitAgeMs` from now.
    return this.sendWithin(job, req, cancellation, this.maxPermitAgeMs);
  }

  /**
   * Hands `req` to the transport with its permit's deadline (`permitLeftMs` from now, on
   * `sharedClock()`; none when Infinity) and tells `onResponse` of the answer. A stale-permit
   * answer (`ERR_PERMIT_STALE`: nothing was sent) takes a new permit, checks the fence again
   * and sends the same request again (`resendStale`), up to `maxStaleResends` times in a row;
   * the next one rejects the attempt (retryable). Neither is told to `onResponse`: the endpoint
   * saw nothing. No promise of its own on the way: one `then` on the transport's.
   */
  private sendWithin(job: ExportJob, req: HttpRequest, cancellation: AttemptCancellation, permitLeftMs: number, resends = 0): Promise<TransportResponse> {
    const permitDeadline = permitLeftMs === Infinity ? undefined : sharedClock() + permitLeftMs;
    return this.transport.send(req, { cancellation, pace: this.pace, permitDeadline }).then(this.answered, (err: unknown) => {
      if (!hasCode(err, 'ERR_PERMIT_STALE')) return this.refused(err);
      this.onStale?.();
      if (resends >= HTTP_SINK_DEFAULTS.maxStaleResends) throw err;
      return this.resendStale(job, req, cancellation, resends + 1);
    });
  }

  /** The `resends`-th send of a request whose permit went stale: a new permit, the fence, the request again. */
  private async resendStale(job: ExportJob, req: HttpRequest, cancellation: AttemptCancellation, resends: number): Promise<TransportResponse> {
    await this.freshPermit(cancellation);
    // Fencing at the last moment again: the new permit may have taken a while.
    if (job.guard && !job.guard()) throw fenced(job);
    return this.sendWithin(job, req, cancellation, this.maxPermitAgeMs, resends);
  }

  /** A 2xx answer of the fixed-credentials path (a bound method: no closure per request). */
  private readonly answered = (res: TransportResponse): TransportResponse => {
    this.onResponse?.(res.statusCode);
    return res;
  };

  /** A failed attempt of the fixed-credentials path. */
  private readonly refused = (err: unknown): never => {
    this.onResponse?.(err instanceof DeliveryError ? err.statusCode : undefined);
    throw err;
  };

  /** `attempt` with credentials from `auth.authorize()` (OAuth2, or any provider without `fixedHeaders`). */
  private async attemptWithAuth(
    job: ExportJob,
    cancellation: AttemptCancellation,
    options?: { renewOn401?: boolean },
  ): Promise<{ statusCode: number }> {
    // The caller's permit was granted just now: the delivery operators call `attempt` in the
    // same synchronous run as the limiter's grant (rateLimit → attemptExports; slot → attempt).
    const permitAt = this.clock();
    const authHeaders = lowerKeys(await this.auth.authorize());
    for (const k in authHeaders) this.rememberSecret(authHeaders[k]!);
    // A permit grown old on the way (credentials awaited, an event loop stalled) would let
    // requests that waited reach the endpoint together with fresh ones, past the limiter's
    // bound: such a request takes a new permit. No limiter call while the permit is fresh.
    let permitLeftMs = this.maxPermitAgeMs - (this.clock() - permitAt);
    if (permitLeftMs < 0) {
      await this.freshPermit(cancellation);
      permitLeftMs = this.maxPermitAgeMs;
    }
    const req = this.build(job, this.now());
    for (const k in authHeaders) req.headers[k] = authHeaders[k]!;
    // Fencing at the last moment: after every await (the slot, the credentials, a new permit),
    // right before the request leaves. Pool mode: after a pause past the lease, nothing goes out.
    if (job.guard && !job.guard()) throw fenced(job);
    try {
      return await this.sendWithin(job, req, cancellation, permitLeftMs);
    } catch (err) {
      if ((options?.renewOn401 ?? true) && isStatus(err, 401) && this.auth.invalidate(authHeaders)) {
        const e = err as DeliveryError;
        throw new DeliveryError(e.code, e.message, {
          retryable: e.retryable,
          statusCode: e.statusCode,
          retryAfterMs: e.retryAfterMs,
          dataflowId: e.dataflowId,
          credentialsRenewed: true,
          cause: e,
        });
      }
      throw err;
    }
  }

  async fail(job: ExportJob, attempts: number, err: unknown): Promise<DeliveryOutcome> {
    const code = err instanceof HttpDestinationError ? err.code : 'ERR_INTERNAL';
    const statusCode = err instanceof DeliveryError ? err.statusCode : undefined;
    const rawReason = err instanceof Error ? err.message : String(err);
    // An endpoint may echo the request (URL, headers) in its error body: mask what we know.
    // One masking pass in the usual case: the redactor knows the config's secrets, sensitive
    // header values and every token an auth provider registered; only auth values it does not
    // know (a custom provider's) are scrubbed first.
    const reason = this.redactor.text(this.seenSecrets.size > 0 ? scrub(rawReason, this.seenSecrets) : rawReason);
    const outcome: DeliveryOutcome = { status: 'failed', job, attempts, statusCode, code, error: reason };
    if (!this.storeFailures) return outcome;
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
      version: job.version,
    };
    try {
      await this.failedStore.put(record);
    } catch (storeErr) {
      throw new StoreError(`could not store the failed request ${job.idempotencyKey} of dataflow ${job.dataflowId}`, {
        cause: storeErr,
      });
    }
    // The logger is the dataflow's child logger (it carries dataflowId already).
    this.warnStored(
      { destinationId: this.destination.id, idempotencyKey: job.idempotencyKey, attempts, code, statusCode, reason },
      'export failed; stored as a failed request',
    );
    return outcome;
  }

  send(job: ExportJob): Observable<DeliveryOutcome> {
    return new Observable<DeliveryOutcome>((subscriber) => {
      // One job through the same delivery operators as the chain's tail.
      const task: ExportTask = { job, attempts: 0 };
      return of(task)
        .pipe(
          rateLimit<ExportTask>({ limiter: this.limiter, refused: (t, err) => (t.abandoned = err) }),
          attemptExports({ sinkFor: () => this }),
          retryExports({
            sinkFor: () => this,
            limiterFor: () => this.limiter,
            retries: HTTP_SINK_DEFAULTS.retries,
            scheduler: this.scheduler,
            random: this.random,
            onRetry: this.onRetry,
          }),
          storeFailedExports({ sinkFor: () => this }),
        )
        .subscribe({
          next: (t) => {
            if (t.outcome !== undefined) {
              subscriber.next(t.outcome);
              subscriber.complete();
            } else subscriber.error(t.abandoned ?? t.error);
          },
          error: (err: unknown) => subscriber.error(err),
        });
    });
  }

  /**
   * A new permit from the limiter (honouring its wait). Cancelling the attempt gives the place
   * up and resolves: the transport then rejects at once ("request cancelled"). Rejects as the
   * limiter refuses (`ERR_RATE_LIMITER` when it closes).
   */
  private freshPermit(cancellation: AttemptCancellation): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let over = false;
      const sub = slot(this.limiter).subscribe({
        next: () => {
          over = true;
          resolve();
        },
        error: (err: unknown) => {
          over = true;
          reject(err);
        },
      });
      if (!over) {
        cancellation.attach({
          cancel: () => {
            sub.unsubscribe();
            resolve();
          },
        });
      }
    });
  }

  private rememberSecret(value: string): void {
    const min = HTTP_SINK_DEFAULTS.minSecretLength;
    const seen = this.seenSecrets;
    if (value.length < min || seen.has(value) || processSecrets.has(value)) return;
    while (seen.size >= HTTP_SINK_DEFAULTS.maxRememberedSecrets) {
      const oldest = seen.values().next().value;
      if (oldest === undefined) break;
      seen.delete(oldest);
    }
    seen.add(value);
    // `Bearer abc…` / `Basic …`: the credential alone may be echoed too
    const sp = value.indexOf(' ');
    if (sp > 0 && value.length - sp - 1 >= min) seen.add(value.slice(sp + 1));
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

/** Masks every known secret value in a reason. */
function scrub(text: string, secrets: ReadonlySet<string>): string {
  let out = text;
  // longest first, so a full `Bearer x` is masked before its `x`
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) {
    if (out.includes(s)) out = out.split(s).join('[REDACTED]');
  }
  return out;
}

