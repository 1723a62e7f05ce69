/**
 * `rateLimit`: holds each value until a rate limiter grants it a permit.
 */
import { defer, mergeMap, take, throwIfEmpty, type MonoTypeOperatorFunction, type Observable } from 'rxjs';
import { HttpDestinationError } from '../errors.js';
import type { RateLimiter } from '../stores/rate-limiter.js';

export interface RateLimitOptions {
  /** Hands out permits: `tokenBucket` for one worker, a Redis-backed limiter for a pool. */
  limiter: RateLimiter;
}

/**
 * Emits each value once `limiter` has granted it a permit, in source order. Every value asks
 * for its permit on arrival (so a pooled limiter can serve many at once); a permit granted
 * out of order is held until the values before it are out. Completes once the source has
 * completed and every value is out; an error of the source or of the limiter errors the
 * output; unsubscribing gives up the places still queued.
 *
 * A limiter that completes without granting errors the output with `ERR_RATE_LIMITER`.
 *
 * @example
 * const limiter = tokenBucket({ rate: dataflow.rateLimit });
 * jobs$.pipe(rateLimit({ limiter }), mergeMap((job) => sink.send(job)))
 */
export function rateLimit<T>(options: RateLimitOptions): MonoTypeOperatorFunction<T> {
  const { limiter } = options;
  return (source) =>
    defer(() => {
      // Reorder buffer: index → value, only for permits that arrive ahead of their turn.
      const early = new Map<number, T>();
      let nextOut = 0;
      return source.pipe(
        mergeMap((value, index) =>
          permit(limiter).pipe(
            mergeMap(() => {
              if (index !== nextOut) {
                early.set(index, value);
                return [];
              }
              nextOut++;
              if (early.size === 0) return [value];
              const out: T[] = [value];
              while (early.has(nextOut)) {
                out.push(early.get(nextOut) as T);
                early.delete(nextOut++);
              }
              return out;
            }),
          ),
        ),
      );
    });
}

/** One permit: the limiter's first emission; completing without one is an error. */
function permit(limiter: RateLimiter): Observable<void> {
  return limiter.acquire().pipe(
    take(1),
    throwIfEmpty(
      () => new HttpDestinationError('ERR_RATE_LIMITER', 'the rate limiter completed without granting a permit'),
    ),
  );
}
