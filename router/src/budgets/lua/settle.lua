-- Settle a call once: drop its reservation (if still held) and add the realized cost to the
-- current bucket (keyed by its end time in ms) and to the lifetime total. A second settle of the same id (a retry whose first
-- reply was lost, say across a Redis restart) changes nothing.
-- KEYS: 1 spent buckets, 2 reservations, 3 leases, 4 reserved total, 5 settled marker of this id,
--       6 lifetime settled total, 7 lifetime settled count
-- ARGV: 1 id, 2 realized nano-USD, 3 bucket width ms, 4 marker lifetime ms
-- Returns 1 when applied, 0 when this id was settled before.
if redis.call('EXISTS', KEYS[5]) == 1 then
  return 0
end
local a = redis.call('HGET', KEYS[2], ARGV[1])
if a then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('DECRBY', KEYS[4], a)
end
local realized = tonumber(ARGV[2])
if realized > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local width = tonumber(ARGV[3])
  redis.call('HINCRBY', KEYS[1], (math.floor(now / width) + 1) * width, realized)
  redis.call('INCRBY', KEYS[6], realized)
end
redis.call('INCR', KEYS[7])
redis.call('SET', KEYS[5], '1', 'PX', ARGV[4])
return 1
