/**
 * Builds the stores and sinks a config names, behind their interfaces. The embedded
 * default (file source, local store with failed requests in it) needs no server; the real
 * backbone (JetStream, Redis) is loaded only when the config asks for it.
 */
import type { AppConfig, DataflowConfig } from '../config/load.js';
import type { RateLimiter } from '../stores/rate-limiter.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { FileFailedRequestStore, FileRejectedEventStore } from '../sinks/failed-file-store.js';
import { LocalFailedRequestStore, LocalRejectedEventStore } from '../sinks/failed-local-store.js';
import { LocalSnapshotStore } from '../stores/local-snapshot-store.js';
import { createSinks, type HttpSinks } from '../sinks/http/sinks.js';
import { createThreadTransport, sharedTransportThread } from '../sinks/http/thread-transport.js';
import { createTransport } from '../sinks/http/transport.js';
import type { FailedRequestStore, RejectedEventStore } from '../sinks/types.js';
import { MemorySnapshotStore } from '../stores/memory-snapshot-store.js';
import { tokenBucket } from '../stores/memory-rate-limiter.js';
import type { SnapshotStore } from '../stores/types.js';

export interface FailureStores {
  failed: FailedRequestStore;
  rejected: RejectedEventStore;
  close(): Promise<void>;
}

/** The failed-request and rejected-event stores of a config. */
export async function openFailureStores(config: AppConfig): Promise<FailureStores> {
  const f = config.failedRequests;
  if (f.kind === 'local') {
    const failed = new LocalFailedRequestStore({ path: f.path });
    const rejected = new LocalRejectedEventStore({ path: f.path });
    return { failed, rejected, close: async () => void (await Promise.all([failed.close(), rejected.close()])) };
  }
  if (f.kind === 'file') {
    const failed = new FileFailedRequestStore({ path: f.path });
    const rejected = new FileRejectedEventStore({ path: f.rejectedPath });
    return { failed, rejected, close: async () => void (await Promise.all([failed.close(), rejected.close()])) };
  }
  const { openJetStreamFailureStores } = await import('./backbone.js');
  return openJetStreamFailureStores(f);
}

export interface OpenSnapshotStoreOptions {
  /**
   * Take the local store's run lock (`run`): one `run` per local store; a second one fails
   * with `StoreLockedError` naming the store's path. Other commands leave it. @default false
   */
  exclusive?: boolean;
}

/** The snapshot store of a config. */
export async function openSnapshotStore(config: AppConfig, logger?: Logger, options: OpenSnapshotStoreOptions = {}): Promise<SnapshotStore> {
  const s = config.store;
  if (s.kind === 'memory') return new MemorySnapshotStore({ maxSnapshotBytes: config.worker.maxSnapshotBytes });
  if (s.kind === 'local') return LocalSnapshotStore.open({ path: s.path, exclusive: options.exclusive, maxSnapshotBytes: config.worker.maxSnapshotBytes, profileCacheBytes: s.profileCacheBytes });
  const { openRedisSnapshotStore } = await import('./backbone.js');
  return openRedisSnapshotStore(s, logger, { maxSnapshotBytes: config.worker.maxSnapshotBytes });
}

/** The sinks of `openSinks`: `ready()` resolves once they can send without a start-up delay. */
export interface OpenedSinks extends HttpSinks {
  /**
   * With `worker.httpThread`: starts the transport thread and resolves once it takes requests
   * (~0.2 s, loading undici). Await it before the first rate-limit permit: requests permitted
   * while the thread starts would otherwise reach the endpoint together. Never rejects.
   */
  ready(): Promise<void>;
}

/**
 * Whether undici runs on the process's transport thread (`worker.httpThread`): as configured,
 * else yes, whatever the store. In a pool (store `redis`) the send slots have a maximum age
 * (`maxPermitAgeMs`): the sink tells the transport until when a request's slot is good
 * (`SendOptions.permitDeadline`) and the thread checks it right before undici gets the
 * request, after its pace gate, so a thread that fell behind cannot put slots granted before
 * its stall on the wire together with other workers' later ones: such a request is not sent
 * and takes a new slot. (`?.`: configs made by hand in tests may lack `worker`.)
 */
export function httpThreadOf(config: Pick<AppConfig, 'worker'>): boolean {
  return config.worker?.httpThread ?? true;
}

/** One HTTP sink per dataflow, each with its own rate limiter (per worker, unless `limiterFor` gives pool-wide ones). */
export function openSinks(
  config: AppConfig,
  deps: {
    failed: FailedRequestStore;
    logger: Logger;
    storeFailures?: boolean;
    limiterFor?: (flow: DataflowConfig) => RateLimiter;
    /** Counts every attempt's answer by dataflow and status class, and the stale permits. @default none */
    metrics?: Pick<Metrics, 'httpResponse' | 'permitStale'>;
  },
): OpenedSinks {
  const onThread = httpThreadOf(config);
  const sinks = createSinks(config, {
    failedStore: deps.failed,
    transportFor: (destination) => (onThread ? createThreadTransport({ destination }) : createTransport({ destination })),
    // One worker: an in-process token bucket. A pool (Redis store): the pool-wide Redis send slots.
    limiterFor: deps.limiterFor ?? ((flow) => tokenBucket({ rate: flow.rateLimit })),
    loggerFor: (id) => deps.logger.child({ dataflowId: id }),
    authLoggerFor: (id) => deps.logger.child({ destinationId: id }),
    storeFailures: deps.storeFailures,
    onResponse: deps.metrics ? (id, status) => deps.metrics?.httpResponse(id, status) : undefined,
    onStale: deps.metrics ? (id) => deps.metrics?.permitStale(id) : undefined,
  });
  if (onThread) {
    // The thread's troubles are the process's (one thread for every destination): a warning, once each.
    sharedTransportThread().onTrouble ??= (why, pending) =>
      deps.logger.warn({ pending }, `transport thread ${why}: its ${pending} pending request(s) fail (retryable) and the next send starts a new thread`);
  }
  return Object.assign(sinks, { ready: () => (onThread ? sharedTransportThread().ready() : Promise.resolve()) });
}
