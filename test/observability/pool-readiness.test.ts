/**
 * The pool's readiness check (`/readyz`): ok while the worker holds a partition lease or is a
 * live member of the pool (a healthy join), failing with the reason otherwise. (With a real
 * pool of two workers: test/observability/delay-e2e.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { poolCheck } from '../../src/observability/health-probes.js';
import type { PoolCoordinator } from '../../src/worker/pool.js';

function coordinator(o: { held: number; live: boolean }): PoolCoordinator {
  const stub = {
    workerId: 'host-1-abc',
    held: () => Array.from({ length: o.held }, (_, partition) => ({ partition, epoch: 1, revoking: false })),
    status: async () => ({ pool: 'hd', nowMs: 0, workers: [{ id: 'host-1-abc', live: o.live, partitions: [] }], partitions: [] }),
  };
  return stub as unknown as PoolCoordinator;
}

async function settled(c: PoolCoordinator): Promise<ReturnType<ReturnType<typeof poolCheck>['check']>> {
  const check = poolCheck(c, { intervalMs: 20 });
  try {
    for (let i = 0; i < 100 && check.check().reason === 'not checked yet'; i++) await new Promise((r) => setTimeout(r, 10));
    return check.check();
  } finally {
    await check.close?.();
  }
}

describe('pool readiness', () => {
  it('is ok holding a lease, or as a live member holding none', async () => {
    expect(await settled(coordinator({ held: 2, live: false }))).toEqual({ name: 'pool', ok: true });
    expect(await settled(coordinator({ held: 0, live: true }))).toEqual({ name: 'pool', ok: true });
  });
  it('fails, saying why, with no lease and no live membership', async () => {
    expect(await settled(coordinator({ held: 0, live: false }))).toEqual({ name: 'pool', ok: false, reason: 'worker host-1-abc holds no partition and is not a live member of pool hd' });
  });
});
