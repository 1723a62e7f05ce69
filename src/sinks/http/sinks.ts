/**
 * The HTTP sinks of a config: one `HttpSink` per dataflow, sharing one transport and one auth
 * provider per destination.
 */
import type { SchedulerLike } from 'rxjs';
import type { AppConfig, DataflowConfig, DestinationConfig } from '../../config/load.js';
import { tokenBucket } from '../../stores/memory-rate-limiter.js';
import type { RateLimiter } from '../../stores/rate-limiter.js';
import type { FailedRequestStore } from '../types.js';
import { authDepsFor, createAuthProvider } from './auth/index.js';
import type { AuthProvider } from './auth/types.js';
import { HttpSink, type HttpSinkOptions, type SinkLogger } from './sink.js';
import { createTransport, type HttpTransport } from './transport.js';

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
  /** Every attempt's answer status, per dataflow (see `HttpSinkOptions.onResponse`). @default none */
  onResponse?: (dataflowId: string, statusCode: number | undefined) => void;
  /** Every stale-permit answer, per dataflow (see `HttpSinkOptions.onStale`). @default none */
  onStale?: (dataflowId: string) => void;
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
        // (`dispatcher` read on use: a thread transport makes its main-side dispatcher only when asked)
        transport: {
          send: (req, opts) => res.transport.send(req, opts),
          get dispatcher() {
            return res.transport.dispatcher;
          },
          close: () => Promise.resolve(),
        },
        auth: {
          fixedHeaders: res.auth.fixedHeaders,
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
        onResponse: options.onResponse ? (status) => options.onResponse?.(flow.id, status) : undefined,
        onStale: options.onStale ? () => options.onStale?.(flow.id) : undefined,
        // the dataflow's limit, for a transport that reaches the socket later than it is called (thread transport)
        pace: { key: flow.id, perSecond: flow.rateLimit },
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
