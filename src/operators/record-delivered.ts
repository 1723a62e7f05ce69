/**
 * `recordDelivered`: remembers, per (dataflow, profile), the version of the newest state each
 * envelope delivered — what makes an older send recognisable as superseded (SPEC §6).
 */
import type { MonoTypeOperatorFunction } from 'rxjs';
import type { DeliveredMarks } from '../stores/retry-queue.js';
import type { SettledEnvelope } from './deliver-exports.js';
import { settle, step } from './internal/step.js';

export interface RecordDeliveredOptions {
  marks: Pick<DeliveredMarks, 'record'>;
  /** The marks could not be written (the envelope goes on: its exports are delivered). Must not throw. @default none */
  onError?: (err: unknown, env: SettledEnvelope) => void;
}

/**
 * For each envelope with delivered exports that carry a `version`, records those versions
 * (`marks.record`, one call per envelope; the local store writes only the marks that may be
 * read — pairs with a queued export or a failed request — and answers once the put is issued,
 * before its commit: LMDB commits in issue order), then emits the envelope — before it is
 * acknowledged, so a mark is never missing for an acked delivery. A failed write is reported to `onError` and
 * the envelope goes on (a lost mark only lets an older queued or failed export be sent; the
 * order of live exports does not depend on it). Envelopes with nothing to record pass through
 * at once, synchronously.
 *
 * @example
 * planned$.pipe(deliverExports(...stages), recordDelivered({ marks }), acknowledge({ store, rejected }))
 */
export function recordDelivered(options: RecordDeliveredOptions): MonoTypeOperatorFunction<SettledEnvelope> {
  const { marks, onError } = options;
  return step<SettledEnvelope, SettledEnvelope>(() => (env, out) => {
    let batch: Array<{ dataflowId: string; profileId: string; version: number }> | undefined;
    for (const o of env.outcomes) {
      if (o === undefined || o.status !== 'delivered' || o.job.version === undefined) continue;
      (batch ??= []).push({ dataflowId: o.job.dataflowId, profileId: o.job.profileId, version: o.job.version });
    }
    if (batch === undefined) return out.next(env);
    out.hold();
    const go = (): void => {
      if (out.closed) return;
      out.next(env);
      out.release();
    };
    settle(
      () => marks.record(batch),
      go,
      (err: unknown) => {
        onError?.(err, env);
        go();
      },
    );
  });
}
