/**
 * Shared helpers of the retry-queue operators' marble tests (queue-behind, queue-retries,
 * record-delivered): tasks, thenables that settle on the TestScheduler, a recording queue.
 */
import { expect } from 'vitest';
import { TestScheduler } from 'rxjs/testing';
import { DeliveryError } from '../src/errors.js';
import type { ExportTask } from '../src/operators/deliver-exports.js';
import type { ExportJob } from '../src/sinks/types.js';

export const scheduler = (): TestScheduler => new TestScheduler((a, b) => expect(a).toEqual(b));
export const job = (id: string, over: Partial<ExportJob> = {}): ExportJob => ({ dataflowId: 'f', destinationId: 'd', profileId: id, idempotencyKey: id, payload: {}, ...over });
export const task = (id: string, over: Partial<ExportTask> = {}): ExportTask => ({ job: job(id), attempts: 0, ...over });
export const http = (status: number): DeliveryError => new DeliveryError('ERR_HTTP_STATUS', `HTTP ${status}`, { retryable: status >= 500 || status === 429, statusCode: status });

/** A thenable settled `delay` frames later on the TestScheduler (0: at once, synchronously). */
export function later<T>(ts: TestScheduler, delay: number, work: () => T): Promise<T> {
  const t = {
    then(ok: (v: T) => void, fail: (e: unknown) => void) {
      const go = (): void => {
        try {
          ok(work());
        } catch (err) {
          fail(err);
        }
      };
      if (delay > 0) ts.schedule(go, delay);
      else go();
      return t;
    },
  };
  return t as unknown as Promise<T>;
}

export const brief = (t: ExportTask): string =>
  `${t.job.profileId}:${t.outcome ? `${t.outcome.status}/${t.outcome.attempts}` : t.abandoned ? `abandoned ${(t.abandoned as { code?: string }).code ?? String(t.abandoned)}` : t.error ? `error/${t.attempts}` : 'open'}`;
