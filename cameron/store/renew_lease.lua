-- Renews this engine's lease with a fresh value and reads every other engine's: a lease
-- whose value does not change while this engine watches it for lease_ttl is dead. Returns
-- this lease's previous value ('' when it had lapsed), then engine, value pairs.
local engines, lease = KEYS[1], KEYS[2]
local me, value, ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {redis.call('GET', lease) or ''}
redis.call('SET', lease, value, 'PX', ttl)
redis.call('SADD', engines, me)
for _, other in ipairs(redis.call('SMEMBERS', engines)) do
  if other ~= me then
    table.insert(out, other)
    table.insert(out, redis.call('GET', string.format($ENGINE_LEASE, other)) or '')
  end
end
return out
