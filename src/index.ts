/**
 * The public API: the operators, sources, sinks, stores and types a developer composes a
 * pipeline with. Everything else is internal.
 */
export type * from './domain/types.js';
export { applyUpdate } from './domain/merge.js';
export { decideExports } from './domain/diff.js';
export { buildPayload, preparePayloadRules, type PayloadRules } from './domain/payload.js';
export { idempotencyKey } from './domain/keys.js';
export { decodeEvent, validateEvent } from './domain/validate.js';

export * from './errors.js';

export type { SourceMessage, SourceStatus } from './streams/types.js';
export { fileSource, type Source, type FileSourceOptions } from './streams/file.js';

export type { Envelope, EnvelopeFault } from './streams/envelope.js';
export { decodeEvents, type Decoded } from './operators/decode-events.js';
export { divertRejected } from './operators/divert-rejected.js';
export { profileGate, type ProfileGate } from './operators/profile-gate.js';
export { step, type StepOutput } from './operators/internal/step.js';
export { applySnapshot, type AppliedEnvelope } from './operators/apply-snapshot.js';
export { detectExports, type DecidedEnvelope } from './operators/detect-exports.js';
export { buildExports, type PlannedEnvelope } from './operators/build-exports.js';
export { filterExports, matchesFilter, type ExportFilter } from './operators/filter-exports.js';
export { deliverExports, type SettledEnvelope, type ExportTask } from './operators/deliver-exports.js';
export { attemptExports } from './operators/attempt-exports.js';
export { retryExports } from './operators/retry-exports.js';
export { storeFailedExports } from './operators/store-failed-exports.js';
export { acknowledge } from './operators/acknowledge.js';
export { rateLimit } from './operators/rate-limit.js';
export { retryWithBackoff, backoffDelay } from './operators/retry-with-backoff.js';

export type * from './sinks/types.js';
export { HttpSink, type HttpSinkOptions } from './sinks/http/sink.js';
export { createSinks } from './sinks/http/sinks.js';
export { FileFailedRequestStore, FileRejectedEventStore } from './sinks/failed-file-store.js';
export { LocalFailedRequestStore, LocalRejectedEventStore } from './sinks/failed-local-store.js';
export { replayFailedRequests } from './sinks/replay.js';

export type { SnapshotStore, ApplyContext, ApplyResult } from './stores/types.js';
export type { RateLimiter } from './stores/rate-limiter.js';
export { LocalSnapshotStore } from './stores/local-snapshot-store.js';
export { MemorySnapshotStore } from './stores/memory-snapshot-store.js';
export { RedisSnapshotStore } from './stores/redis-snapshot-store.js';
export { tokenBucket } from './stores/memory-rate-limiter.js';

export { loadConfigFile, resolveConfig, type AppConfig, type DestinationConfig, type DataflowConfig } from './config/load.js';
export { exportPipeline, type PipelineOptions } from './worker/pipeline.js';
export { startWorker, type WorkerHandle, type RunSummary } from './worker/worker.js';
