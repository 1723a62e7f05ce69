import { catchError, concatMap, defer, map, of, type MonoTypeOperatorFunction } from 'rxjs';
import type { SnapshotStore } from '../stores/types.js';
import type { SettledEnvelope } from './deliver-exports.js';

export interface AcknowledgeOptions {
  /** The snapshot store whose replay record of the message is forgotten before the ack. */
  store: Pick<SnapshotStore, 'confirm'>;
}

/**
 * Acknowledges each settled envelope's source message: first the store forgets the
 * message's replay record, then the message is acked. A crash in between only replays an
 * update whose exports were already delivered (at least once, never lost). A failing
 * `confirm` does not hold the ack back.
 *
 * @example
 * settled$.pipe(acknowledge({ store }))
 */
export function acknowledge<T extends SettledEnvelope>(options: AcknowledgeOptions): MonoTypeOperatorFunction<T> {
  const { store } = options;
  return concatMap((env) =>
    defer(() => store.confirm(env.update.profileId, env.msg.key)).pipe(
      // The exports are settled whatever happens to the bookkeeping: a confirm that fails
      // (store down) leaves a replay record the store bounds; the message is acked anyway.
      catchError(() => of(undefined)),
      map(() => {
        env.msg.ack();
        return env;
      }),
    ),
  );
}
