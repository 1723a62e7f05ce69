/**
 * Test support for the backbone tests (test/backbone): real nats-server and redis-server,
 * configs written to a temporary folder, a recording HTTP receiver that can fail or go
 * down, the CLI (`node dist/cli/main.js …`, built by `npm run build`) as a child process,
 * and an oracle that computes, from the pure domain functions, the exports a single clean
 * run makes.
 *
 * This module only gathers them: each part lives in test/support/backbone/ (servers, config,
 * cli, receiver, settle, state, oracle, workload, fixture).
 *
 * Every setup is isolated by its `name`: stream `<NAME>_UPDATES`, subject `<name>.updates`,
 * durable `<name>-worker`, Redis prefix `<name>:`, receiver path `/<name>`.
 *
 * @example
 * const bb = await startBackbone();
 * const rx = await startRecordingReceiver();
 * const s = singleFlow({ bb, rx, name: 'demo' });
 * const expected = oracle(events, { audiences: s.audiences, dataflows: [s.rules] });
 * await s.prime();
 * await publish(bb, s.cfg, 'demo.jsonl', events);
 * const summary = await runOnce(s.cfg);
 * expect(coverage(rx.delivered(s.path), expected).missing).toEqual([]);
 */
export * from './backbone/servers.js';
export * from './backbone/config.js';
export * from './backbone/cli.js';
export * from './backbone/receiver.js';
export * from './backbone/settle.js';
export * from './backbone/state.js';
export * from './backbone/oracle.js';
export * from './backbone/workload.js';
export * from './backbone/fixture.js';
