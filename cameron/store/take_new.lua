-- Takes jobs off the inbox the reliable way: first forgets the tags JobData acknowledges
-- (ARGV[2..]: handed to the scheduler), then moves jobs from the inbox to the taking list
-- until it holds ARGV[1], and returns the whole taking list: the tag of each job, and its
-- fields named in TAKEN (store.TAKEN_FIELDS). A take whose reply is lost leaves its jobs in
-- the taking list, and the next take returns them again.
local inbox, taking = KEYS[1], KEYS[2]
for i = 2, #ARGV do redis.call('LREM', taking, 1, ARGV[i]) end
local room = tonumber(ARGV[1]) - redis.call('LLEN', taking)
if room > 0 then
  local moved = redis.call('LRANGE', inbox, 0, room - 1)
  if #moved > 0 then
    redis.call('LTRIM', inbox, #moved, -1)
    redis.call('RPUSH', taking, unpack(moved))
  end
end
local out = {}
for _, tag in ipairs(redis.call('LRANGE', taking, 0, -1)) do
  table.insert(out, tag)
  table.insert(out, redis.call('HMGET', tag, unpack($TAKEN)))
end
return out
