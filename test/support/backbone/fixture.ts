/**
 * The fixture most backbone and pool test files share: a backbone and a recording receiver.
 */
import { afterAll, beforeAll } from 'vitest';
import { killAllCli } from './cli.js';
import { type RecordingReceiver, startRecordingReceiver } from './receiver.js';
import { type Backbone, startBackbone } from './servers.js';

/**
 * The fixture most backbone and pool test files share: a backbone and a recording receiver
 * started before the file's (or describe block's) tests, handed to `set`; after them every
 * CLI process is killed and both are stopped.
 *
 * @example
 * let bb: Backbone;
 * let rx: RecordingReceiver;
 * useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));
 */
export function useBackboneAndReceiver(set: (bb: Backbone, rx: RecordingReceiver) => void): void {
  let bb: Backbone | undefined;
  let rx: RecordingReceiver | undefined;
  beforeAll(async () => {
    bb = await startBackbone();
    rx = await startRecordingReceiver();
    set(bb, rx);
  });
  afterAll(async () => {
    await killAllCli();
    await rx?.close();
    await bb?.stop();
  });
}
