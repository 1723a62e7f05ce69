import { map, type OperatorFunction } from 'rxjs';
import { decideExports, isIn } from '../domain/diff.js';
import type { DataflowRules, ExportDecision } from '../domain/types.js';
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
 * is in the audience being backfilled.
 *
 * @example
 * applied$.pipe(detectExports({ dataflows: config.dataflows }))
 */
export function detectExports(options: DetectExportsOptions): OperatorFunction<AppliedEnvelope, DecidedEnvelope> {
  const { dataflows } = options;
  return map((env) => ({ ...env, decisions: decisionsFor(env, dataflows) }));
}

/**
 * The decision step of {@link detectExports} for one applied envelope, as a plain function
 * (the fused per-message path of the worker's pipeline calls it directly).
 */
export function decisionsFor(env: AppliedEnvelope, dataflows: readonly DataflowRules[]): ExportDecision[] {
  const b = env.backfill;
  // A stale redelivery was applied and settled before: it owes nothing.
  if (env.applied.stale) return [];
  if (!b) return decideExports(env.applied, dataflows);
  // Backfill: the profile is exported to its dataflow if it is (still) in the audience.
  const inAudience = isIn(env.applied.after.memberships[b.audienceId]);
  return inAudience ? [{ dataflowId: b.dataflowId, reasons: ['backfill'], entered: [], exited: [] }] : [];
}
