/**
 * One Redis call of a Redis-backed part (`who`: "redis snapshot store", …): a client failure
 * becomes a `StoreError` naming the part and the operation, with the cause attached; the
 * project's typed errors pass as they are.
 */
import { HttpDestinationError, StoreError } from '../errors.js';

/**
 * @example
 * const raw = await redisCall('redis snapshot store', 'get', () => redis.hget(key, field));
 */
export async function redisCall<T>(who: string, op: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof HttpDestinationError) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    throw new StoreError(`${who}: ${op} failed: ${reason}`, { cause: err });
  }
}
