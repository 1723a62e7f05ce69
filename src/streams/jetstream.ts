/**
 * The JetStream source: a durable pull consumer turned into an Observable of SourceMessage,
 * with its consumer notifications on a separate typed stream. The stream and consumer
 * administration is in jetstream-admin.ts (re-exported here).
 */
import {
  jetstream,
  JetStreamApiCodes,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamManager,
} from '@nats-io/jetstream';
import {
  asyncScheduler,
  firstValueFrom,
  map,
  Observable,
  race,
  Subject,
  timer,
  type SchedulerLike,
  type Subscription,
} from 'rxjs';
import { HttpDestinationError } from '../errors.js';
import { connectNats, NatsError, withDefaults, type NatsHandle } from './nats.js';
import type { SourceMessage, SourceStatus } from './types.js';
import { ensureConsumer, ensureStream, errMessage, isApiError, jsError } from './jetstream-admin.js';
import { describe, SURFACED } from './jetstream-notifications.js';
import { toSourceMessage, type Outstanding } from './jetstream-message.js';

export {
  consumerResumePoint,
  createConsumer,
  deleteConsumer,
  ensureConsumer,
  ensureStream,
  subjectCovers,
  type CreateConsumerOptions,
  type EnsureConsumerOptions,
  type EnsureStreamOptions,
} from './jetstream-admin.js';

export { JETSTREAM_SOURCE_DEFAULTS } from './jetstream-defaults.js';
import { JETSTREAM_SOURCE_DEFAULTS } from './jetstream-defaults.js';

export interface JetStreamSourceOptions {
  /** NATS server URLs; each subscription opens its own connection. Required unless `connection`. */
  servers?: string | string[];
  /**
   * An open connection to consume on instead of connecting to `servers` (a worker's partition
   * consumers share one). The source never closes it, and does not forward its connection
   * events to `status$`: its owner does both, after `closed()`. It still errors when the
   * connection closes for good under a running subscription.
   */
  connection?: NatsHandle;
  /** Stream name, e.g. `PROFILES`. */
  stream: string;
  /** Subject the durable consumer filters on, e.g. `profiles.updates`. */
  subject: string;
  /** Durable consumer name, e.g. `http-destination`. */
  durable: string;
  /**
   * The stream's base subject, when `subject` is narrower (one partition `profiles.updates.3`,
   * or all of them `profiles.updates.>`): the stream is created with it. @default subject
   */
  streamSubject?: string;
  /** See `EnsureConsumerOptions.resumeInOrder`. @default false */
  resumeInOrder?: boolean;
  /**
   * Sets the durable consumer up instead of `ensureConsumer` (after `ensureStream`), when
   * `create` is true: e.g. a pool partition's consumer, created from its predecessor's ack
   * floor. Retried like a failed start, unless it throws an error with code
   * `ERR_JETSTREAM_CONFIG`, `ERR_JETSTREAM_CONSUMER_GONE` or `ERR_FENCED`: then
   * `messages$` errors with it.
   */
  prepare?: (jsm: JetStreamManager) => Promise<unknown>;
  /**
   * What a restart does once the subscription has consumed (its consumer was set up): when
   * true, it sets the consumer up again as before its first consume (re-creating a deleted
   * one, `create` permitting); when false, it only looks for it, and a consumer (or stream)
   * that is gone ends the subscription with `ConsumerGoneError` (`ERR_JETSTREAM_CONSUMER_GONE`).
   * A pool partition's consumer is deleted only by the partition's next owner: re-creating
   * it would consume behind the new owner's back. @default true
   */
  recreate?: boolean;
  /** @default 256 */
  batchSize?: number;
  /** @default 2048 */
  maxAckPending?: number;
  /** @default 30000 */
  ackWaitMs?: number;
  /** @default true: create stream and durable consumer when missing */
  create?: boolean;
  /** Connection name. @default `http-destination:<durable>` */
  name?: string;
  /** @default 250 */
  restartDelayMs?: number;
  /** @default 5000 */
  maxRestartDelayMs?: number;
  /** @default 5000 */
  closeGraceMs?: number;
  /** Scheduler for retry waits and the close grace. @default asyncScheduler */
  scheduler?: SchedulerLike;
}

export interface JetStreamSource {
  /**
   * Cold: each subscription connects (or uses `connection`), (creates and) consumes the
   * durable consumer; unsubscribing stops the consumer and closes the connection it opened
   * once the messages already emitted are settled (or `closeGraceMs` passed). Errors only
   * when it cannot go on (first connection refused, a durable that conflicts with the
   * options, a shared connection closed under it, its consumer gone with `recreate: false`,
   * a `prepare` that refuses for good).
   */
  messages$: Observable<SourceMessage>;
  /**
   * Resolves once every subscription made so far has been unsubscribed (or has errored) and no
   * longer consumes or calls the JetStream API: its pull subscription is closed, and a consumer
   * it was creating or re-creating at that moment is finished first. Acks of messages already
   * emitted may still go out after that (see `closed`). A pool worker waits for this before
   * releasing a partition or starting it again, so that the next consumer of the partition
   * never races this one's consumer calls.
   */
  stopped(): Promise<void>;
  /**
   * Resolves once, in addition to `stopped`, the messages those subscriptions emitted are
   * settled (or `closeGraceMs` passed) and the connections they opened are closed.
   */
  closed(): Promise<void>;
  /**
   * Hot: connection events (`disconnect`, `reconnect`, …; not those of a shared `connection`),
   * consumer notifications (`heartbeats_missed`, `consumer_deleted`, `consumer_not_found`,
   * `stream_not_found`, `exceeded_limits`, `no_responders`), `consumer_restart` when the source re-created
   * its consumer, and `error` for a failed (re)start it will retry. `fatal: true` precedes
   * an error of `messages$`.
   */
  status$: Observable<SourceStatus>;
}

/**
 * The durable consumer (or its stream) a running subscription consumed is gone, and the source
 * was told not to re-create it (`recreate: false`): someone else deleted it on purpose.
 */
export class ConsumerGoneError extends HttpDestinationError {
  declare readonly code: 'ERR_JETSTREAM_CONSUMER_GONE';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_JETSTREAM_CONSUMER_GONE', message, options);
  }
}

/** Codes of errors after which a source does not retry: its `messages$` errors. */
const FATAL_CODES: ReadonlySet<string> = new Set(['ERR_JETSTREAM_CONFIG', 'ERR_JETSTREAM_CONSUMER_GONE', 'ERR_FENCED']);

function isFatal(err: unknown): err is HttpDestinationError {
  return err instanceof HttpDestinationError && FATAL_CODES.has(err.code);
}

/**
 * A durable JetStream pull consumer as an Observable of SourceMessage (explicit ack).
 * `key` is `js:<stream>:<stream sequence>`, `seq` the stream sequence, `data` the bytes.
 * `ack()`, `working()`, `nak(delayMs)` map to the JetStream message. At most
 * `maxAckPending` messages are delivered and unacknowledged at once, so memory stays flat
 * under any backlog. The source recovers by itself: across reconnects (a nats-server
 * restart with its data folder) and by re-creating a deleted consumer.
 *
 * @example
 * const { messages$, status$ } = jetstreamSource({
 *   servers: 'nats://127.0.0.1:4222', stream: 'PROFILES',
 *   subject: 'profiles.updates', durable: 'http-destination',
 * });
 * status$.subscribe((s) => log.warn(s, 'jetstream'));
 * messages$.pipe(mergeMap(handle, 64)).subscribe();
 *
 * Options: `servers` or `connection`, `stream`, `subject`, `durable` (required);
 * `batchSize` (@default 256), `maxAckPending` (@default 2048), `ackWaitMs` (@default 30000),
 * `create` (@default true), `prepare`, `recreate` (@default true),
 * `name` (@default `http-destination:<durable>`),
 * `restartDelayMs` (@default 250), `maxRestartDelayMs` (@default 5000),
 * `closeGraceMs` (@default 5000), `scheduler` (@default asyncScheduler).
 */
export function jetstreamSource(options: JetStreamSourceOptions): JetStreamSource {
  const o = withDefaults({ ...JETSTREAM_SOURCE_DEFAULTS, scheduler: asyncScheduler as SchedulerLike }, options);
  const status = new Subject<SourceStatus>();
  /** Per subscription not yet stopped / not yet closed: resolves when it is. */
  const stopping = new Set<Promise<void>>();
  const closing = new Set<Promise<void>>();
  const track = (set: Set<Promise<void>>): (() => void) => {
    let done!: () => void;
    const p = new Promise<void>((resolve) => (done = resolve));
    set.add(p);
    return () => {
      set.delete(p);
      done();
    };
  };
  const all = async (set: Set<Promise<void>>): Promise<void> => {
    await Promise.all([...set]);
  };

  const messages$ = new Observable<SourceMessage>((subscriber) => {
    let stopped = false;
    const stop$ = new Subject<void>();
    const markStopped = track(stopping);
    const markClosed = track(closing);
    let handle: NatsHandle | undefined;
    let statusSub: Subscription | undefined;
    let closedSub: Subscription | undefined;
    let current: ConsumerMessages | undefined;
    /** Emitted and not yet acked/naked. */
    const open: Outstanding = { count: 0, settled$: new Subject<void>() };

    /** Waits `ms` on the scheduler, or less when stopped. */
    const pause = (ms: number) =>
      firstValueFrom(race(timer(ms, o.scheduler), stop$), { defaultValue: undefined });

    /** Forwards notifications; closes the consumer messages when it must be re-created. */
    const watch = async (msgs: ConsumerMessages): Promise<void> => {
      for await (const n of msgs.status()) {
        const surfaced = SURFACED[n.type];
        if (!surfaced) continue;
        status.next({ kind: n.type, message: describe(n) });
        if (surfaced.restart && !stopped) {
          await msgs.close();
          return;
        }
      }
    };

    const fail = (err: unknown) => {
      if (stopped) return;
      const e = isFatal(err) ? err : jsError('jetstream source', err);
      status.next({ kind: 'error', message: e.message, fatal: true });
      subscriber.error(e);
    };

    const connectOwn = async (): Promise<NatsHandle> => {
      if (o.servers === undefined) {
        throw new NatsError('ERR_NATS_CONNECT', 'jetstream source: neither servers nor a connection given');
      }
      const own = await connectNats({ servers: o.servers, name: o.name ?? `http-destination:${o.durable}` });
      handle = own;
      statusSub = own.status$.subscribe((s) => status.next(s));
      return own;
    };

    const run = async () => {
      const nats = o.connection ?? (await connectOwn());
      if (stopped) return;
      // status$ completes when the connection is closed for good (a subscription, not a
      // callback on nc.closed(): a shared connection outlives many subscriptions).
      closedSub = nats.status$.subscribe({
        complete: () => {
          void nats.nc.closed().then((err) => {
            if (!stopped) {
              fail(new NatsError('ERR_NATS_CLOSED', `NATS connection closed${err ? `: ${err.message}` : ''}`));
            }
          });
        },
      });
      const js = jetstream(nats.nc);
      let attempt = 0;
      let restarting = false;
      /** A message was emitted: later (re)starts must not recreate the consumer. */
      let started = false;
      /** A consume() of this subscription began: its consumer was set up. */
      let consumed = false;
      const recreate = o.recreate !== false;
      while (!stopped) {
        try {
          const jsm = await jetstreamManager(nats.nc);
          if (o.create && !stopped && (recreate || !consumed)) {
            await ensureStream({ jsm, stream: o.stream, subject: o.streamSubject ?? o.subject });
            if (o.prepare) await o.prepare(jsm);
            else {
              await ensureConsumer({
                jsm,
                stream: o.stream,
                subject: o.subject,
                durable: o.durable,
                maxAckPending: o.maxAckPending,
                ackWaitMs: o.ackWaitMs,
                // Only before this subscription's first message: later restarts keep what is in flight.
                resumeInOrder: o.resumeInOrder === true && !started,
              });
            }
          }
          if (stopped) return;
          const consumer = await js.consumers.get(o.stream, o.durable).catch((err: unknown) => {
            const gone = isApiError(err, JetStreamApiCodes.ConsumerNotFound) || isApiError(err, JetStreamApiCodes.StreamNotFound);
            if (gone && consumed && !recreate) {
              throw new ConsumerGoneError(`consumer ${o.stream}/${o.durable} is gone; not re-creating it`, { cause: err });
            }
            throw err;
          });
          if (stopped) return;
          const msgs = await consumer.consume({
            max_messages: o.batchSize,
            callback: (m) => {
              // Arrived while stopping: hand it back at once (another worker may take it).
              if (stopped) {
                try {
                  m.nak();
                } catch {
                  /* connection closed: redelivered after ack_wait */
                }
              } else {
                started = true;
                subscriber.next(toSourceMessage(m, o.stream, o.scheduler.now(), open));
              }
            },
          });
          current = msgs;
          consumed = true;
          if (stopped) return;
          if (restarting) {
            status.next({ kind: 'consumer_restart', message: `consuming ${o.stream}/${o.durable} again` });
          }
          attempt = 0;
          await Promise.all([watch(msgs), msgs.closed()]);
          current = undefined;
          if (stopped) return;
          restarting = true;
        } catch (err) {
          if (stopped) return;
          if (isFatal(err)) throw err;
          restarting = true;
          status.next({ kind: 'error', message: `${errMessage(err)}; retrying` });
        }
        const wait = Math.min(o.maxRestartDelayMs, o.restartDelayMs * 2 ** attempt);
        attempt = Math.min(attempt + 1, 30);
        await pause(wait);
      }
    };

    const running = run().catch(fail);

    return () => {
      stopped = true;
      stop$.next();
      stop$.complete();
      void (async () => {
        try {
          // No new messages: stop the consumer (also one that `run` starts while stopping).
          await current?.close().catch(() => undefined);
          await running;
          await current?.close().catch(() => undefined);
        } finally {
          closedSub?.unsubscribe();
          markStopped();
        }
        try {
          // The messages already emitted may still be acked for a while.
          if (open.count > 0) {
            await firstValueFrom(
              race(open.settled$, timer(o.closeGraceMs, o.scheduler).pipe(map(() => undefined))),
              { defaultValue: undefined },
            );
          }
          statusSub?.unsubscribe();
          // Only the connection it opened: a shared one belongs to its owner.
          await handle?.close();
        } finally {
          markClosed();
        }
      })();
    };
  });

  return { messages$, stopped: () => all(stopping), closed: () => all(closing), status$: status.asObservable() };
}
