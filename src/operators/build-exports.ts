/**
 * `buildExports`: the HTTP jobs of each decided envelope, one per exporting dataflow.
 */
import { map, type OperatorFunction } from 'rxjs';
import { exitedAudiences } from '../domain/diff.js';
import { eventIdentity, eventTime, idempotencyKey } from '../domain/keys.js';
import { buildPayload, preparePayloadRules, type PayloadRules } from '../domain/payload.js';
import type { Audience, DataflowRules } from '../domain/types.js';
import { toEventRejection } from '../errors.js';
import type { ExportJob } from '../sinks/types.js';
import type { DecidedEnvelope } from './detect-exports.js';

/** A decided envelope with the HTTP jobs it causes, one per exporting dataflow. */
export interface PlannedEnvelope extends DecidedEnvelope {
  jobs: ExportJob[];
}

export interface BuildExportsOptions {
  dataflows: readonly DataflowRules[];
  /** The audience catalog (config `audiences`). */
  audiences: readonly Audience[];
}

/**
 * Builds one export job per decision: the payload of SPEC §4 and an Idempotency-Key that is
 * the same for every retry, redelivery and replay of that export. Sets `jobs` on the same
 * envelope (no copy); the payload rules are prepared once.
 *
 * A throw while building (a decision naming an unknown dataflow, a bug met on this event's
 * data) rejects the event (`fault: rejected`, `ERR_EVENT_SHAPE`). A faulted envelope passes
 * through untouched, with no jobs.
 *
 * @example
 * decided$.pipe(buildExports({ dataflows: config.dataflows, audiences: config.audiences }))
 */
export function buildExports(options: BuildExportsOptions): OperatorFunction<DecidedEnvelope, PlannedEnvelope> {
  const rules = new Map<string, { rules: PayloadRules; destinationId: string }>();
  for (const flow of options.dataflows) {
    rules.set(flow.id, { rules: preparePayloadRules(flow, options.audiences), destinationId: flow.destinationId });
  }
  const jobsOf = (env: DecidedEnvelope): ExportJob[] => {
    if (env.decisions.length === 0) return [];
    const { update } = env;
    const event = eventIdentity(update, env.msg.key);
    const time = eventTime(update);
    const exited = exitedAudiences(env.applied);
    // A replay overtaken by newer updates exports the newest state (never an older one).
    const state = env.applied.latest ? { ...env.applied, after: env.applied.latest } : env.applied;
    return env.decisions.map((d): ExportJob => {
      const flow = rules.get(d.dataflowId);
      if (!flow) throw new Error(`no payload rules for dataflow ${d.dataflowId}`);
      return {
        dataflowId: d.dataflowId,
        destinationId: flow.destinationId,
        profileId: update.profileId,
        idempotencyKey: idempotencyKey({ dataflowId: d.dataflowId, profileId: update.profileId, event }),
        payload: buildPayload(state, flow.rules, exited),
        eventTime: time,
        guard: env.msg.fence?.isCurrent,
        // Set by queueBehind; named here so the job keeps it in-object (no property array).
        version: undefined,
      };
    });
  };
  return map((env) => {
    const planned = env as PlannedEnvelope;
    planned.jobs = [];
    if (env.fault) return planned;
    try {
      planned.jobs = jobsOf(env);
    } catch (err) {
      env.fault = { kind: 'rejected', error: toEventRejection(err, 'build') };
    }
    return planned;
  });
}
