/**
 * Connecting to NATS: one place that knows the reconnect policy (forever, with a bounded
 * wait) and turns the client's status events into a typed Observable.
 */
import { connect, type NatsConnection, type Status } from '@nats-io/transport-node';
import { firstValueFrom, from, map, Observable, race, Subject, timer } from 'rxjs';
import { HttpDestinationError } from '../errors.js';
import type { SourceStatus } from './types.js';

/** Codes of NATS / JetStream failures. */
export type NatsErrorCode =
  | 'ERR_NATS_CONNECT' // the first connection could not be made
  | 'ERR_NATS_CLOSED' // the connection closed for good while in use
  | 'ERR_JETSTREAM' // a JetStream API call failed
  | 'ERR_JETSTREAM_CONFIG' // an existing stream/consumer conflicts with what is asked
  | 'ERR_JETSTREAM_PUBLISH'; // a publish was not acknowledged

/** A NATS or JetStream failure. Messages name servers without credentials. */
export class NatsError extends HttpDestinationError {
  declare readonly code: NatsErrorCode;
  constructor(code: NatsErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Defaults of {@link connectNats}, named in one place. */
export const NATS_DEFAULTS = {
  /** Wait between reconnect attempts (the client adds jitter). */
  reconnectTimeWaitMs: 1_000,
  /** Random extra wait added to each reconnect attempt. */
  reconnectJitterMs: 250,
  /** How long the first connection may take. */
  connectTimeoutMs: 5_000,
  /** Client pings; a dead server is noticed after `pingIntervalMs * maxPingOut`. */
  pingIntervalMs: 10_000,
  maxPingOut: 3,
  /** Keep retrying the *first* connection too, instead of failing at once. */
  waitOnFirstConnect: false,
  /** How long `close()` waits for a drain before closing outright. */
  drainTimeoutMs: 5_000,
} as const;

export interface ConnectNatsOptions {
  /** `nats://host:port` URLs (a comma-separated string is split). */
  servers: string | string[];
  /** Connection name shown by the server (`nats-server` monitoring, logs). */
  name?: string;
  /** @default 1000 */
  reconnectTimeWaitMs?: number;
  /** @default 250 */
  reconnectJitterMs?: number;
  /** @default 5000 */
  connectTimeoutMs?: number;
  /** @default 10000 */
  pingIntervalMs?: number;
  /** @default false: fail at once when no server answers the first time. */
  waitOnFirstConnect?: boolean;
  /** @default 5000 */
  drainTimeoutMs?: number;
}

/** An open NATS connection with its status stream. */
export interface NatsHandle {
  readonly nc: NatsConnection;
  /**
   * Connection events (`disconnect`, `reconnect`, `error`, `stale_connection`,
   * `slow_consumer`, `ldm`, `close`). Hot; completes when the connection closes.
   * Client pings and per-attempt `reconnecting` events are not emitted.
   */
  readonly status$: Observable<SourceStatus>;
  /** Drains and closes the connection (idempotent). */
  close(): Promise<void>;
}

/**
 * `defaults` overridden by the options that are set: an option given as `undefined`
 * (an optional config field passed through) keeps its default.
 */
export function withDefaults<D extends object, O extends object>(defaults: D, options: O): WithDefaults<D, O> {
  const set = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  return { ...defaults, ...set } as WithDefaults<D, O>;
}

/** The options `O` with every key of `D` present (never `undefined`). */
export type WithDefaults<D, O> = Omit<O, keyof D> & {
  [K in keyof D]: K extends keyof O ? Exclude<O[K], undefined> | D[K] : D[K];
};

/** Splits a servers option into a list. */
export function serverList(servers: string | string[]): string[] {
  const list = Array.isArray(servers) ? servers : servers.split(',');
  return list.map((s) => s.trim()).filter((s) => s.length > 0);
}

/** A server URL with any `user:password@` removed, for messages and logs. */
export function redactServer(server: string): string {
  return server.replace(/\/\/[^@/]*@/, '//');
}

/** Maps a client status event to a SourceStatus; `undefined` for routine ones. */
function toSourceStatus(s: Status): SourceStatus | undefined {
  switch (s.type) {
    case 'disconnect':
      return { kind: 'disconnect', message: `disconnected from ${redactServer(s.server)}` };
    case 'reconnect':
      return { kind: 'reconnect', message: `reconnected to ${redactServer(s.server)}` };
    case 'error':
      return { kind: 'error', message: `server error: ${s.error.message}` };
    case 'staleConnection':
      return { kind: 'stale_connection', message: 'connection is stale (pings unanswered)' };
    case 'slowConsumer':
      return { kind: 'slow_consumer', message: `slow consumer: ${s.pending} messages pending` };
    case 'ldm':
      return { kind: 'ldm', message: `server ${redactServer(s.server)} entered lame duck mode` };
    case 'close':
      return { kind: 'close', message: 'connection closed' };
    default:
      // ping, reconnecting (one per attempt), update, forceReconnect: routine.
      return undefined;
  }
}

/**
 * Connects to NATS with reconnect forever (`maxReconnectAttempts: -1`) and a bounded wait
 * between attempts; connection events come out of `status$`.
 *
 * @example
 * const nats = await connectNats({ servers: 'nats://127.0.0.1:4222', name: 'worker-1' });
 * nats.status$.subscribe((s) => log.warn(s, 'nats'));
 * // … use nats.nc …
 * await nats.close();
 *
 * Options: `servers` (required), `name`, `reconnectTimeWaitMs` (@default 1000),
 * `reconnectJitterMs` (@default 250), `connectTimeoutMs` (@default 5000),
 * `pingIntervalMs` (@default 10000), `waitOnFirstConnect` (@default false),
 * `drainTimeoutMs` (@default 5000).
 *
 * @throws NatsError `ERR_NATS_CONNECT` when the first connection fails.
 */
export async function connectNats(options: ConnectNatsOptions): Promise<NatsHandle> {
  const o = withDefaults(NATS_DEFAULTS, options);
  const servers = serverList(o.servers);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      name: o.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: o.reconnectTimeWaitMs,
      reconnectJitter: o.reconnectJitterMs,
      timeout: o.connectTimeoutMs,
      pingInterval: o.pingIntervalMs,
      maxPingOut: NATS_DEFAULTS.maxPingOut,
      waitOnFirstConnect: o.waitOnFirstConnect,
    });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new NatsError(
      'ERR_NATS_CONNECT',
      `cannot connect to NATS at ${servers.map(redactServer).join(',')}: ${reason}`,
      { cause: err },
    );
  }

  const status = new Subject<SourceStatus>();
  void (async () => {
    for await (const s of nc.status()) {
      const mapped = toSourceStatus(s);
      if (mapped) status.next(mapped);
    }
  })()
    .catch(() => undefined)
    .finally(() => status.complete());
  void nc.closed().then(() => status.complete());

  let closing: Promise<void> | undefined;
  return {
    nc,
    status$: status.asObservable(),
    close() {
      closing ??= (async () => {
        if (nc.isClosed()) return;
        // Draining needs the server; while it is away, give up after a bound and close.
        const drained = nc.drain().then(
          () => true,
          () => false, // already closing or closed
        );
        const inTime = await firstValueFrom(
          race(from(drained), timer(o.drainTimeoutMs).pipe(map(() => false))),
        );
        if (!inTime && !nc.isClosed()) await nc.close().catch(() => undefined);
      })();
      return closing;
    },
  };
}
