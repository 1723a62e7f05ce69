/**
 * `acknowledge`: settles each envelope's source message — confirm then ack, or reject, or nak.
 */
import { asyncScheduler, type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs';
import type { RejectedEvent, RejectedEventStore } from '../sinks/types.js';
import type { SnapshotStore } from '../stores/types.js';
import type { SettledEnvelope } from './deliver-exports.js';
import { rejectedRecord } from './divert-rejected.js';
import { settle, step } from './internal/step.js';

export interface AcknowledgeOptions {
  /** The snapshot store whose replay record of the message is forgotten before the ack. */
  store: Pick<SnapshotStore, 'confirm'>;
  /** Where a poison event (`fault: rejected`) is kept with its code and reason. */
  rejected: Pick<RejectedEventStore, 'put'>;
  /** Delay asked of the source for a nak'ed message. @default 1000 */
  nakDelayMs?: number;
  /** After a message was acked with its exports settled. Must not throw. @default none */
  onAcked?: (env: SettledEnvelope) => void;
  /** After a poison event was stored and acked. Must not throw. @default none */
  onRejected?: (env: SettledEnvelope, record: RejectedEvent) => void;
  /** After a message was nak'ed (unsettled, or its rejection could not be stored). Must not throw. @default none */
  onNak?: (env: SettledEnvelope, err: unknown) => void;
  /** Clock of `rejectedAt`. @default asyncScheduler */
  scheduler?: SchedulerLike;
}

/** The defaults of `acknowledge`, named in one place. */
export const ACKNOWLEDGE_DEFAULTS = {
  nakDelayMs: 1_000,
  scheduler: asyncScheduler as SchedulerLike,
} as const;

/**
 * Settles each envelope's source message, then emits the envelope (in the order they settle):
 * - settled exports: the store forgets the message's replay record (`confirm`), **then** the
 *   message is acked. A crash in between only replays an update whose exports were already
 *   delivered (at least once, never lost). A failing `confirm` does not hold the ack back.
 * - `fault: rejected` (a poison event): stored in the rejected store with its code and reason,
 *   its replay record confirmed, acked; if the rejected store fails, nak'ed instead.
 * - `fault: unsettled`: nak'ed after `nakDelayMs` (it comes back; the replay record finds
 *   its exports again).
 *
 * @example
 * settled$.pipe(acknowledge({ store, rejected }))
 */
export function acknowledge(options: AcknowledgeOptions): MonoTypeOperatorFunction<SettledEnvelope> {
  const { store, rejected, onAcked, onRejected, onNak } = options;
  const nakDelayMs = options.nakDelayMs ?? ACKNOWLEDGE_DEFAULTS.nakDelayMs;
  const scheduler = options.scheduler ?? ACKNOWLEDGE_DEFAULTS.scheduler;
  return step<SettledEnvelope, SettledEnvelope>(() => (env, out) => {
    const { fault } = env;
    if (fault?.kind === 'unsettled') {
      env.msg.nak(nakDelayMs);
      // (a throwing nak errors the output, as a throwing ack does)
      onNak?.(env, fault.error);
      return out.next(env);
    }
    out.hold();
    const finish = (): void => {
      if (out.closed) return;
      out.next(env);
      out.release();
    };
    const confirmThenAck = (then: () => void): void => {
      const ack = (): void => {
        if (out.closed) return;
        try {
          env.msg.ack();
        } catch (err) {
          // The source cannot take acks any more (its connection is gone): stop the chain.
          return out.error(err);
        }
        then();
        finish();
      };
      // A backfill item or a rejection before the store step has no replay record.
      if (env.backfill || env.applied === undefined) return ack();
      // The exports are settled whatever happens to the bookkeeping: a confirm that fails
      // (store down) leaves a replay record the store bounds; the message is acked anyway.
      settle(() => store.confirm(env.update.profileId, env.msg.key), ack, ack);
    };
    if (fault === undefined) return confirmThenAck(() => onAcked?.(env));
    const record = rejectedRecord(env.msg, fault.error, scheduler.now());
    settle(
      () => rejected.put(record),
      () => confirmThenAck(() => onRejected?.(env, record)),
      (err: unknown) => {
        if (out.closed) return;
        env.msg.nak(nakDelayMs);
        onNak?.(env, err);
        finish();
      },
    );
  });
}
