/**
 * `redisTokenBucket`: the rate limiter of a pool of workers (SPEC §7) — one token bucket in
 * Redis, shared by every worker of the pool, handed out in small batches.
 */
import type { Redis } from 'ioredis';
import { asyncScheduler, Observable, type SchedulerLike, type Subscriber, type Subscription } from 'rxjs';
import { HttpDestinationError, StoreError } from '../errors.js';
import { TOKEN_BUCKET_DEFAULTS } from './memory-rate-limiter.js';
import type { RateLimiter } from './rate-limiter.js';

export interface RedisTokenBucketOptions {
  /** The client (not closed by `close()`). Reconnection and command timeouts are its own. */
  redis: Redis;
  /** The bucket's key, one per dataflow, the same in every worker, e.g. `hd:rl:<dataflowId>`. */
  key: string;
  /** Permits per second for the whole pool; fractional allowed. At most 10,000. */
  rate: number;
  /**
   * The pool's slack over `rate` in any 1-second window, in permits. Part of it goes to the
   * Redis bucket's size, the rest covers tokens a worker holds for up to `tokenTtlMs` (see
   * below). @default max(1, floor(rate * 0.04))
   */
  burst?: number;
  /**
   * Most tokens one worker takes per round trip (it asks for fewer when fewer wait). Small,
   * so that one worker cannot hoard what the others wait for; at most the bucket's size.
   * @default max(1, ceil(rate / 100)) — 10 ms worth of tokens
   */
  reserve?: number;
  /**
   * How long reserved tokens stay usable, counted from when the request that got them was
   * sent; tokens not handed out by then are discarded, never used late. @default 20
   */
  tokenTtlMs?: number;
  /** A Redis call without a reply after this long counts as failed. @default 1000 */
  requestTimeoutMs?: number;
  /** First pause after a failed Redis call; it doubles with every failure in a row. @default 25 */
  retryMinDelayMs?: number;
  /** Longest pause between two attempts while Redis fails. @default 1000 */
  retryMaxDelayMs?: number;
  /** Clock and timer. @default asyncScheduler */
  scheduler?: SchedulerLike;
  /** Told of every failed Redis call (a `StoreError` with the cause attached). @default ignore */
  onError?: (err: StoreError) => void;
}

/** The defaults of `redisTokenBucket`, named in one place. */
export const REDIS_TOKEN_BUCKET_DEFAULTS = {
  burst: TOKEN_BUCKET_DEFAULTS.burst,
  reserve: (rate: number): number => Math.max(1, Math.ceil(rate / 100)),
  tokenTtlMs: 20,
  requestTimeoutMs: 1_000,
  retryMinDelayMs: 25,
  retryMaxDelayMs: 1_000,
  scheduler: asyncScheduler as SchedulerLike,
  maxRate: TOKEN_BUCKET_DEFAULTS.maxRate,
} as const;

/** A pool-wide limiter; `close()` stops it (waiters error with `ERR_RATE_LIMITER`). */
export type RedisTokenBucket = RateLimiter & { close(): void };

/**
 * Refills the bucket by the time elapsed on the Redis server's clock (`TIME`: every worker
 * shares it) and takes ARGV[3] tokens if that many are in, all or none. KEYS[1] the bucket (a
 * hash: `n` tokens, `t` time of the last refill in µs). ARGV: rate per second, size, tokens
 * wanted, key lifetime in ms (a key gone is a full bucket, as it would be by then).
 * Returns { tokens granted, µs until the wanted tokens are in (0 when granted) }.
 * Nothing is written when nothing is granted (the refill is recomputed from `t` next time).
 */
const TAKE_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'n', 't')
local n = tonumber(s[1])
local last = tonumber(s[2])
if n == nil or last == nil then
  n = size
elseif now > last then
  n = math.min(size, n + (now - last) * rate / 1000000)
else
  n = math.min(size, n)
end
if n < want then
  return { 0, math.ceil((want - n) * 1000000 / rate) }
end
redis.call('HSET', KEYS[1], 'n', string.format('%.17g', n - want), 't', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return { want, 0 }
`;

/** The script registered with `defineCommand` (sent as EVALSHA, EVAL on NOSCRIPT). */
interface ScriptCommands {
  hdRateLimitTake(key: string, rate: string, size: string, want: string, keyTtlMs: string): Promise<[number, number]>;
}

/** A queued `acquire()`: a doubly linked node, so giving the place up is O(1). */
interface Waiter {
  subscriber: Subscriber<void>;
  prev: Waiter | null;
  next: Waiter | null;
  /** Still in the queue (false once granted or given up). */
  queued: boolean;
}

/**
 * A token bucket in Redis for a whole pool: the bucket (`burst − rate × tokenTtl` tokens,
 * refilled at `rate` by the Redis server's clock) is changed only by a Lua script, which takes
 * up to `reserve` tokens at a time, all or none, and otherwise says how long until they are
 * in. Each worker keeps the tokens it took and hands them to its `acquire()` waiters first in,
 * first out; when they run out and waiters remain, it asks again (one request in flight per
 * worker) or first waits the advised time, through `scheduler`. A worker asks for no more
 * than it has waiters, so tokens rarely sit unused; one that does (its waiter gave up) is
 * discarded `tokenTtlMs` after its request was sent, never used late.
 *
 * The bound: a permit is handed out no earlier than Redis granted its token and at most
 * `tokenTtlMs` later, so any 1-second window of the pool's permits holds tokens the bucket
 * granted within `1 s + tokenTtlMs`: at most `size + rate × (1 + tokenTtlMs/1000)` =
 * `burst + rate` (when `burst ≥ 1 + rate × tokenTtlMs/1000`; else `1 + rate × 1.02`) — within
 * SPEC §7's 5% with the defaults. Under steady demand the pool drains at `rate`: the bucket
 * holds a batch or two, so a worker that is a round trip late loses nothing. Round trips: about
 * one per `reserve` permits per worker, plus a few that find the bucket short.
 *
 * While Redis fails or does not answer, waiters wait (no permit without a token: fail closed),
 * `onError` is told, and the worker retries with a doubling pause (`retryMinDelayMs` …
 * `retryMaxDelayMs`) until Redis answers again. Unsubscribing a waiter gives its place up.
 *
 * @example
 * const limiter = redisTokenBucket({ redis, key: `hd:rl:${dataflow.id}`, rate: dataflow.rateLimit });
 * jobs$.pipe(rateLimit({ limiter }), mergeMap((job) => sink.send(job)))
 * // on shutdown
 * limiter.close();
 */
export function redisTokenBucket(options: RedisTokenBucketOptions): RedisTokenBucket {
  const d = REDIS_TOKEN_BUCKET_DEFAULTS;
  const { rate } = options;
  if (!(rate > 0 && rate <= d.maxRate)) {
    throw new RangeError(`redisTokenBucket: rate must be > 0 and ≤ ${d.maxRate}, got ${rate}`);
  }
  const burst = options.burst ?? d.burst(rate);
  if (!(burst >= 1) || !Number.isInteger(burst)) {
    throw new RangeError(`redisTokenBucket: burst must be an integer ≥ 1, got ${burst}`);
  }
  const tokenTtlMs = options.tokenTtlMs ?? d.tokenTtlMs;
  if (!(tokenTtlMs > 0)) throw new RangeError(`redisTokenBucket: tokenTtlMs must be > 0, got ${tokenTtlMs}`);
  const reserve = options.reserve ?? d.reserve(rate);
  if (!(reserve >= 1) || !Number.isInteger(reserve)) {
    throw new RangeError(`redisTokenBucket: reserve must be an integer ≥ 1, got ${reserve}`);
  }
  if (!options.key) throw new RangeError('redisTokenBucket: key must not be empty');
  // The part of `burst` not spent on tokens held by workers (up to tokenTtl of them).
  const size = Math.max(1, burst - (rate * tokenTtlMs) / 1000);
  return new RedisBucket({
    redis: options.redis,
    key: options.key,
    rate,
    size,
    reserve: Math.max(1, Math.min(reserve, Math.floor(size))),
    tokenTtlMs,
    requestTimeoutMs: options.requestTimeoutMs ?? d.requestTimeoutMs,
    retryMinDelayMs: options.retryMinDelayMs ?? d.retryMinDelayMs,
    retryMaxDelayMs: options.retryMaxDelayMs ?? d.retryMaxDelayMs,
    scheduler: options.scheduler ?? d.scheduler,
    onError: options.onError,
  });
}

interface Settings {
  redis: Redis;
  key: string;
  rate: number;
  size: number;
  reserve: number;
  tokenTtlMs: number;
  requestTimeoutMs: number;
  retryMinDelayMs: number;
  retryMaxDelayMs: number;
  scheduler: SchedulerLike;
  onError: ((err: StoreError) => void) | undefined;
}

class RedisBucket implements RedisTokenBucket {
  private readonly scripts: ScriptCommands;
  /** Script arguments that never change. */
  private readonly rateArg: string;
  private readonly sizeArg: string;
  private readonly keyTtlArg: string;
  private head: Waiter | null = null;
  private tail: Waiter | null = null;
  private waiting = 0;
  /** Tokens this worker holds, usable until `expiresAt` (scheduler time). */
  private tokens = 0;
  private expiresAt = -Infinity;
  /** Number of the request in flight (0: none); a reply to an abandoned one is ignored. */
  private inFlight = 0;
  private requests = 0;
  private timeout: Subscription | null = null;
  /** The pause before the next request (advised by Redis, or after a failure). */
  private pause: Subscription | null = null;
  /** The pause is a backoff after a failure: it runs on even when nobody waits. */
  private backoff = false;
  private failures = 0;
  private pumping = false;
  private again = false;
  private closed = false;

  constructor(private readonly s: Settings) {
    s.redis.defineCommand('hdRateLimitTake', { numberOfKeys: 1, lua: TAKE_LUA });
    // defineCommand adds methods ioredis can only type through module augmentation.
    this.scripts = s.redis as unknown as ScriptCommands;
    this.rateArg = String(s.rate);
    this.sizeArg = String(s.size);
    // Long enough for an empty bucket to fill up again, after which a missing key is the same.
    this.keyTtlArg = String(Math.ceil((s.size / s.rate) * 1000) + 1_000);
  }

  acquire(): Observable<void> {
    return new Observable<void>((subscriber) => {
      if (this.closed) {
        subscriber.error(closedError());
        return undefined;
      }
      if (this.head === null && this.takeLocal()) {
        subscriber.next();
        subscriber.complete();
        return undefined;
      }
      const waiter: Waiter = { subscriber, prev: this.tail, next: null, queued: true };
      if (this.tail === null) this.head = waiter;
      else this.tail.next = waiter;
      this.tail = waiter;
      this.waiting++;
      this.pump();
      return () => {
        if (waiter.queued) {
          this.unlink(waiter);
          // Nobody waits: no timer left behind, unless it spaces out attempts on a failing Redis.
          if (this.head === null && !this.backoff) this.cancelPause();
        }
      };
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.timeout?.unsubscribe();
    this.timeout = null;
    this.cancelPause();
    this.inFlight = 0;
    this.tokens = 0;
    const err = closedError();
    while (this.head !== null) {
      const w = this.head;
      this.unlink(w);
      w.subscriber.error(err);
    }
  }

  /** Takes one of the tokens held, unless they are spent or expired. */
  private takeLocal(): boolean {
    if (this.tokens > 0 && this.s.scheduler.now() >= this.expiresAt) this.tokens = 0;
    if (this.tokens === 0) return false;
    this.tokens--;
    return true;
  }

  private unlink(w: Waiter): void {
    w.queued = false;
    this.waiting--;
    if (w.prev === null) this.head = w.next;
    else w.prev.next = w.next;
    if (w.next === null) this.tail = w.prev;
    else w.next.prev = w.prev;
    w.prev = w.next = null;
  }

  private cancelPause(): void {
    this.pause?.unsubscribe();
    this.pause = null;
    this.backoff = false;
  }

  /**
   * Hands held tokens to waiters, oldest first, then asks Redis for more if waiters remain
   * (unless a request is in flight or a pause runs). Safe to re-enter: a waiter may ask for its
   * next permit from inside its grant; it is queued behind and served by the running loop.
   */
  private pump(): void {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        while (this.head !== null && this.takeLocal()) {
          const w = this.head;
          this.unlink(w);
          w.subscriber.next();
          w.subscriber.complete();
        }
      } while (this.again);
    } finally {
      this.pumping = false;
    }
    if (this.closed || this.head === null || this.inFlight !== 0 || this.pause !== null) return;
    this.request();
  }

  private request(): void {
    const { scheduler } = this.s;
    const id = ++this.requests;
    const sentAt = scheduler.now();
    const want = Math.min(this.s.reserve, this.waiting);
    this.inFlight = id;
    this.timeout = scheduler.schedule(() => {
      this.timeout = null;
      if (this.inFlight !== id) return;
      this.failed(new StoreError(`redis rate limiter: no reply from Redis in ${this.s.requestTimeoutMs} ms`));
    }, this.s.requestTimeoutMs);
    let call: Promise<[number, number]>;
    try {
      call = this.scripts.hdRateLimitTake(this.s.key, this.rateArg, this.sizeArg, String(want), this.keyTtlArg);
    } catch (err) {
      call = Promise.reject(err);
    }
    call.then(
      ([granted, waitUs]) => {
        if (this.inFlight !== id) return;
        this.settle();
        this.failures = 0;
        const n = Number(granted);
        if (n > 0) {
          // A token may be used until tokenTtl after the request went out, the earliest Redis
          // can have granted it: held longer, it could let a window exceed the bound.
          this.tokens = n;
          this.expiresAt = sentAt + this.s.tokenTtlMs;
        } else {
          this.pauseFor(Math.max(1, Math.ceil(Number(waitUs) / 1000)));
        }
        this.pump();
      },
      (err: unknown) => {
        if (this.inFlight !== id) return;
        const reason = err instanceof Error ? err.message : String(err);
        this.failed(new StoreError(`redis rate limiter: taking tokens failed: ${reason}`, { cause: err }));
      },
    );
  }

  private settle(): void {
    this.inFlight = 0;
    this.timeout?.unsubscribe();
    this.timeout = null;
  }

  private failed(err: StoreError): void {
    this.settle();
    this.failures++;
    try {
      this.s.onError?.(err);
    } catch {
      // A throwing error callback must not stop the limiter.
    }
    const delay = Math.min(this.s.retryMaxDelayMs, this.s.retryMinDelayMs * 2 ** (this.failures - 1));
    this.pauseFor(delay, true);
    this.pump();
  }

  /** No request for `ms`; then serve the waiters (if any are left). */
  private pauseFor(ms: number, backoff = false): void {
    this.cancelPause();
    if (this.closed || (this.head === null && !backoff)) return;
    this.backoff = backoff;
    this.pause = this.s.scheduler.schedule(() => {
      this.pause = null;
      this.backoff = false;
      this.pump();
    }, ms);
  }
}

function closedError(): HttpDestinationError {
  return new HttpDestinationError('ERR_RATE_LIMITER', 'the redis rate limiter is closed');
}
