/**
 * Test support for the worker-pool tests (test/pool): a pool config (JetStream source with
 * partitions and short leases, Redis store), worker processes that know their pool id and
 * parse their own logs, a live publisher that keeps updates flowing at a given rate, a
 * workload whose every update writes an increasing `bench.seq`, the ORDER check run over
 * every export the receiver got, and readers of the pool's state in Redis.
 *
 * Builds on test/support/backbone.ts (servers, receiver, CLI runner, oracle). This module only
 * gathers the parts, each in test/support/pool/ (config, workers, workload, publisher, checks,
 * probe, tenures, settle, fixture).
 *
 * @example
 * const bb = await startBackbone();
 * const rx = await startRecordingReceiver();
 * const s = poolFlow({ bb, rx, name: 'fo' });
 * await s.prime();
 * const workers = [s.start(), s.start(), s.start()];
 * const pub = startPublisher({ bb, setup: s, events, perSecond: 400 });
 * // … kill one, wait …
 * expect(orderViolations(rx.requests, s.path)).toEqual([]);
 */
export * from './pool/config.js';
export * from './pool/workers.js';
export * from './pool/workload.js';
export * from './pool/publisher.js';
export * from './pool/checks.js';
export * from './pool/probe.js';
export * from './pool/tenures.js';
export * from './pool/settle.js';
export * from './pool/fixture.js';
