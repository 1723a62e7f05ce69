/**
 * The Lua scripts of the Redis snapshot store (redis-snapshot-store.ts): read, compare-and-set,
 * confirm. Also used by the benchmark's ceilings.
 */

/** Hash fields of a profile record. */
export const FIELD_SNAPSHOT = 's';
export const FIELD_VERSION = 'v';
export const FIELD_WATERMARK = 'w';
export const REPLAY_PREFIX = 'r:';

/**
 * Reads what `apply` needs in one round trip: snapshot, version, watermark and the replay
 * record of this message key. KEYS[1] profile hash; ARGV[1] replay field; ARGV[2] the epoch
 * marker's key and ARGV[3] the epoch this store holds: -2 (and nothing read) when the marker
 * holds another value (the store lost its data).
 */
export const READ_LUA = `if redis.call('GET', ARGV[2]) ~= ARGV[3] then return -2 end
return redis.call('HMGET', KEYS[1], '${FIELD_SNAPSHOT}', '${FIELD_VERSION}', '${FIELD_WATERMARK}', ARGV[1])`;

/**
 * Compare-and-set on the version: writes the new snapshot, version and replay record, moves
 * the profile in/out of audience sets, and drops the oldest replay records beyond the bound.
 * KEYS[1] profile hash, KEYS[2..] audience sets (the first ARGV[7] of them gain the profile,
 * the others lose it). ARGV: expected version ('0' when absent), new version, snapshot JSON,
 * replay field, replay record (it starts with {"v":<version>), profile id, number of
 * audiences entered, most replay records kept, watermark ('' for none), fence key and fence
 * value ('' for none), epoch marker key and the epoch this store holds.
 *
 * Returns 1 when written. Writes nothing and returns what `READ_LUA` returns (an array) when
 * the version is not the expected one, when the replay field exists (a redelivery), or when
 * the watermark is at or above ARGV[9] (a settled redelivery): the caller decides from that
 * reply as from a read, so a guessed version costs no extra round trip when it is wrong.
 * Returns -1 when the fence key does not hold the fence value (checked only before a write,
 * like the write itself). Returns -2, before anything else, when the epoch marker does not
 * hold the store's epoch: nothing is ever written into a store that lost its data.
 *
 * Dropping a replay record means that message, if it is redelivered after
 * `maxPendingPerProfile` later applications of the same profile all went unconfirmed, is
 * merged again instead of replayed (its owed exports may then look like "no change"). The
 * pipeline confirms long before that; the bound keeps a stuck profile's record from growing
 * without end. The trimming runs here, next to the data, because it reads every record.
 */
export const CAS_LUA = `
if redis.call('GET', ARGV[12]) ~= ARGV[13] then return -2 end
local v = redis.call('HGET', KEYS[1], '${FIELD_VERSION}')
local stale = false
if v and ARGV[9] ~= '' then
  local w = redis.call('HGET', KEYS[1], '${FIELD_WATERMARK}')
  stale = w and tonumber(ARGV[9]) <= tonumber(w)
end
if (v or '0') ~= ARGV[1] or stale or redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then
  return redis.call('HMGET', KEYS[1], '${FIELD_SNAPSHOT}', '${FIELD_VERSION}', '${FIELD_WATERMARK}', ARGV[4])
end
if ARGV[10] ~= '' and redis.call('GET', ARGV[10]) ~= ARGV[11] then return -1 end
redis.call('HSET', KEYS[1], '${FIELD_SNAPSHOT}', ARGV[3], '${FIELD_VERSION}', ARGV[2], ARGV[4], ARGV[5])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], '${FIELD_WATERMARK}', ARGV[9]) end
local entered = tonumber(ARGV[7])
for i = 2, #KEYS do
  if i - 1 <= entered then redis.call('SADD', KEYS[i], ARGV[6]) else redis.call('SREM', KEYS[i], ARGV[6]) end
end
local base = 2 + redis.call('HEXISTS', KEYS[1], '${FIELD_WATERMARK}')
local extra = redis.call('HLEN', KEYS[1]) - base - tonumber(ARGV[8])
if extra > 0 then
  local all = redis.call('HGETALL', KEYS[1])
  local replays = {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, ${REPLAY_PREFIX.length}) == '${REPLAY_PREFIX}' then
      replays[#replays + 1] = { all[i], tonumber(string.match(all[i + 1], '^{"v":(%d+)')) or 0 }
    end
  end
  table.sort(replays, function(a, b) return a[2] < b[2] end)
  for i = 1, extra do redis.call('HDEL', KEYS[1], replays[i][1]) end
end
return 1
`;

/**
 * Forgets confirmed replay records, many profiles in one round trip: deletes field ARGV[i] of
 * hash KEYS[i] for every i (a key may repeat). Returns the number of pairs.
 */
export const CONFIRM_LUA = `for i = 1, #KEYS do redis.call('HDEL', KEYS[i], ARGV[i]) end
return #KEYS`;

export type ReadReply = [snapshot: string | null, version: string | null, watermark: string | null, replay: string | null];

/** The scripts registered with `defineCommand` (sent as EVALSHA, EVAL on NOSCRIPT). */
export interface ScriptCommands {
  hdSnapshotRead(key: string, replayField: string, epochKey: string, epoch: string): Promise<ReadReply | number>;
  hdSnapshotCas(numKeys: number, ...keysAndArgs: string[]): Promise<number | ReadReply>;
  hdSnapshotConfirm(numKeys: number, ...keysAndArgs: string[]): Promise<number>;
}
