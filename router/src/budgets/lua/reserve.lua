-- Reserve ARGV[2] nano-USD for a call if the tenant's settled spend in the rolling window, plus
-- what is reserved in flight, plus this amount stays within the budget. Atomic (one script).
-- KEYS: 1 spent buckets (hash bucket end ms -> nano-USD), 2 reservations (hash id -> nano-USD),
--       3 leases (zset id -> expiry ms), 4 reserved total (integer), 5 settled marker of this id
-- ARGV: 1 id, 2 amount, 3 budget, 4 bucket width ms (unused here), 5 window ms, 6 lease ms
-- Buckets are keyed by their absolute end time, so a window or width changed by a reload still
-- reads the spend settled under the old one right: a bucket counts while its end is in the window.
-- Returns {1 admitted | 0 refused, settled in window, reserved (after)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local span = tonumber(ARGV[5])
-- Reservations whose holder did not settle within its lease (a replica that died) expire.
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(expired) do
  local a = redis.call('HGET', KEYS[2], id)
  if a then
    redis.call('HDEL', KEYS[2], id)
    redis.call('DECRBY', KEYS[4], a)
  end
  redis.call('ZREM', KEYS[3], id)
end
local spent = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i]) <= now - span then
    redis.call('HDEL', KEYS[1], all[i])
  else
    spent = spent + tonumber(all[i + 1])
  end
end
local reserved = tonumber(redis.call('GET', KEYS[4]) or '0')
-- Already settled (released): a reservation whose reply was lost and whose release arrived first.
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {0, spent, reserved}
end
if spent + reserved + amount > budget then
  return {0, spent, reserved}
end
redis.call('HSET', KEYS[2], ARGV[1], amount)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[1])
redis.call('INCRBY', KEYS[4], amount)
return {1, spent, reserved + amount}
