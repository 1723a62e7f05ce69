/**
 * A pool worker that finds the pool's partition count changed exits 2 (a config error the
 * systemd unit does not restart), naming source.partitions.
 */
import { describe, expect, it } from 'vitest';
import { runCli, singleFlow, useBackboneAndReceiver, type Backbone, type RecordingReceiver } from '../support/backbone.js';

describe('pool partition count', () => {
  let bb: Backbone;
  let rx: RecordingReceiver;
  useBackboneAndReceiver((b, r) => ((bb = b), (rx = r)));

  it('exits 2 naming source.partitions when the pool was created with another count', async () => {
    const setup = singleFlow({ bb, rx, name: 'parts', source: { partitions: 4 } });
    await setup.prime(); // records 4 partitions for the pool
    const other = { ...setup.config, source: { ...(setup.config.source as object), partitions: 8 } };
    const cfg = bb.writeFile('parts-8.json', other);
    const r = await runCli(['run', '--config', cfg, '--once'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/config error:\s+source\.partitions: pool "parts-worker" has 4 partitions but this worker is configured with 8/);
  });
});
