-- Creates a job, with its markers and indexes, queues it in the engine's inbox and wakes the
-- engine, all at once: a 201 means all of it is in Redis. With an idempotency key already
-- used, answers the job it made instead. Refuses a process not in the engine's catalog.
local tag, pending, owned, all_jobs, scheduled, key_jobs, by_uuid, ikey, inbox, engines, catalog =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local engine, process, key, data, requestor, t, score, fingerprint, ittl, data_json = unpack(ARGV)
if redis.call('EXISTS', catalog) == 0 then return {'starting'} end
local start_url = redis.call('HGET', catalog, process)
if not start_url or start_url == '' then return {'unknown'} end
if ikey ~= '' then
  local known = redis.call('GET', ikey)
  if known then
    local first = cjson.decode(known)
    local status = redis.call('HGET', first.tag, $JOB_STATUS)
    if status then  -- else that job expired: the key is free again
      if first.fingerprint ~= fingerprint then return {'conflict'} end
      return {'same', first.tag, status}
    end
  end
  redis.call('SET', ikey, cjson.encode({tag = tag, fingerprint = fingerprint}), 'EX', ittl)
end
redis.call('HSET', tag, $JOB_KEY, key, $JOB_DATA, data, $JOB_REQUESTOR, requestor,
           $JOB_STATUS, $SCHEDULED, $JOB_SCHEDULED_TIME, t,
           $JOB_PROCESS, process, $JOB_START_URL, start_url)
if data_json == '1' then redis.call('HSET', tag, $JOB_DATA_JSON, '1') end
redis.call('SET', pending, t)
redis.call('SADD', owned, tag)
redis.call('ZADD', all_jobs, score, tag)
redis.call('ZADD', scheduled, score, tag)
redis.call('ZADD', key_jobs, score, tag)
redis.call('SET', by_uuid, tag)
redis.call('SADD', engines, engine)
-- A wake-up only into an empty inbox: JobData takes until the inbox is empty each time it
-- wakes, so a job pushed behind others is taken with them. Under a burst of starts, one
-- wake-up instead of one per job, each costing JobData a pub/sub message to read.
if redis.call('RPUSH', inbox, tag) == 1 then redis.call('PUBLISH', inbox, '') end
return {'created', tag}
