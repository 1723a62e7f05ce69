/**
 * The pool's active alerts in Redis: one hash `<keyPrefix>alerts:<pool>`, alert id → JSON (the
 * active alert, or `{"clearedAt":…}` once cleared). Raising and clearing are each one script
 * whose reply says who made the transition, so of all the workers that see a condition start or
 * end, exactly one notifies; a raise from an evaluation older than the last clear is refused.
 */
import { Redis } from 'ioredis';
import { isCleared, type ActiveAlert, type AlertRecord, type AlertStateStore } from './alerts.js';

/** KEYS[1] hash; ARGV[1] alert id, ARGV[2] the alert (JSON), ARGV[3] evaluation start. Returns 1 when raised. */
const RAISE_LUA = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local ok, o = pcall(cjson.decode, v)
  if not (ok and type(o) == 'table' and o.clearedAt ~= nil and tonumber(o.clearedAt) < tonumber(ARGV[3])) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`;

/** KEYS[1] hash; ARGV[1] alert id, ARGV[2] the clear marker (JSON). Returns the removed alert, or false. */
const CLEAR_LUA = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local ok, o = pcall(cjson.decode, v)
if ok and type(o) == 'table' and o.clearedAt ~= nil then return false end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return v
`;

export class RedisAlertStateStore implements AlertStateStore {
  private readonly redis: Redis;
  private readonly key: string;
  constructor(o: { url: string; keyPrefix?: string; pool?: string }) {
    this.redis = new Redis(o.url, { maxRetriesPerRequest: 1 });
    this.redis.on('error', () => {});
    this.key = `${o.keyPrefix ?? 'hd:'}alerts:${o.pool ?? 'default'}`;
  }
  async raise(alert: ActiveAlert, evaluatedAt: number): Promise<boolean> {
    return (await this.redis.eval(RAISE_LUA, 1, this.key, alert.alertId, JSON.stringify(alert), String(evaluatedAt))) === 1;
  }
  async clear(alertId: string, evaluatedAt: number): Promise<ActiveAlert | undefined> {
    const v = (await this.redis.eval(CLEAR_LUA, 1, this.key, alertId, JSON.stringify({ clearedAt: evaluatedAt }))) as string | null;
    return v ? (JSON.parse(v) as ActiveAlert) : undefined;
  }
  async active(): Promise<ActiveAlert[]> {
    const all = await this.redis.hgetall(this.key);
    return Object.values(all)
      .map((v) => JSON.parse(v) as AlertRecord)
      .filter((a): a is ActiveAlert => !isCleared(a))
      .sort((a, b) => a.alertId.localeCompare(b.alertId));
  }
  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
