/**
 * Reading an audience's membership index (a Redis set, `<prefix>a:<audienceId>`) of the Redis
 * snapshot store (redis-snapshot-store.ts) in batches.
 */
import type { Redis } from 'ioredis';

/** Runs one Redis call of the store (a failure becomes its `StoreError`). */
type Call = <T>(op: string, fn: () => Promise<T>) => Promise<T>;

/**
 * Iterates the set at `key` with SSCAN, `batchSize` ids at a time. An id SSCAN returns twice (it
 * may, when the set is resized during the scan) is yielded once; that costs a set of the ids
 * seen so far.
 */
export async function* audienceMembers(redis: Redis, call: Call, key: string, batchSize: number): AsyncIterable<string[]> {
  const size = Math.max(1, Math.floor(batchSize));
  const seen = new Set<string>();
  let batch: string[] = [];
  let cursor = '0';
  do {
    const [next, ids] = await call('members', () => redis.sscan(key, cursor, 'COUNT', size));
    cursor = next;
    for (const id of ids) {
      if (seen.has(id)) continue;
      seen.add(id);
      batch.push(id);
      if (batch.length >= size) {
        yield batch;
        batch = [];
      }
    }
  } while (cursor !== '0');
  if (batch.length > 0) yield batch;
}

/** One SSCAN step of the set at `key` from `cursor` (`'0'` back: the scan is complete). */
export async function scanAudience(redis: Redis, call: Call, key: string, cursor: string, count: number): Promise<{ ids: string[]; cursor: string }> {
  const [next, ids] = await call('members', () => redis.sscan(key, cursor, 'COUNT', Math.max(1, Math.floor(count))));
  return { ids, cursor: next };
}
