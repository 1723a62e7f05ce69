/**
 * The Lua script of the Redis send slots (redis-rate-limiter.ts), run by `RedisSlotHolder`.
 */

/**
 * Hands out ARGV[2] send slots, spaced ARGV[1] µs apart on the Redis server's clock (`TIME`:
 * every worker shares it), if the first is at most ARGV[4] µs ahead of now. KEYS[1] is a hash
 * whose field `tat` is the next free slot (µs); a key gone is an idle schedule. The first slot
 * is the next free one, or ARGV[3] µs before now if that is later (an idle schedule lends no
 * more than that). Slots only ever move forward, so any two are at least ARGV[1] apart.
 * Returns { slots granted, Redis time in µs, µs from then to the first slot (a string: it has
 * a fraction) } — when nothing is granted, the last is how long until the next free slot is
 * close enough. Nothing is written then. The key lives until the schedule is idle again
 * (`tat` behind `now − ARGV[3]`) and a second more, so a key that expires never lets a new slot
 * come closer than ARGV[1] to one handed out. (At most 2^40 ms, ≈ 35 years: a tiny rate's
 * schedule runs that far ahead, past what PEXPIRE takes.)
 */
export const TAKE_SLOTS_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local back = tonumber(ARGV[3])
local ahead = tonumber(ARGV[4])
local first = now - back
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '')
if tat ~= nil and tat > first then
  first = tat
end
if first > now + ahead then
  return { 0, now, string.format('%.17g', first - ahead - now) }
end
tat = first + want * interval
redis.call('HSET', KEYS[1], 'tat', string.format('%.17g', tat))
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil((tat - now + back) / 1000) + 1000, 1099511627776))
return { want, now, string.format('%.17g', first - now) }
`;

/** The script as registered with `defineCommand` (sent as EVALSHA, EVAL on NOSCRIPT). */
export interface SendSlotsCommands {
  hdRateLimitSlots(key: string, intervalUs: string, want: string, backUs: string, aheadUs: string): Promise<[number, number, string]>;
}
