-- The tenant's settled spend in the rolling window and its reserved total (read only).
-- KEYS: 1 spent buckets, 2 reserved total
-- ARGV: 1 bucket width ms (unused here), 2 window ms (buckets keyed by end time in ms; one counts
--       while its end is inside the window)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local spent = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i]) > now - tonumber(ARGV[2]) then
    spent = spent + tonumber(all[i + 1])
  end
end
return {spent, tonumber(redis.call('GET', KEYS[2]) or '0')}
