/**
 * What the main thread and the transport thread (./transport-thread.ts) say to each other:
 * one `postMessage` per event-loop turn each way, a flat array of operations, each a tag
 * followed by a fixed number of plain values (numbers, strings, the request's header object).
 * No class instances cross the boundary: structured clone copies plain values cheapest, and a
 * flat array is one object to copy instead of one per request.
 */

/** main → thread: `OP_OPEN, channel, settings` — build the destination's dispatcher. */
export const OP_OPEN = 0;
/**
 * main → thread: `OP_SEND, id, channel, origin, path, method, headers, body, paceKey, perSecond, permitDeadline`
 * (`paceKey` '' and `perSecond` 0: not paced, see `SendOptions.pace`; `permitDeadline` on
 * `sharedClock()`, Infinity: none, see `SendOptions.permitDeadline`).
 */
export const OP_SEND = 1;
/** main → thread: `OP_CANCEL, id` — abort that request (its promise already rejected on the main side). */
export const OP_CANCEL = 2;
/** main → thread: `OP_CLOSE, channel` — close the dispatcher once its requests in flight are done. */
export const OP_CLOSE = 3;

/** thread → main: `ANS_OK, id, statusCode, rawHeaders` — a 2xx, its body drained. */
export const ANS_OK = 0;
/** thread → main: `ANS_STATUS, id, statusCode, rawHeaders, excerpt` — a non-2xx, at most `errorExcerptBytes` of its body. */
export const ANS_STATUS = 1;
/** thread → main: `ANS_FAILED, id, why, chain` — no (complete) answer. */
export const ANS_FAILED = 2;
/** thread → main: `ANS_CLOSED, channel` — the dispatcher is closed. */
export const ANS_CLOSED = 3;
/** thread → main: `ANS_READY` — the thread's first message: undici is loaded, requests are taken. */
export const ANS_READY = 4;
/**
 * thread → main: `ANS_STALE, id` — not sent: it would have reached undici after its
 * `permitDeadline` (held by the pace gate, or queued while the thread was short of CPU).
 */
export const ANS_STALE = 5;

/** `why` of `ANS_FAILED`: undici's own error, our deadline, our cancel. */
export const WHY_ERROR = 0;
export const WHY_TIMEOUT = 1;
export const WHY_CANCEL = 2;

/** What the thread needs to build a destination's dispatcher (`createDestinationDispatcher`'s input). */
export interface ChannelSettings {
  connections: number;
  timeoutMs: number;
  /** TLS material: Buffers arrive as Uint8Arrays. */
  tls?: { cert?: Uint8Array; key?: Uint8Array; ca?: Uint8Array; passphrase?: string; rejectUnauthorized: boolean };
  proxy?: { httpProxy: string; httpsProxy: string; noProxy: string; from: 'config' | 'env' };
}

/** One link of an error's `cause` chain, as far as `classify` (./answer-errors.ts) reads it. */
export interface ErrorLink {
  name: string;
  message: string;
  code?: string;
  syscall?: string;
  /** OpenSSL's reason ("bad decrypt"). */
  reason?: string;
}

/** Links of a cause chain kept (as many as `classify` looks at). */
const MAX_LINKS = 4;

/** An error and its causes as plain objects, for `postMessage`. */
export function describeError(err: unknown): ErrorLink[] {
  const chain: ErrorLink[] = [];
  for (let e: unknown = err; e !== undefined && e !== null && chain.length < MAX_LINKS; e = (e as { cause?: unknown }).cause) {
    if (typeof e !== 'object') {
      chain.push({ name: 'Error', message: String(e) });
      break;
    }
    const o = e as { name?: unknown; message?: unknown; code?: unknown; syscall?: unknown; reason?: unknown };
    const link: ErrorLink = { name: typeof o.name === 'string' ? o.name : 'Error', message: typeof o.message === 'string' ? o.message : '' };
    if (typeof o.code === 'string') link.code = o.code;
    if (typeof o.syscall === 'string') link.syscall = o.syscall;
    if (typeof o.reason === 'string') link.reason = o.reason;
    chain.push(link);
  }
  return chain;
}

/** The Error chain `describeError` described (name, message, code, syscall, reason per link). */
export function rebuildError(chain: readonly ErrorLink[]): Error {
  let cause: Error | undefined;
  for (let i = chain.length - 1; i >= 0; i--) {
    const link = chain[i]!;
    const e = new Error(link.message, cause ? { cause } : undefined) as Error & Omit<ErrorLink, 'name' | 'message'>;
    e.name = link.name;
    if (link.code !== undefined) e.code = link.code;
    if (link.syscall !== undefined) e.syscall = link.syscall;
    if (link.reason !== undefined) e.reason = link.reason;
    cause = e;
  }
  return cause ?? new Error('unknown error');
}

/**
 * undici's raw headers (name, value, name, value…) as one string, lines joined by "\n" (a
 * parsed header never holds a line break): one string to copy instead of one per header.
 */
export function joinRawHeaders(raw: readonly Buffer[]): string {
  let s = '';
  for (let i = 0; i < raw.length; i++) s += i === 0 ? raw[i]!.toString('latin1') : `\n${raw[i]!.toString('latin1')}`;
  return s;
}

/** The raw header list `joinRawHeaders` joined. */
export function splitRawHeaders(s: string): string[] {
  return s === '' ? [] : s.split('\n');
}
