/**
 * The Lua scripts of the pool coordinator (pool.ts), registered on its Redis client: heartbeat,
 * partition count, lease acquire / renew / release, epoch raise, leave.
 */
import type { Redis } from 'ioredis';

/** Redis time in ms, in a script (TIME is allowed before writes since effects replication). */
const NOW_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * Heartbeat. KEYS: workers, heartbeats, partitions. ARGV: worker id, member ttl, retention,
 * partition count. Refreshes the member's expiry, drops members dead for longer than the
 * retention, records the partition count if it is missing; returns {now, recorded count, live ids}.
 */
const HEARTBEAT_LUA = `${NOW_LUA}
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%.0f', now))
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - tonumber(ARGV[3])))
for i = 1, #dead do
  redis.call('ZREM', KEYS[1], dead[i])
  redis.call('HDEL', KEYS[2], dead[i])
end
local recorded = redis.call('GET', KEYS[3])
if not recorded then
  redis.call('SET', KEYS[3], ARGV[4])
  recorded = ARGV[4]
end
return { string.format('%.0f', now), recorded, redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%.0f', now), '+inf') }
`;

/** KEYS[1] partitions; ARGV[1] count. Records the count if missing; returns the recorded one. */
const RECORD_PARTITIONS_LUA = `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return v
`;

/** KEYS: lease, epoch counter. ARGV: worker id, lease ms. Returns the new epoch, or 0 when taken. */
const ACQUIRE_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local e = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. e, 'PX', ARGV[2])
return e
`;

/** KEYS[1] lease; ARGV: value, lease ms. Compare-and-PEXPIRE: 1 renewed, 0 not ours any more. */
const RENEW_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

/** KEYS[1] lease; ARGV[1] value. Compare-and-delete: 1 deleted, 0 not ours. */
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** KEYS[1] epoch counter; ARGV[1] least value. Raises the counter to it; 1 raised, 0 already there. */
const RAISE_EPOCH_LUA = `
local e = tonumber(redis.call('GET', KEYS[1]) or '0')
if e < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
`;

/** KEYS: workers, heartbeats; ARGV[1] worker id. Leaves the membership. */
const LEAVE_LUA = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
`;

export type HeartbeatReply = [now: string, recorded: string, live: string[]];

export interface PoolScripts {
  hdPoolHeartbeat(workers: string, heartbeats: string, partitions: string, id: string, ttl: number, retention: number, count: number): Promise<HeartbeatReply>;
  hdPoolRecordPartitions(partitions: string, count: number): Promise<string>;
  hdPoolAcquire(lease: string, epoch: string, id: string, leaseMs: number): Promise<number>;
  hdPoolRenew(lease: string, value: string, leaseMs: number): Promise<number>;
  hdPoolRelease(lease: string, value: string): Promise<number>;
  hdPoolLeave(workers: string, heartbeats: string, id: string): Promise<number>;
  hdPoolRaiseEpoch(epoch: string, atLeast: number): Promise<number>;
}

/** Registers the scripts on a client (idempotent) and returns it typed with them. */
export function scriptsOf(redis: Redis): PoolScripts {
  const r = redis as unknown as Partial<PoolScripts>;
  if (typeof r.hdPoolHeartbeat !== 'function') {
    redis.defineCommand('hdPoolHeartbeat', { numberOfKeys: 3, lua: HEARTBEAT_LUA });
    redis.defineCommand('hdPoolRecordPartitions', { numberOfKeys: 1, lua: RECORD_PARTITIONS_LUA });
    redis.defineCommand('hdPoolAcquire', { numberOfKeys: 2, lua: ACQUIRE_LUA });
    redis.defineCommand('hdPoolRenew', { numberOfKeys: 1, lua: RENEW_LUA });
    redis.defineCommand('hdPoolRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
    redis.defineCommand('hdPoolLeave', { numberOfKeys: 2, lua: LEAVE_LUA });
    redis.defineCommand('hdPoolRaiseEpoch', { numberOfKeys: 1, lua: RAISE_EPOCH_LUA });
  }
  // defineCommand adds methods ioredis can only type through module augmentation.
  return redis as unknown as PoolScripts;
}
