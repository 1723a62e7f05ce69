/**
 * The main thread's side of the transport thread (./transport-thread.ts): starts it, batches
 * requests to it and reads its batched answers, builds the typed errors of those answers
 * (with the process redactor: the thread knows no secret), and fails every pending request
 * should the thread die. One per process (`sharedTransportThread`); the thread transports
 * (./thread-transport.ts) of every destination share it.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { util } from 'undici';
import { DeliveryError } from '../../errors.js';
import type { Redactor } from '../../observability/redact.js';
import { statusError } from './answer-errors.js';
import { aborted, Answer, failureError, stalePermit, type TransportResponse } from './exchange.js';
import {
  ANS_CLOSED,
  ANS_FAILED,
  ANS_OK,
  ANS_READY,
  ANS_STALE,
  ANS_STATUS,
  OP_CANCEL,
  OP_CLOSE,
  OP_OPEN,
  OP_SEND,
  rebuildError,
  splitRawHeaders,
  WHY_CANCEL,
  WHY_TIMEOUT,
  type ChannelSettings,
  type ErrorLink,
} from './thread-protocol.js';
import type { StartRequest } from './transport.js';

/**
 * Starts the thread: the built product (dist/, .js) loads `transport-thread.js` beside this
 * file; from the TypeScript sources (vitest, tsx) the thread registers tsx's loader first
 * (Node 20 does not apply the parent's `--import` loaders to a worker thread).
 */
function spawnTransportWorker(): Worker {
  const self = import.meta.url;
  if (!self.endsWith('.ts')) return new Worker(new URL('./transport-thread.js', self));
  const entry = new URL('./transport-thread.ts', self).href;
  // tsx's ESM API, by its package's `exports` (its CommonJS build does not load in a thread).
  const pkgPath = createRequire(self).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports: Record<string, { import: { default: string } }> };
  const tsx = new URL(pkg.exports['./esm/api']!.import.default, pathToFileURL(pkgPath)).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(boot, { eval: true });
}

/** One `send` waiting for the thread's answer; the `Cancellation` target and `signal` listener. */
class PendingSend {
  /** When it was handed to the thread (`performance.now()`). */
  readonly at = performance.now();

  constructor(
    readonly id: number,
    readonly channel: ThreadChannel,
    readonly https: boolean,
    readonly resolve: (res: TransportResponse) => void,
    readonly reject: (err: unknown) => void,
    readonly signal: AbortSignal | undefined,
  ) {
    signal?.addEventListener('abort', this, { once: true });
  }

  /** `Cancellation` target. */
  cancel(): void {
    this.channel.thread.cancel(this);
  }

  /** The `signal` listener (an object listener: no closure per request). */
  handleEvent(): void {
    this.cancel();
  }

  /** Leaves the signal; call once, when the promise settles. */
  done(): void {
    this.signal?.removeEventListener('abort', this);
  }
}

/** A destination as the thread knows it. */
export interface ThreadChannel {
  readonly id: number;
  readonly thread: TransportThread;
  readonly settings: ChannelSettings;
  readonly timeoutMs: number;
  readonly now: () => number;
  readonly redactor: Redactor;
  /** The thread generation whose dispatcher for this channel is open (0: none). */
  openIn: number;
  closed: boolean;
}

export interface TransportThreadOptions {
  /** Starts the thread. @default the `transport-thread` module beside this one */
  spawn?: () => Worker;
  /**
   * How long past a request's own deadline (`timeoutMs`, which the thread enforces) the main
   * thread waits for its answer before it declares the thread stuck: it is terminated, what
   * was pending rejects (retryable) and the next send starts a new one.
   * @default TRANSPORT_THREAD_STUCK_MS (10 s)
   */
  stuckAfterMs?: number;
  /** How long a starting thread may take to announce itself; past it, the same. @default TRANSPORT_THREAD_STUCK_MS (10 s) */
  startTimeoutMs?: number;
}

/** `TransportThreadOptions.stuckAfterMs`' default. */
export const TRANSPORT_THREAD_STUCK_MS = 10_000;

/** What ended a transport thread (see `TransportThread.troubles`). */
export type TransportThreadTrouble = 'exited' | 'failed' | 'stuck';

/**
 * The worker thread undici runs on, shared by the thread transports of a process (see
 * `sharedTransportThread`), and the batching of requests and answers.
 *
 * @example
 * ```ts
 * const thread = new TransportThread();
 * const a = createThreadTransport({ destination: destA, thread });
 * const b = createThreadTransport({ destination: destB, thread });
 * ```
 */
export class TransportThread {
  /** Messages posted to the thread (batches of operations). */
  posted = 0;
  /** Messages received from it (batches of answers). */
  received = 0;
  /** Threads started so far. */
  started = 0;
  /**
   * Told when the thread died or was declared stuck (`why`: "exited (code 1)", "failed
   * (ERR_…)", "stuck (…)") and how many pending requests that failed. Must not throw.
   * `openSinks` logs it as a warning. @default none
   */
  onTrouble: ((why: string, pending: number) => void) | undefined;
  /**
   * Deaths and stalls of the thread so far, by kind (the `http_destination_transport_thread_troubles_total`
   * metric): `exited` (it ended by itself), `failed` (an uncaught error, or a message that could
   * not be read), `stuck` (the watchdog stopped it: not started, or no answer, in time).
   */
  readonly troubles: Record<TransportThreadTrouble, number> = { exited: 0, failed: 0, stuck: 0 };
  private worker: Worker | undefined;
  /** Bumped for every thread started: a channel opened in an older one must open again. */
  private generation = 0;
  private readonly pending = new Map<number, PendingSend>();
  private readonly closing = new Map<number, () => void>();
  private out: unknown[] = [];
  private flushQueued = false;
  private refd = false;
  /** Resolves when the running thread announced itself (or died). */
  private isReady: Promise<void> = Promise.resolve();
  private markReady: () => void = () => undefined;
  private readyWaiters = 0;
  private nextId = 1;
  private nextChannel = 1;
  /** Channels created and not yet closed. */
  private live = 0;
  private readonly spawn: () => Worker;
  private readonly stuckAfterMs: number;
  private readonly startTimeoutMs: number;
  /** The watchdog's timer, running while something is pending. */
  private watchdog: NodeJS.Timeout | undefined;
  /** When the running thread was started, until it announced itself (`performance.now()`). */
  private startingSince: number | undefined;

  constructor(options: TransportThreadOptions = {}) {
    this.spawn = options.spawn ?? spawnTransportWorker;
    this.stuckAfterMs = options.stuckAfterMs ?? TRANSPORT_THREAD_STUCK_MS;
    this.startTimeoutMs = options.startTimeoutMs ?? TRANSPORT_THREAD_STUCK_MS;
  }

  /** The running thread (tests: terminate it to see pending sends fail). */
  get current(): Worker | undefined {
    return this.worker;
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * Starts the thread if it is not running, and resolves once it takes requests (undici
   * loaded: ~0.2 s), or once it died (never rejects: the sends report that). A worker awaits
   * this before its first rate-limit permit, so the requests permitted meanwhile do not wait
   * for the thread and then reach the endpoint together.
   */
  async ready(): Promise<void> {
    if (this.worker === undefined) this.start();
    this.readyWaiters++;
    this.busy();
    try {
      await this.isReady;
    } finally {
      this.readyWaiters--;
      this.idle();
    }
  }

  /** A new destination; nothing is started before its first send (or `ready()`). */
  openChannel(settings: ChannelSettings, timeoutMs: number, now: () => number, redactor: Redactor): ThreadChannel {
    this.live++;
    return { id: this.nextChannel++, thread: this, settings, timeoutMs, now, redactor, openIn: 0, closed: false };
  }

  /**
   * Queues a request for the next message to the thread (the arguments of a `StartRequest`,
   * ./transport.ts, after its channel); the returned handle cancels it.
   */
  send(channel: ThreadChannel, ...[req, t, resolve, reject, signal, options]: Parameters<StartRequest>): { cancel(): void } {
    const pace = options?.pace;
    const p = new PendingSend(this.nextId++, channel, t.https, resolve, reject, signal);
    if (this.worker === undefined) this.start();
    const out = this.out;
    if (channel.openIn !== this.generation) {
      channel.openIn = this.generation;
      out.push(OP_OPEN, channel.id, channel.settings);
    }
    this.pending.set(p.id, p);
    out.push(OP_SEND, p.id, channel.id, t.origin, t.path, req.method, req.headers, req.body, pace?.key ?? '', pace?.perSecond ?? 0, options?.permitDeadline ?? Infinity);
    this.busy();
    this.schedule();
    return p;
  }

  /** Rejects `p` at once ("request cancelled") and aborts it in the thread. */
  cancel(p: PendingSend): void {
    if (this.pending.get(p.id) !== p) return;
    this.pending.delete(p.id);
    p.done();
    p.reject(aborted());
    if (this.worker === undefined) return;
    this.out.push(OP_CANCEL, p.id);
    this.schedule();
    this.idle();
  }

  /** Closes a channel's dispatcher after its requests in flight; the last one stops the thread. */
  async closeChannel(channel: ThreadChannel): Promise<void> {
    if (channel.closed) return;
    channel.closed = true;
    this.live--;
    if (this.worker !== undefined && channel.openIn === this.generation) {
      const closed = new Promise<void>((resolve) => this.closing.set(channel.id, resolve));
      this.out.push(OP_CLOSE, channel.id);
      this.busy();
      this.schedule();
      await closed;
    }
    await this.stopWhenUnused();
  }

  private async stopWhenUnused(): Promise<void> {
    const w = this.worker;
    if (w === undefined || this.live > 0 || this.pending.size > 0 || this.closing.size > 0) return;
    this.worker = undefined;
    this.out = [];
    this.markReady();
    await w.terminate();
  }

  private start(): void {
    const w = this.spawn();
    this.worker = w;
    this.generation++;
    this.started++;
    // A new Worker holds the process; only pending work should (see busy / idle).
    w.unref();
    this.refd = false;
    this.isReady = new Promise<void>((resolve) => (this.markReady = resolve));
    this.startingSince = performance.now();
    w.on('message', (batch: unknown[]) => {
      if (this.worker !== w) return;
      try {
        this.answers(batch);
      } catch (err) {
        // an answer we cannot read: a bug, never a reason to leave requests pending
        this.gone(w, 'failed', 'failed (an answer could not be read)', err);
      }
    });
    w.on('error', (err: Error) => {
      const what = (err as { code?: unknown }).code ?? err.name;
      this.gone(w, 'failed', `failed (${String(what)})`, err);
    });
    w.on('messageerror', (err: Error) => this.gone(w, 'failed', 'failed (an answer could not be read)', err));
    w.on('exit', (code: number) => this.gone(w, 'exited', `exited (code ${code})`));
  }

  /** The thread died: every pending send rejects (retryable), every close is done; the next send starts a new one. */
  private gone(w: Worker, kind: TransportThreadTrouble, why: string, cause?: unknown, stop = cause !== undefined): void {
    if (this.worker !== w) return;
    this.troubles[kind]++;
    this.worker = undefined;
    this.startingSince = undefined;
    this.markReady();
    this.out = [];
    if (stop) void w.terminate();
    const pending = [...this.pending.values()];
    this.pending.clear();
    this.onTrouble?.(why, pending.length);
    for (const p of pending) {
      p.done();
      p.reject(new DeliveryError('ERR_HTTP_CONNECTION', `transport thread ${why}`, { retryable: true, cause }));
    }
    const closes = [...this.closing.values()];
    this.closing.clear();
    for (const resolve of closes) resolve();
  }

  private schedule(): void {
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushQueued = false;
    const batch = this.out;
    if (batch.length === 0) return;
    this.out = [];
    const w = this.worker;
    if (w === undefined) return;
    w.postMessage(batch);
    this.posted++;
  };

  /** Something is pending: the thread keeps the process alive. */
  private busy(): void {
    if (!this.refd && this.worker !== undefined) {
      this.refd = true;
      this.worker.ref();
    }
    if (this.watchdog === undefined) {
      this.watchdog = setInterval(this.watch, Math.max(10, Math.min(1_000, this.stuckAfterMs / 2, this.startTimeoutMs / 2)));
      this.watchdog.unref();
    }
  }

  /**
   * The watchdog: the thread enforces each request's deadline itself, so a request still
   * pending `stuckAfterMs` past its deadline — or a thread that has not announced itself
   * `startTimeoutMs` after its start — means the thread stopped answering (a loop that never
   * yields, a bug in undici): it is terminated, and what was pending rejects (retryable)
   * instead of holding its messages for ever. The oldest pending send is the first in `pending`.
   */
  private readonly watch = (): void => {
    const w = this.worker;
    if (w === undefined || (this.pending.size === 0 && this.readyWaiters === 0)) {
      clearInterval(this.watchdog);
      this.watchdog = undefined;
      return;
    }
    const now = performance.now();
    if (this.startingSince !== undefined && now - this.startingSince > this.startTimeoutMs) {
      this.gone(w, 'stuck', `stuck (not started within ${this.startTimeoutMs} ms)`, undefined, true);
      return;
    }
    const oldest = this.pending.values().next().value as PendingSend | undefined;
    if (oldest !== undefined && now - oldest.at > oldest.channel.timeoutMs + this.stuckAfterMs) {
      this.gone(w, 'stuck', `stuck (no answer within ${oldest.channel.timeoutMs + this.stuckAfterMs} ms)`, undefined, true);
    }
  };

  /** Nothing pending: the thread alone does not keep the process alive. */
  private idle(): void {
    if (this.refd && this.pending.size === 0 && this.closing.size === 0 && this.readyWaiters === 0 && this.worker !== undefined) {
      this.refd = false;
      this.worker.unref();
    }
  }

  private answers(batch: unknown[]): void {
    this.received++;
    const pending = this.pending;
    for (let i = 0; i < batch.length; ) {
      const tag = batch[i];
      if (tag === ANS_READY) {
        i += 1;
        this.startingSince = undefined;
        this.markReady();
        continue;
      }
      if (tag === ANS_CLOSED) {
        const id = batch[i + 1] as number;
        i += 2;
        const resolve = this.closing.get(id);
        this.closing.delete(id);
        resolve?.();
        continue;
      }
      const id = batch[i + 1] as number;
      const p = pending.get(id);
      if (p !== undefined) {
        pending.delete(id);
        p.done();
      }
      if (tag === ANS_OK) {
        if (p) p.resolve(new Answer(batch[i + 2] as number, batch[i + 3] as string));
        i += 4;
      } else if (tag === ANS_STATUS) {
        if (p) {
          const c = p.channel;
          const headers = util.parseHeaders(splitRawHeaders(batch[i + 3] as string));
          p.reject(statusError(batch[i + 2] as number, headers, batch[i + 4] as string, c));
        }
        i += 5;
      } else if (tag === ANS_FAILED) {
        if (p) {
          const why = batch[i + 2] === WHY_TIMEOUT ? 'timeout' : batch[i + 2] === WHY_CANCEL ? 'cancel' : undefined;
          p.reject(failureError(why, rebuildError(batch[i + 3] as ErrorLink[]), p.channel.timeoutMs, p.https));
        }
        i += 4;
      } else if (tag === ANS_STALE) {
        if (p) p.reject(stalePermit());
        i += 2;
      } else {
        throw new Error(`transport thread: unknown answer ${String(tag)}`);
      }
    }
    this.idle();
  }
}

let shared: TransportThread | undefined;

/** The process's transport thread, made on first use (its Worker starts on the first send). */
export function sharedTransportThread(): TransportThread {
  shared ??= new TransportThread();
  return shared;
}
