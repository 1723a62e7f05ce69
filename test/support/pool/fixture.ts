/**
 * The fixture every pool test file uses for its common setup: a backbone and a recording
 * receiver for the file, pool setups on them with a probe of the pool's state in Redis, and
 * after each test the probes closed and the workers it started and left running SIGKILLed.
 */
import { afterEach } from 'vitest';
import { useBackboneAndReceiver, type Backbone, type RecordingReceiver } from '../backbone.js';
import { poolFlow, type PoolSetup } from './config.js';
import { fullyOwnedBy, ownedBy, PoolProbe, type LeaseSample } from './probe.js';
import type { PoolWorker } from './workers.js';

/** `poolFlow`'s options but the backbone and receiver (the fixture's). */
export type PoolFlowOptions = Omit<Parameters<typeof poolFlow>[0], 'bb' | 'rx'>;

/** A pool setup of the fixture: `start()` workers are SIGKILLed after the test if still running. */
export interface PoolTestSetup extends PoolSetup {
  /** Reads this pool's state in Redis; made on first use, closed after the test. */
  readonly probe: PoolProbe;
  /**
   * Waits until `workers` share the partitions: each partition leased to one of them (a live
   * member), each of them holding some. Returns that sample. @default timeoutMs 45000
   */
  sharedBy(workers: readonly PoolWorker[], what?: string, timeoutMs?: number): Promise<LeaseSample>;
  /** Starts `n` workers and waits until they share the partitions (`sharedBy`). */
  startSharing(n: number): Promise<PoolWorker[]>;
}

export interface PoolFixture {
  /** The file's backbone (nats-server, redis-server, temp folder); inside tests only. */
  readonly bb: Backbone;
  /** The file's recording receiver; inside tests only. */
  readonly rx: RecordingReceiver;
  /** `poolFlow` on the fixture's backbone and receiver. */
  flow(o: PoolFlowOptions): PoolTestSetup;
}

/**
 * Call once at the top of a pool test file (or describe block).
 *
 * @example
 * const pool = usePoolFixture();
 * it('…', async () => {
 *   const s = pool.flow({ name: 'fo' });
 *   await s.prime();
 *   const workers = [s.start(), s.start()];
 *   await s.probe.waitFor((x) => fullyOwnedBy(x, workers) === '', 45_000, 'both workers owning');
 * });
 */
export function usePoolFixture(): PoolFixture {
  let bb: Backbone | undefined;
  let rx: RecordingReceiver | undefined;
  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));
  const probes: PoolProbe[] = [];
  const started: PoolWorker[] = [];
  afterEach(async () => {
    for (const p of probes.splice(0)) p.close();
    const running = started.splice(0).filter((w) => w.running);
    for (const w of running) w.kill('SIGKILL');
    await Promise.all(running.map((w) => w.exited));
  });
  const backbone = (): Backbone => {
    if (!bb) throw new Error('pool fixture: the backbone is only there inside a test');
    return bb;
  };
  const receiver = (): RecordingReceiver => {
    if (!rx) throw new Error('pool fixture: the receiver is only there inside a test');
    return rx;
  };
  return {
    get bb() {
      return backbone();
    },
    get rx() {
      return receiver();
    },
    flow(o) {
      const setup = poolFlow({ ...o, bb: backbone(), rx: receiver() });
      const start = setup.start;
      let probe: PoolProbe | undefined;
      const t = Object.defineProperties(setup, {
        start: {
          value: (): PoolWorker => {
            const w = start();
            started.push(w);
            return w;
          },
        },
        probe: {
          get: (): PoolProbe => {
            if (!probe) {
              probe = new PoolProbe(backbone().redis.url, setup);
              probes.push(probe);
            }
            return probe;
          },
        },
        sharedBy: {
          value: (workers: readonly PoolWorker[], what = `${workers.map((w) => w.name).join(', ')} sharing the partitions`, timeoutMs = 45_000) =>
            t.probe.waitFor((x) => fullyOwnedBy(x, workers) === '' && workers.every((w) => ownedBy(x, w).length > 0), timeoutMs, what, { workers }),
        },
        startSharing: {
          value: async (n: number): Promise<PoolWorker[]> => {
            const workers = Array.from({ length: n }, () => t.start());
            await t.sharedBy(workers);
            return workers;
          },
        },
      }) as PoolTestSetup;
      return t;
    },
  };
}
