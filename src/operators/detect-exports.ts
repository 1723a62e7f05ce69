/**
 * `detectExports`: decides, per dataflow, whether an applied update is exported.
 */
import { map, type OperatorFunction } from 'rxjs';
import { decideExports, isIn } from '../domain/diff.js';
import type { DataflowRules, ExportDecision } from '../domain/types.js';
import { toEventRejection } from '../errors.js';
import type { AppliedEnvelope } from './apply-snapshot.js';

/** An applied envelope with the dataflows that must export it. */
export interface DecidedEnvelope extends AppliedEnvelope {
  /** One entry per dataflow that exports this update (SPEC §3); empty when none does. */
  decisions: ExportDecision[];
}

export interface DetectExportsOptions {
  dataflows: readonly DataflowRules[];
}

/**
 * Decides per dataflow whether an applied update is exported: a mapped audience entered or
 * exited, or — while the profile is in a mapped audience — its identity map changed or a
 * mapped attribute was written. A backfill item exports to its one dataflow when the profile
 * is in the audience being backfilled. Sets `decisions` on the same envelope (no copy).
 *
 * A throw while deciding (a bug met on this event's data) rejects the event
 * (`fault: rejected`, `ERR_EVENT_SHAPE`) instead of stopping the chain. A faulted envelope
 * passes through untouched.
 *
 * @example
 * applied$.pipe(detectExports({ dataflows: config.dataflows }))
 */
export function detectExports(options: DetectExportsOptions): OperatorFunction<AppliedEnvelope, DecidedEnvelope> {
  const { dataflows } = options;
  return map((env) => {
    const decided = env as DecidedEnvelope;
    if (env.fault) {
      decided.decisions = [];
      return decided;
    }
    try {
      decided.decisions = decisionsFor(env, dataflows);
    } catch (err) {
      decided.decisions = [];
      env.fault = { kind: 'rejected', error: toEventRejection(err, 'detect') };
    }
    return decided;
  });
}

/** The decisions for one applied envelope (none for a stale redelivery). */
function decisionsFor(env: AppliedEnvelope, dataflows: readonly DataflowRules[]): ExportDecision[] {
  const b = env.backfill;
  // A stale redelivery was applied and settled before: it owes nothing.
  if (env.applied.stale) return [];
  if (!b) return decideExports(env.applied, dataflows);
  // Backfill: the profile is exported to its dataflow if it is (still) in the audience.
  const inAudience = isIn(env.applied.after.memberships[b.audienceId]);
  return inAudience ? [{ dataflowId: b.dataflowId, reasons: ['backfill'], entered: [], exited: [] }] : [];
}
