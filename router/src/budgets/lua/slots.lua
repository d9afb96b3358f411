-- Lease model slots shared by every replica: model k never has more than its capacity of live
-- leases. Leases expire (a replica that died frees its slots); a finished call releases its own.
-- KEYS: one sorted set per model (lease id -> expiry ms), all under one hash tag
-- ARGV: 1 lease ms, then per model k: capacity, wanted, id prefix (ids are prefix..1 .. prefix..n)
-- Returns the number granted per model.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS do
  local base = 1 + (k - 1) * 3
  local cap = tonumber(ARGV[base + 1])
  local want = tonumber(ARGV[base + 2])
  local prefix = ARGV[base + 3]
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  local held = redis.call('ZCARD', KEYS[k])
  local grant = math.max(0, math.min(want, cap - held))
  for i = 1, grant do
    redis.call('ZADD', KEYS[k], now + lease, prefix .. i)
  end
  out[k] = grant
end
return out
