-- Release model slot leases by id: KEYS[k] is the model's sorted set, ARGV[k] the lease id.
for k = 1, #KEYS do
  redis.call('ZREM', KEYS[k], ARGV[k])
end
return #KEYS
