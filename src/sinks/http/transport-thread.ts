/**
 * The transport thread's entry (started by ./thread-transport.ts, one per process): undici
 * runs here, off the main thread. Each destination ("channel") gets its own dispatcher, built
 * by the inline transport's `createDestinationDispatcher`, and its own `Deadlines`; each
 * request is a `DispatchExchange` (./exchange.ts, the inline transport's handler: deadline,
 * cancel, error excerpt, drain limit). What comes back is raw: status, headers, at most
 * `errorExcerptBytes` of an error body, or the error chain as plain objects. The main thread
 * builds the typed errors (its redactor knows every secret of the process, runtime OAuth2
 * tokens included: this thread knows none). Answers go back batched, one message per
 * event-loop turn, like the requests come (./thread-protocol.ts). A request that would reach
 * undici after its send permit expired (`permitDeadline`: queued here, or held by its pace
 * gate) is not sent: `ANS_STALE`.
 */
import { performance } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';
import type { Dispatcher } from 'undici';
import type { ResolvedTls } from '../../config/load.js';
import { Deadlines, DispatchExchange, type AbortWhy } from './exchange.js';
import { PaceGate } from './pace-gate.js';
import { sharedClock } from './shared-clock.js';
import {
  ANS_CLOSED,
  ANS_FAILED,
  ANS_OK,
  ANS_READY,
  ANS_STALE,
  ANS_STATUS,
  describeError,
  joinRawHeaders,
  OP_CANCEL,
  OP_CLOSE,
  OP_OPEN,
  OP_SEND,
  WHY_CANCEL,
  WHY_ERROR,
  WHY_TIMEOUT,
  type ChannelSettings,
} from './thread-protocol.js';
import { createDestinationDispatcher } from './transport.js';

const port = parentPort;
if (!port) throw new Error('transport-thread runs in a worker thread (see thread-transport.ts)');

interface Channel {
  dispatcher: Dispatcher;
  deadlines: Deadlines;
  timeoutMs: number;
}

/** A request its dataflow's `PaceGate` holds. */
interface Held {
  id: number;
  channelId: number;
  origin: string;
  path: string;
  method: string;
  headers: Record<string, string>;
  body: string;
  /** Its `permitDeadline` (`sharedClock()`; Infinity: none). */
  permitDeadline: number;
  /** When it came (the gate's clock). */
  at: number;
  cancelled: boolean;
}

const channels = new Map<number, Channel>();
/** Requests in flight, by id (for OP_CANCEL). */
const exchanges = new Map<number, ThreadExchange>();
/** Requests held by their gate, by id (for OP_CANCEL). */
const heldById = new Map<number, Held>();
/** The gate of each paced key (dataflow). */
const gates = new Map<string, PaceGate<Held>>();

let out: unknown[] = [];
let flushQueued = false;

function flush(): void {
  flushQueued = false;
  const batch = out;
  out = [];
  port!.postMessage(batch);
}

function queued(): void {
  if (!flushQueued) {
    flushQueued = true;
    setImmediate(flush);
  }
}

/** One request: the inline transport's handler, its outcome posted to the main thread. */
class ThreadExchange extends DispatchExchange {
  constructor(
    private readonly id: number,
    deadlines: Deadlines,
  ) {
    super(deadlines, undefined);
  }

  protected answered(statusCode: number, rawHeaders: Buffer[]): void {
    exchanges.delete(this.id);
    out.push(ANS_OK, this.id, statusCode, joinRawHeaders(rawHeaders));
    queued();
  }

  protected refused(statusCode: number, rawHeaders: Buffer[], excerpt: string): void {
    exchanges.delete(this.id);
    out.push(ANS_STATUS, this.id, statusCode, joinRawHeaders(rawHeaders), excerpt);
    queued();
  }

  protected failed(why: AbortWhy, err: Error): void {
    exchanges.delete(this.id);
    out.push(ANS_FAILED, this.id, why === 'timeout' ? WHY_TIMEOUT : why === 'cancel' ? WHY_CANCEL : WHY_ERROR, describeError(err));
    queued();
  }
}

const asBuffer = (b: Uint8Array | undefined): Buffer | undefined => (b === undefined ? undefined : Buffer.from(b.buffer, b.byteOffset, b.byteLength));

function open(id: number, s: ChannelSettings): void {
  const tls: ResolvedTls | undefined = s.tls
    ? { cert: asBuffer(s.tls.cert), key: asBuffer(s.tls.key), ca: asBuffer(s.tls.ca), passphrase: s.tls.passphrase, rejectUnauthorized: s.tls.rejectUnauthorized }
    : undefined;
  const dispatcher = createDestinationDispatcher({ connections: s.connections, timeoutMs: s.timeoutMs, tls, proxy: s.proxy });
  channels.set(id, { dispatcher, deadlines: new Deadlines(s.timeoutMs), timeoutMs: s.timeoutMs });
}

/** A request for a channel that is not open (cannot happen: the main side rejects those). */
function closedChannel(id: number): void {
  const err = Object.assign(new Error('The client is destroyed'), { name: 'ClientDestroyedError', code: 'UND_ERR_DESTROYED' });
  out.push(ANS_FAILED, id, WHY_ERROR, describeError(err));
  queued();
}

/** Whether a send permit's deadline (`sharedClock()`; Infinity: none) has passed. */
function expired(permitDeadline: number): boolean {
  return permitDeadline !== Infinity && sharedClock() > permitDeadline;
}

/**
 * Not sent: the request would reach undici after its `permitDeadline`, and the main thread
 * hears `ANS_STALE` (the sink takes a new permit and sends again).
 */
function stale(id: number): void {
  out.push(ANS_STALE, id);
  queued();
}

/** Hands a request to undici (its permit checked by the caller, once, right before). */
function dispatchNow(id: number, channelId: number, origin: string, path: string, method: string, headers: Record<string, string>, body: string): void {
  const channel = channels.get(channelId);
  if (!channel) return closedChannel(id);
  const ex = new ThreadExchange(id, channel.deadlines);
  exchanges.set(id, ex);
  try {
    channel.dispatcher.dispatch({ origin, path, method: method as Dispatcher.HttpMethod, headers, body }, ex);
  } catch (err) {
    ex.onError(err instanceof Error ? err : new Error(String(err)));
  }
}

/** A held request that no longer needs the socket: the gate lets it go without a place in its window. */
function unwanted(h: Held): boolean {
  return h.cancelled || expired(h.permitDeadline);
}

/**
 * A held request the gate lets go: sent, unless cancelled meanwhile, its permit expired
 * (`stale`), or held past its deadline (a stale permit is told first: it was never sent, and a
 * new permit — not a retry — is what it needs).
 */
function released(h: Held): void {
  heldById.delete(h.id);
  if (h.cancelled) return;
  if (expired(h.permitDeadline)) return stale(h.id);
  const channel = channels.get(h.channelId);
  if (channel && performance.now() - h.at >= channel.timeoutMs) {
    out.push(ANS_FAILED, h.id, WHY_TIMEOUT, describeError(new DOMException('This operation was aborted', 'AbortError')));
    queued();
    return;
  }
  dispatchNow(h.id, h.channelId, h.origin, h.path, h.method, h.headers, h.body);
}

/**
 * A request: not sent when its permit expired already (`stale`: it takes no place in the
 * window); sent now when it has no pace (`perSecond` 0) or its dataflow's gate lets it go;
 * else held by the gate (see pace-gate.ts; the overall deadline of a held request counts from
 * its arrival). The permit is checked once here, right before undici gets the request.
 */
function paced(
  key: string,
  perSecond: number,
  id: number,
  channelId: number,
  origin: string,
  path: string,
  method: string,
  headers: Record<string, string>,
  body: string,
  permitDeadline: number,
): void {
  if (expired(permitDeadline)) return stale(id);
  if (perSecond <= 0) return dispatchNow(id, channelId, origin, path, method, headers, body);
  let gate = gates.get(key);
  if (gate === undefined || gate.cap !== PaceGate.capFor(perSecond)) {
    gate = new PaceGate<Held>(perSecond, released, undefined, unwanted);
    gates.set(key, gate);
  }
  if (gate.admit()) return dispatchNow(id, channelId, origin, path, method, headers, body);
  const h: Held = { id, channelId, origin, path, method, headers, body, permitDeadline, at: performance.now(), cancelled: false };
  heldById.set(id, h);
  gate.hold(h);
}

function cancel(id: number): void {
  const ex = exchanges.get(id);
  if (ex) return ex.cancel();
  const h = heldById.get(id);
  if (h) {
    // the main side already rejected it: it just never leaves
    h.cancelled = true;
    heldById.delete(id);
  }
}

function close(id: number): void {
  const channel = channels.get(id);
  channels.delete(id);
  const done = (): void => {
    out.push(ANS_CLOSED, id);
    queued();
  };
  if (!channel) return done();
  // undici's close() waits for the requests in flight (their answers are queued before this one).
  channel.dispatcher.close().then(done, done);
}

port.on('message', (batch: unknown[]) => {
  for (let i = 0; i < batch.length; ) {
    switch (batch[i]) {
      case OP_SEND:
        paced(
          batch[i + 8] as string,
          batch[i + 9] as number,
          batch[i + 1] as number,
          batch[i + 2] as number,
          batch[i + 3] as string,
          batch[i + 4] as string,
          batch[i + 5] as string,
          batch[i + 6] as Record<string, string>,
          batch[i + 7] as string,
          batch[i + 10] as number,
        );
        i += 11;
        break;
      case OP_CANCEL:
        cancel(batch[i + 1] as number);
        i += 2;
        break;
      case OP_OPEN:
        open(batch[i + 1] as number, batch[i + 2] as ChannelSettings);
        i += 3;
        break;
      case OP_CLOSE:
        close(batch[i + 1] as number);
        i += 2;
        break;
      default:
        throw new Error(`transport thread: unknown operation ${String(batch[i])}`);
    }
  }
});

// Loaded (undici included): tell the main thread, which may wait for this before taking permits.
port.postMessage([ANS_READY]);
