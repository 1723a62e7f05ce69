/**
 * The HTTP transport with undici on a worker thread (issues 10 and 12: main-thread headroom).
 * Sending through undici costs the main thread 30–39 µs of busy time per request; handed to a
 * thread in batches it costs ~2.5 µs. `createThreadTransport` has `createTransport`'s
 * contract (./transport.ts): same answers, same `DeliveryError`s, same cancellation; only
 * where undici runs differs.
 *
 * - One `TransportThread` per process (`sharedTransportThread()`, ./thread-host.ts), started on the first send,
 *   shared by every destination; each destination opens its own dispatcher inside it
 *   (`createDestinationDispatcher`: the inline transport's settings, TLS, mTLS, proxy).
 * - Requests go to the thread, and answers come back, one `postMessage` per event-loop turn
 *   each way (./thread-protocol.ts).
 * - Secrets and redaction stay on the main thread (./thread-host.ts): the thread returns the raw status, headers and at most
 *   `errorExcerptBytes` of an error body, or an error's cause chain; this side builds the
 *   errors with `statusError` (and the process redactor) or `classify`.
 * - The overall deadline runs in the thread (the inline `Exchange`'s `Deadlines`); should the
 *   thread die, every pending request rejects at once with a retryable `ERR_HTTP_CONNECTION`
 *   ("transport thread exited …") and the next send starts a new thread.
 * - The thread keeps the process alive only while requests (or closes) are pending; it is
 *   terminated when the last of its transports is closed.
 * - `SendOptions.pace` (a dataflow's rate limit, passed by its sink — `HttpSinkOptions.pace`,
 *   set by `createSinks`): the thread holds a request rather than let more than `perSecond`
 *   of the dataflow leave in any sliding second, or leave closer to the previous ones than the
 *   limit's spacing allows (./pace-gate.ts) — the permits were granted earlier, on the main thread.
 * - `SendOptions.permitDeadline` (when the send permit expires, on `sharedClock()`, which both
 *   threads read alike): the thread checks it last, right before undici gets the request (after
 *   the pace gate let it go); past it, nothing is sent and the send rejects with
 *   `ERR_PERMIT_STALE`, as the inline transport does.
 */
import type { Dispatcher } from 'undici';
import { DeliveryError } from '../../errors.js';
import { processRedactor, type Redactor } from '../../observability/redact.js';
import { sharedTransportThread, type TransportThread } from './thread-host.js';
import type { ChannelSettings } from './thread-protocol.js';
import { createDestinationDispatcher, sender, urlTargets, type DispatcherSettings, type HttpTransport } from './transport.js';

export { sharedTransportThread, TransportThread, type TransportThreadOptions } from './thread-host.js';

export interface ThreadTransportOptions {
  destination: DispatcherSettings;
  /** @default sharedTransportThread() */
  thread?: TransportThread;
  /** Clock for `Retry-After` HTTP-dates, ms since epoch. @default Date.now */
  now?: () => number;
  /**
   * Masks secrets in the excerpt of an error answer, on the main thread. @default
   * processRedactor (every secret known to the process, runtime tokens included)
   */
  redactor?: Redactor;
}

/** Buffers as they cross to the thread (copied by structured clone). */
function channelSettings(d: DispatcherSettings): ChannelSettings {
  const s: ChannelSettings = { connections: d.connections, timeoutMs: d.timeoutMs };
  if (d.tls) s.tls = { cert: d.tls.cert, key: d.tls.key, ca: d.tls.ca, passphrase: d.tls.passphrase, rejectUnauthorized: d.tls.rejectUnauthorized };
  if (d.proxy) s.proxy = { ...d.proxy };
  return s;
}

/**
 * Creates the transport of one destination with undici on the process's transport thread:
 * the contract of `createTransport` (./transport.ts).
 *
 * @example
 * ```ts
 * const transport = createThreadTransport({ destination: dest });
 * await transport.send(buildRequest(dest, job)); // { statusCode: 200, headers }
 * await transport.close();
 * ```
 *
 * @param options.thread @default sharedTransportThread()
 * @param options.now @default Date.now
 * @param options.redactor @default processRedactor
 */
export function createThreadTransport(options: ThreadTransportOptions): HttpTransport {
  const { destination } = options;
  const thread = options.thread ?? sharedTransportThread();
  const channel = thread.openChannel(channelSettings(destination), destination.timeoutMs, options.now ?? Date.now, options.redactor ?? processRedactor);
  const target = urlTargets();
  let mainDispatcher: Dispatcher | undefined;
  let closing: Promise<void> | undefined;

  const send = sender(target, (req, t, resolve, reject, signal, opts) => {
    if (channel.closed) {
      reject(new DeliveryError('ERR_HTTP_CONNECTION', 'transport closed', { retryable: true }));
      return undefined;
    }
    return thread.send(channel, req, t, resolve, reject, signal, opts);
  });

  return {
    send,
    /** A main-thread dispatcher with the same settings, made on first use (a same-origin token endpoint). */
    get dispatcher(): Dispatcher {
      mainDispatcher ??= createDestinationDispatcher(destination);
      return mainDispatcher;
    },
    close(): Promise<void> {
      closing ??= thread.closeChannel(channel).then(() => mainDispatcher?.close());
      return closing;
    },
  };
}
