-- Takes over the jobs of the engines named in ARGV (engine, lease value pairs) whose lease
-- still holds the value this engine saw unchanged for lease_ttl, atomically, so two engines
-- that both see one dead can never both get its jobs; they go into this engine's job set and
-- its adopting set. Returns the adopting set: what was taken over and not yet acknowledged
-- as handed to the runners (a claim whose reply was lost is handed out by the next one).
-- (It names keys it builds itself: fine on one Redis server, not on Redis Cluster.)
local engines, adopting = KEYS[1], KEYS[2]
local me = ARGV[1]
local function engine_key(pattern, engine) return string.format(pattern, engine) end
local mine = engine_key($ENGINE_JOBS, me)
local function take(set)
  for _, tag in ipairs(redis.call('SMEMBERS', set)) do
    redis.call('SADD', mine, tag)
    redis.call('SADD', adopting, tag)
  end
  redis.call('DEL', set)
end
for i = 2, #ARGV, 2 do
  local other, seen = ARGV[i], ARGV[i + 1]
  if other ~= me and (redis.call('GET', engine_key($ENGINE_LEASE, other)) or '') == seen then
    take(engine_key($ENGINE_JOBS, other))
    -- its inbox's jobs are in its job set
    redis.call('DEL', engine_key($ENGINE_INBOX, other), engine_key($ENGINE_TAKING, other),
               engine_key($ENGINE_ADOPTING, other), engine_key($ENGINE_LEASE, other),
               engine_key($ENGINE_WRITTEN, other))
    redis.call('SREM', engines, other)
  end
end
return redis.call('SMEMBERS', adopting)
