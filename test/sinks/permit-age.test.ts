/**
 * The send permit's age at the last moment before the socket (issue 14 item 6): a request whose
 * permit grew older than the limiter's `maxPermitAgeMs` on its way (credentials awaited, an
 * event loop stalled) takes a new permit before it is handed to the transport, and the fence
 * is checked again after that wait; a fresh permit costs no limiter call. The transport is
 * told until when the permit is good (`permitDeadline`); its stale-permit answer (nothing was
 * sent) takes a new permit within the same attempt. A fake clock decides the ages; a fake
 * transport records what was handed to it.
 */
import { describe, expect, it } from 'vitest';
import { firstValueFrom, Observable, type Subscriber } from 'rxjs';
import type { Dispatcher } from 'undici';
import type { DestinationConfig } from '../../src/config/load.js';
import { DeliveryError, HttpDestinationError } from '../../src/errors.js';
import { AttemptHandle } from '../../src/operators/attempt-exports.js';
import type { AuthProvider } from '../../src/sinks/http/auth/types.js';
import { stalePermit } from '../../src/sinks/http/exchange.js';
import { HTTP_SINK_DEFAULTS, HttpSink } from '../../src/sinks/http/sink.js';
import type { HttpRequest } from '../../src/sinks/http/request.js';
import { sharedClock } from '../../src/sinks/http/shared-clock.js';
import type { HttpTransport, SendOptions } from '../../src/sinks/http/transport.js';
import type { RateLimiter } from '../../src/stores/rate-limiter.js';
import type { ExportJob, FailedRequest, FailedRequestStore } from '../../src/sinks/types.js';

const MAX_AGE = 50;

const destination: DestinationConfig = {
  id: 'dest-1',
  url: 'http://127.0.0.1:9/hook',
  headers: {},
  auth: { type: 'none' },
  includeSegmentNames: false,
  includeSegmentTimestamps: false,
  retry: { minDelayMs: 10, maxDelayMs: 40, retryAfterMaxMs: 2_000 },
  timeoutMs: 1_000,
  connections: 2,
};

const job = (over: Partial<ExportJob> = {}): ExportJob => ({
  dataflowId: 'flow-1',
  destinationId: 'dest-1',
  profileId: 'p-1',
  idempotencyKey: 'flow-1:p-1:1',
  payload: { person: { name: { firstName: 'John' } } },
  ...over,
});

/** A limiter with a permit age, granting through `tryAcquire` or when the test says so. */
function limiter(opts: { maxPermitAgeMs?: number; free?: boolean } = {}) {
  const l = {
    maxPermitAgeMs: opts.maxPermitAgeMs,
    /** `tryAcquire` grants while true. */
    free: opts.free ?? false,
    tried: 0,
    acquired: 0,
    gaveUp: 0,
    waiting: [] as Array<Subscriber<void>>,
    tryAcquire: () => {
      l.tried++;
      return l.free;
    },
    acquire: () =>
      new Observable<void>((s) => {
        l.acquired++;
        l.waiting.push(s);
        return () => {
          const i = l.waiting.indexOf(s);
          if (i >= 0) {
            l.waiting.splice(i, 1);
            l.gaveUp++;
          }
        };
      }),
    grant: () => {
      const s = l.waiting.shift();
      s?.next();
      s?.complete();
    },
  };
  return l satisfies RateLimiter;
}

/** Auth whose credentials take `authMs` on the fake clock to arrive. */
function slowAuth(clock: { t: number }, authMs: number): AuthProvider {
  return {
    authorize: async () => {
      clock.t += authMs;
      return { authorization: 'Bearer tok-123456' };
    },
    invalidate: () => false,
    close: async () => undefined,
  };
}

function fakeTransport(): HttpTransport & { sent: HttpRequest[]; cancelledAtSend: number } {
  const t = {
    sent: [] as HttpRequest[],
    cancelledAtSend: 0,
    send: (req: HttpRequest, opts?: { cancellation?: { cancelled: boolean } }) => {
      if (opts?.cancellation?.cancelled) {
        t.cancelledAtSend++;
        return Promise.reject(new HttpDestinationError('ERR_HTTP_CONNECTION', 'request cancelled'));
      }
      t.sent.push(req);
      return Promise.resolve({ statusCode: 200, headers: {} });
    },
    // Not used: the auth provider is given, so nothing asks for the dispatcher.
    dispatcher: undefined as unknown as Dispatcher,
    close: () => Promise.resolve(),
  };
  return t;
}

class NoStore implements FailedRequestStore {
  records: FailedRequest[] = [];
  async put(r: FailedRequest): Promise<void> {
    this.records.push(r);
  }
  async list(): Promise<FailedRequest[]> {
    return this.records;
  }
  async remove(): Promise<void> {}
  async close(): Promise<void> {}
}

function setup(authMs: number, l: ReturnType<typeof limiter>) {
  const clock = { t: 1_000 };
  const transport = fakeTransport();
  const store = new NoStore();
  const sink = new HttpSink({
    destination,
    limiter: l,
    failedStore: store,
    transport,
    auth: slowAuth(clock, authMs),
    clock: () => clock.t,
  });
  return { clock, transport, store, sink };
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('HttpSink: the age of a send permit right before the socket', () => {
  it('a fresh permit goes out with no limiter call', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE });
    const { sink, transport } = setup(MAX_AGE, l); // exactly the budget: still fresh
    await expect(sink.attempt(job(), new AttemptHandle())).resolves.toMatchObject({ statusCode: 200 });
    expect(transport.sent).toHaveLength(1);
    expect(l.tried).toBe(0);
    expect(l.acquired).toBe(0);
  });

  it('a permit older than maxPermitAgeMs takes a new one through the limiter and waits for it', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE });
    const { sink, transport } = setup(MAX_AGE + 1, l);
    let done = false;
    const p = sink.attempt(job(), new AttemptHandle()).finally(() => (done = true));
    await flush();
    expect(l.tried).toBe(1);
    expect(l.acquired).toBe(1);
    expect(transport.sent).toHaveLength(0);
    expect(done).toBe(false);
    l.grant();
    await expect(p).resolves.toMatchObject({ statusCode: 200 });
    expect(transport.sent).toHaveLength(1);
  });

  it('a new permit free at once is taken with tryAcquire, no wait', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE, free: true });
    const { sink, transport } = setup(500, l);
    await sink.attempt(job(), new AttemptHandle());
    expect(l.tried).toBe(1);
    expect(l.acquired).toBe(0);
    expect(transport.sent).toHaveLength(1);
  });

  it('a limiter without maxPermitAgeMs: a permit of any age is used', async () => {
    const l = limiter();
    const { sink, transport } = setup(60_000, l);
    await sink.attempt(job(), new AttemptHandle());
    expect(l.tried + l.acquired).toBe(0);
    expect(transport.sent).toHaveLength(1);
  });

  it('checks the fence again after waiting for the new permit', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE });
    const { sink, transport } = setup(MAX_AGE + 1, l);
    let held = true;
    const p = sink.attempt(job({ guard: () => held }), new AttemptHandle());
    await flush();
    expect(l.waiting).toHaveLength(1);
    held = false; // the lease ran out while the request waited
    l.grant();
    await expect(p).rejects.toMatchObject({ code: 'ERR_FENCED' });
    expect(transport.sent).toHaveLength(0);
  });

  it('cancelling while it waits for the new permit gives the place up and sends nothing', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE });
    const { sink, transport } = setup(MAX_AGE + 1, l);
    const handle = new AttemptHandle();
    const p = sink.attempt(job(), handle);
    await flush();
    expect(l.waiting).toHaveLength(1);
    handle.cancel();
    await expect(p).rejects.toMatchObject({ code: 'ERR_HTTP_CONNECTION' });
    expect(l.gaveUp).toBe(1);
    expect(transport.sent).toHaveLength(0);
  });

  it('through send: a refused new permit abandons the export (nothing sent, nothing stored)', async () => {
    let granted = 0;
    const closing: RateLimiter = {
      maxPermitAgeMs: MAX_AGE,
      // the first permit (the chain's rateLimit) is free; the limiter closes before the second
      tryAcquire: () => granted++ === 0,
      acquire: () => new Observable<void>((s) => s.error(new HttpDestinationError('ERR_RATE_LIMITER', 'the redis rate limiter is closed'))),
    };
    const clock = { t: 0 };
    const transport = fakeTransport();
    const store = new NoStore();
    const sink = new HttpSink({ destination, limiter: closing, failedStore: store, transport, auth: slowAuth(clock, 100), clock: () => clock.t });
    const err = await firstValueFrom(sink.send(job())).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_RATE_LIMITER' });
    expect(transport.sent).toHaveLength(0);
    expect(store.records).toHaveLength(0);
  });

  it('through send: the chain\'s permit is the one measured (a slow credential fetch costs a second permit)', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE, free: true });
    const { sink, transport } = setup(MAX_AGE + 1, l);
    const outcome = await firstValueFrom(sink.send(job()));
    expect(outcome).toMatchObject({ status: 'delivered', attempts: 1 });
    expect(l.tried).toBe(2);
    expect(transport.sent).toHaveLength(1);
  });

  it('through send: every attempt (the first and a retry) starts in the same synchronous run as its permit, so its age is measured from the grant', async () => {
    let granting = false;
    const inGrant: boolean[] = [];
    // grants each permit a little later, from a timer, flagging the grant's synchronous run
    const l: RateLimiter = {
      maxPermitAgeMs: MAX_AGE,
      acquire: () =>
        new Observable<void>((s) => {
          const t = setTimeout(() => {
            granting = true;
            s.next();
            granting = false;
            s.complete();
          }, 1);
          return () => clearTimeout(t);
        }),
    };
    const auth: AuthProvider = {
      authorize: async () => {
        inGrant.push(granting);
        return { authorization: 'Bearer tok-123456' };
      },
      invalidate: () => false,
      close: async () => undefined,
    };
    let n = 0;
    const transport: HttpTransport = {
      ...fakeTransport(),
      send: () =>
        ++n === 1
          ? Promise.reject(new DeliveryError('ERR_HTTP_STATUS', 'HTTP 503', { retryable: true, statusCode: 503 }))
          : Promise.resolve({ statusCode: 200, headers: {} }),
    };
    const sink = new HttpSink({ destination, limiter: l, failedStore: new NoStore(), transport, auth });
    const outcome = await firstValueFrom(sink.send(job()));
    expect(outcome).toMatchObject({ status: 'delivered', attempts: 2 });
    expect(inGrant).toEqual([true, true]);
  });
});

/** Fixed credentials (as `none` and `bearer` give): nothing awaited before the transport. */
const fixedAuth: AuthProvider = {
  fixedHeaders: { authorization: 'Bearer tok-123456' },
  authorize: async () => ({ authorization: 'Bearer tok-123456' }),
  invalidate: () => false,
  close: async () => undefined,
};

/** A transport answering ERR_PERMIT_STALE (nothing sent) to its first `stale` sends, 200 after; it records every call's options. */
function staleTransport(stale: number): HttpTransport & { calls: SendOptions[] } {
  const t = {
    ...fakeTransport(),
    calls: [] as SendOptions[],
    send: (_req: HttpRequest, opts?: SendOptions) => {
      t.calls.push(opts ?? {});
      return t.calls.length <= stale ? Promise.reject(stalePermit()) : Promise.resolve({ statusCode: 200, headers: {} });
    },
  };
  return t;
}

describe('HttpSink: the permit deadline given to the transport, and its stale-permit answer', () => {
  it('tells the transport until when the permit is good: maxPermitAgeMs after the grant, on sharedClock()', async () => {
    for (const auth of [fixedAuth, undefined]) {
      const clock = { t: 0 };
      const transport = staleTransport(0);
      // credentials (when awaited) take 20 ms of the permit's 50 on the sink's clock
      const sink = new HttpSink({ destination, limiter: limiter({ maxPermitAgeMs: MAX_AGE }), failedStore: new NoStore(), transport, auth: auth ?? slowAuth(clock, 20), clock: () => clock.t });
      const before = sharedClock();
      await sink.attempt(job(), new AttemptHandle());
      const after = sharedClock();
      const left = auth ? MAX_AGE : MAX_AGE - 20;
      const deadline = transport.calls[0]!.permitDeadline!;
      expect(deadline).toBeGreaterThanOrEqual(before + left);
      expect(deadline).toBeLessThanOrEqual(after + left);
    }
  });

  it('gives no deadline when the limiter has no maxPermitAgeMs', async () => {
    for (const auth of [fixedAuth, slowAuth({ t: 0 }, 0)]) {
      const transport = staleTransport(0);
      const sink = new HttpSink({ destination, limiter: limiter(), failedStore: new NoStore(), transport, auth });
      await sink.attempt(job(), new AttemptHandle());
      expect(transport.calls[0]!.permitDeadline).toBeUndefined();
    }
  });

  it.each([
    ['fixed credentials', true],
    ['credentials from authorize()', false],
  ] as const)('%s: a stale-permit answer takes a new permit from the limiter, checks the fence and sends again — no attempt counted, nothing stored, no onResponse', async (_name, fixed) => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE, free: true });
    const transport = staleTransport(1);
    const store = new NoStore();
    const responses: Array<number | undefined> = [];
    let guards = 0;
    let stale = 0;
    const sink = new HttpSink({
      destination,
      limiter: l,
      failedStore: store,
      transport,
      auth: fixed ? fixedAuth : slowAuth({ t: 0 }, 0),
      onResponse: (status) => responses.push(status),
      onStale: () => stale++,
    });
    const outcome = await firstValueFrom(sink.send(job({ guard: () => (guards++, true) })));
    expect(outcome).toMatchObject({ status: 'delivered', attempts: 1, statusCode: 200 });
    expect(transport.calls).toHaveLength(2);
    expect(l.tried).toBe(2); // the chain's permit, then the new one
    expect(guards).toBe(2); // before each send
    expect(store.records).toHaveLength(0);
    expect(responses).toEqual([200]);
    expect(stale).toBe(1); // the stale-permit metric's count
    // the resend has a deadline of its own, from the new permit
    expect(transport.calls[1]!.permitDeadline!).toBeGreaterThanOrEqual(transport.calls[0]!.permitDeadline!);
  });

  it('waits for the new permit before sending again', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE });
    const transport = staleTransport(1);
    const sink = new HttpSink({ destination, limiter: l, failedStore: new NoStore(), transport, auth: fixedAuth });
    const p = sink.attempt(job(), new AttemptHandle());
    await flush();
    expect(transport.calls).toHaveLength(1);
    expect(l.waiting).toHaveLength(1);
    l.grant();
    await expect(p).resolves.toMatchObject({ statusCode: 200 });
    expect(transport.calls).toHaveLength(2);
  });

  it('a fence lost while the new permit was awaited: nothing sent again, FencedError', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE });
    const transport = staleTransport(1);
    const sink = new HttpSink({ destination, limiter: l, failedStore: new NoStore(), transport, auth: fixedAuth });
    let held = true;
    const p = sink.attempt(job({ guard: () => held }), new AttemptHandle());
    await flush();
    held = false;
    l.grant();
    await expect(p).rejects.toMatchObject({ code: 'ERR_FENCED' });
    expect(transport.calls).toHaveLength(1);
  });

  it(`stale answers in a row: ${HTTP_SINK_DEFAULTS.maxStaleResends} resends, then the attempt fails (retryable ERR_PERMIT_STALE)`, async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE, free: true });
    const transport = staleTransport(Infinity);
    const responses: Array<number | undefined> = [];
    const sink = new HttpSink({ destination, limiter: l, failedStore: new NoStore(), transport, auth: fixedAuth, onResponse: (s) => responses.push(s) });
    await expect(sink.attempt(job(), new AttemptHandle())).rejects.toMatchObject({ code: 'ERR_PERMIT_STALE', retryable: true });
    expect(transport.calls).toHaveLength(HTTP_SINK_DEFAULTS.maxStaleResends + 1);
    expect(l.tried).toBe(HTTP_SINK_DEFAULTS.maxStaleResends);
    expect(responses).toEqual([]);
  });

  it('through send: attempts that keep ending stale are retried, then stored as failed with ERR_PERMIT_STALE', async () => {
    const l = limiter({ maxPermitAgeMs: MAX_AGE, free: true });
    const transport = staleTransport(Infinity);
    const store = new NoStore();
    const sink = new HttpSink({ destination, limiter: l, failedStore: store, transport, auth: fixedAuth });
    const outcome = await firstValueFrom(sink.send(job()));
    expect(outcome).toMatchObject({ status: 'failed', attempts: 3, code: 'ERR_PERMIT_STALE' });
    expect(transport.calls).toHaveLength(3 * (HTTP_SINK_DEFAULTS.maxStaleResends + 1));
    expect(store.records).toMatchObject([{ attempts: 3, lastErrorCode: 'ERR_PERMIT_STALE' }]);
  });
});
