/**
 * One request of the transport as an undici dispatch handler (`Exchange`), and the answer it
 * resolves with (`Answer`).
 */
import { performance } from 'node:perf_hooks';
import { util, type Dispatcher } from 'undici';
import { DeliveryError } from '../../errors.js';
import type { Redactor } from '../../observability/redact.js';
import { classify, statusError, type ResponseHeaders } from './answer-errors.js';
import { splitRawHeaders } from './thread-protocol.js';
import { TRANSPORT_DEFAULTS } from './transport-defaults.js';

/** The answer to a successful (2xx) request; its body has been consumed. */
export interface TransportResponse {
  statusCode: number;
  headers: ResponseHeaders;
}

/** What every exchange of one transport shares. */
export interface ExchangeSettings {
  timeoutMs: number;
  now: () => number;
  redactor: Redactor;
  /** The overall deadlines of the transport's requests. */
  deadlines: Deadlines;
}

/** What `Deadlines` keeps of a request: its deadline, its place in the list, what to call past it. */
export interface DeadlineEntry {
  deadline: number;
  prev: DeadlineEntry | undefined;
  next: DeadlineEntry | undefined;
  expire(): void;
}

/**
 * The overall deadlines (queueing + connect + headers + body) of one transport's requests: one
 * timer for all of them instead of a `setTimeout` + `clearTimeout` per request. Every request
 * of a transport has the same `timeoutMs`, so the order they start in is the order their
 * deadlines come in: a list in start order (linked through the exchanges themselves, nothing
 * allocated per request), the timer armed for the first; a settled request leaves the list.
 */
export class Deadlines {
  private first: DeadlineEntry | undefined;
  private last: DeadlineEntry | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly clock: () => number = performance.now.bind(performance),
  ) {}

  /** How many requests have a deadline pending (tests). */
  get size(): number {
    let n = 0;
    for (let e = this.first; e !== undefined; e = e.next) n++;
    return n;
  }

  add(ex: DeadlineEntry): void {
    ex.deadline = this.clock() + this.timeoutMs;
    ex.prev = this.last;
    ex.next = undefined;
    if (this.last) this.last.next = ex;
    else this.first = ex;
    this.last = ex;
    if (this.timer === undefined) this.arm(this.timeoutMs);
  }

  remove(ex: DeadlineEntry): void {
    if (ex.prev) ex.prev.next = ex.next;
    else if (this.first === ex) this.first = ex.next;
    else return; // not in the list
    if (ex.next) ex.next.prev = ex.prev;
    else this.last = ex.prev;
    ex.prev = ex.next = undefined;
  }

  private arm(ms: number): void {
    this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(ms)));
    this.timer.unref();
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    const now = this.clock();
    for (let ex = this.first; ex !== undefined && ex.deadline <= now; ex = this.first) {
      this.remove(ex);
      ex.expire();
    }
    if (this.first) this.arm(this.first.deadline - now);
  };
}

/**
 * A 2xx answer: its headers are parsed from undici's raw list — or from the transport thread's
 * text of it (`joinRawHeaders`) — only when asked for (the sink never asks: on the export path
 * a 2xx costs no header object).
 */
export class Answer implements TransportResponse {
  private parsed: ResponseHeaders | undefined;

  constructor(
    readonly statusCode: number,
    private readonly raw: Buffer[] | string,
  ) {}

  get headers(): ResponseHeaders {
    this.parsed ??= util.parseHeaders(typeof this.raw === 'string' ? splitRawHeaders(this.raw) : this.raw);
    return this.parsed;
  }
}

/** The reason given to undici when we abort a request ourselves (it comes back in onError). */
function abortReason(): Error {
  return new DOMException('This operation was aborted', 'AbortError');
}

/** "request cancelled": the caller gave the request up. */
export function aborted(cause?: unknown): DeliveryError {
  return new DeliveryError('ERR_HTTP_CONNECTION', 'request cancelled', { retryable: true, cause });
}

/**
 * "send permit expired": the request was not sent, for it would have reached the socket after
 * its `SendOptions.permitDeadline` (retryable; the sink takes a new permit and sends again).
 */
export function stalePermit(): DeliveryError {
  return new DeliveryError('ERR_PERMIT_STALE', 'request not sent: its send permit expired before it reached the socket', { retryable: true });
}

/** Why an exchange ended without an answer of its own: our deadline, our cancel, or neither (undici's error). */
export type AbortWhy = 'timeout' | 'cancel' | undefined;

/**
 * One request as an undici dispatch handler, in the handler interface undici's `Request`
 * calls itself (`onConnect` / `onHeaders` / `onData` / `onComplete` / `onError`). The
 * controller style (`onRequestStart` / `onResponseStart` / …) is undici's newer surface, but
 * `dispatch()` adapts it to this one per request (a wrapper handler, a controller, and the
 * headers and trailers parsed into objects for every answer): at one request per export that
 * was the sink's largest avoidable cost in undici. Keeps the status, the raw headers and at
 * most `errorExcerptBytes` of a non-2xx body; reads (and drops) the rest so the socket is
 * reused, up to `maxDrainBytes`, past which the request is aborted (the socket is closed
 * instead). Settles once: on the end of the response, or on undici's error — our own aborts
 * (deadline, cancellation) included, which undici reports there once the request has reached
 * a socket, as with `request()` and a signal.
 *
 * What a settled exchange becomes is its subclass's business: `Exchange` (below) resolves or
 * rejects a promise with typed errors on the spot; the transport thread
 * (./transport-thread.ts) sends the raw outcome to the main thread, which builds the same
 * errors there (its redactor knows every secret of the process).
 */
export abstract class DispatchExchange implements Dispatcher.DispatchHandler, DeadlineEntry {
  private abortRequest: ((err?: Error) => void) | undefined;
  private statusCode = 0;
  private rawHeaders: Buffer[] | undefined;
  /** Kept bytes of a non-2xx body; undefined for 2xx. */
  private kept: Buffer[] | undefined;
  private keptBytes = 0;
  private total = 0;
  private settled = false;
  /** Why we aborted the request ourselves, if we did. */
  private why: AbortWhy;
  /** The overall deadline (queueing + connect + headers + body), on `Deadlines`' clock. */
  deadline = 0;
  /** Neighbours in the transport's `Deadlines` list. */
  prev: DeadlineEntry | undefined;
  next: DeadlineEntry | undefined;

  constructor(
    private readonly deadlines: Deadlines,
    private readonly signal: AbortSignal | undefined,
  ) {
    deadlines.add(this);
    signal?.addEventListener('abort', this, { once: true });
  }

  /** A 2xx answer, its body read to the end. */
  protected abstract answered(statusCode: number, rawHeaders: Buffer[]): void;
  /** A non-2xx answer: at most `errorExcerptBytes` of its body, decoded as UTF-8. */
  protected abstract refused(statusCode: number, rawHeaders: Buffer[], excerpt: string): void;
  /** No (complete) answer: undici's error, and whether we aborted the request ourselves. */
  protected abstract failed(why: AbortWhy, err: Error): void;

  /** The caller gave up (`Cancellation`). */
  cancel(): void {
    this.abort('cancel');
  }

  /** The `signal` listener (an object listener: no closure per request). */
  handleEvent(): void {
    this.abort('cancel');
  }

  /** Past the deadline (`Deadlines`). */
  expire(): void {
    this.abort('timeout');
  }

  private abort(why: 'timeout' | 'cancel'): void {
    if (this.settled || this.why !== undefined) return;
    this.why = why;
    // Not on a socket yet: onConnect aborts it when it gets one.
    this.abortRequest?.(abortReason());
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.why !== undefined) abort(abortReason());
    else this.abortRequest = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[]): boolean {
    // 1xx informational answers come first; the real one follows.
    if (statusCode < 200) return true;
    this.statusCode = statusCode;
    this.rawHeaders = rawHeaders;
    if (statusCode >= 300) this.kept = [];
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.settled) return true;
    this.total += chunk.length;
    const kept = this.kept;
    if (kept !== undefined && this.keptBytes < TRANSPORT_DEFAULTS.errorExcerptBytes) {
      const part = chunk.subarray(0, TRANSPORT_DEFAULTS.errorExcerptBytes - this.keptBytes);
      kept.push(part);
      this.keptBytes += part.length;
    }
    if (this.total > TRANSPORT_DEFAULTS.maxDrainBytes) {
      // Too long to read through: answer with what we have, close the socket.
      const abort = this.abortRequest;
      this.finish();
      abort?.(abortReason());
    }
    return true;
  }

  onComplete(): void {
    this.finish();
  }

  onError(err: Error): void {
    if (this.settled) return;
    this.settle();
    this.failed(this.why, err);
  }

  private finish(): void {
    if (this.settled) return;
    this.settle();
    const statusCode = this.statusCode;
    const raw = this.rawHeaders ?? [];
    if (statusCode >= 200 && statusCode < 300) {
      this.answered(statusCode, raw);
      return;
    }
    const excerpt = this.keptBytes === 0 ? '' : Buffer.concat(this.kept ?? []).toString('utf8');
    this.refused(statusCode, raw, excerpt);
  }

  private settle(): void {
    this.settled = true;
    this.abortRequest = undefined;
    this.deadlines.remove(this);
    this.signal?.removeEventListener('abort', this);
  }
}

/** The error of an exchange that ended without an answer (see `DispatchExchange.failed`). */
export function failureError(why: AbortWhy, err: Error, timeoutMs: number, https: boolean): DeliveryError {
  if (why === 'timeout') {
    return new DeliveryError('ERR_HTTP_TIMEOUT', `no complete answer within ${timeoutMs} ms`, { retryable: true, cause: err });
  }
  if (why === 'cancel') return aborted(err);
  return classify(err, timeoutMs, https);
}

/**
 * The inline transport's exchange (./transport.ts): resolves with the answer on 2xx, rejects
 * with the typed, secret-free `DeliveryError` otherwise.
 */
export class Exchange extends DispatchExchange {
  constructor(
    private readonly settings: ExchangeSettings,
    private readonly https: boolean,
    private readonly resolve: (res: TransportResponse) => void,
    private readonly reject: (err: unknown) => void,
    signal: AbortSignal | undefined,
  ) {
    super(settings.deadlines, signal);
  }

  protected answered(statusCode: number, rawHeaders: Buffer[]): void {
    this.resolve(new Answer(statusCode, rawHeaders));
  }

  protected refused(statusCode: number, rawHeaders: Buffer[], excerpt: string): void {
    this.reject(statusError(statusCode, util.parseHeaders(rawHeaders), excerpt, this.settings));
  }

  protected failed(why: AbortWhy, err: Error): void {
    this.reject(failureError(why, err, this.settings.timeoutMs, this.https));
  }
}
