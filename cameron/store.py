"""The job schema in Redis: how each moment of a job is written, and how a job is read back."""

import base64
import binascii
import hashlib
import json
import math
import time
import uuid as uuid_module
from dataclasses import dataclass

import redis

from cameron import keys
from cameron import messages as m

#: Where engines before leases kept every unfinished job; whoever boots next adopts them.
LEGACY_UNFINISHED = f"{keys.PREFIX}:jobs:unfinished"

#: Renews this engine's lease with a fresh value and reads every other engine's: a lease
#: whose value does not change while this engine watches it for lease_ttl is dead. Returns
#: this lease's previous value ('' when it had lapsed), then engine, value pairs.
_RENEW = """
local engines, lease = KEYS[1], KEYS[2]
local me, prefix, value, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {redis.call('GET', lease) or ''}
redis.call('SET', lease, value, 'PX', ttl)
redis.call('SADD', engines, me)
for _, other in ipairs(redis.call('SMEMBERS', engines)) do
  if other ~= me then
    table.insert(out, other)
    table.insert(out, redis.call('GET', prefix .. ':engine:' .. other .. ':lease') or '')
  end
end
return out
"""
#: Takes over the jobs of the engines named in ARGV (engine, lease value pairs) whose lease
#: still holds the value this engine saw unchanged for lease_ttl, atomically, so two engines
#: that both see one dead can never both get its jobs; they go into this engine's job set and
#: its adopting set. Returns the adopting set: what was taken over and not yet acknowledged
#: as handed to the runners (a claim whose reply was lost is handed out by the next one).
#: (It names keys it builds itself: fine on one Redis server, not on Redis Cluster.)
_CLAIM = """
local engines, legacy, adopting = KEYS[1], KEYS[2], KEYS[3]
local me, prefix = ARGV[1], ARGV[2]
local mine = prefix .. ':engine:' .. me .. ':jobs'
local function take(set)
  for _, tag in ipairs(redis.call('SMEMBERS', set)) do
    redis.call('SADD', mine, tag)
    redis.call('SADD', adopting, tag)
  end
  redis.call('DEL', set)
end
for i = 3, #ARGV, 2 do
  local other, seen = ARGV[i], ARGV[i + 1]
  local base = prefix .. ':engine:' .. other
  if other ~= me and (redis.call('GET', base .. ':lease') or '') == seen then
    take(base .. ':jobs')
    -- its inbox's jobs are in its job set
    redis.call('DEL', base .. ':inbox', base .. ':taking', base .. ':adopting', base .. ':lease',
               base .. ':written')
    redis.call('SREM', engines, other)
  end
end
take(legacy)
return redis.call('SMEMBERS', adopting)
"""
#: Creates a job, with its markers and indexes, queues it in the engine's inbox and wakes the
#: engine, all at once: a 201 means all of it is in Redis. With an idempotency key already
#: used, answers the job it made instead. With a catalog key, refuses a process not in it.
_CREATE = """
local tag, pending, owned, all_jobs, scheduled, key_jobs, by_uuid, ikey, inbox, engines, catalog =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local engine, process, key, data, requestor, t, score, start_url, fingerprint, ittl, data_json = unpack(ARGV)
if catalog ~= '' then
  if redis.call('EXISTS', catalog) == 0 then return {'starting'} end
  start_url = redis.call('HGET', catalog, process)
  if not start_url or start_url == '' then return {'unknown'} end
end
if ikey ~= '' then
  local known = redis.call('GET', ikey)
  if known then
    local first = cjson.decode(known)
    local status = redis.call('HGET', first.tag, 'job.status.current')
    if status then  -- else that job expired: the key is free again
      if first.fingerprint ~= fingerprint then return {'conflict'} end
      return {'same', first.tag, status}
    end
  end
  redis.call('SET', ikey, cjson.encode({tag = tag, fingerprint = fingerprint}), 'EX', ittl)
end
redis.call('HSET', tag, 'job.key', key, 'job.data', data, 'job.requestor', requestor,
           'job.status.current', 'scheduled', 'job.status.scheduled.time', t,
           'job.process', process, 'job.start_url', start_url)
if data_json == '1' then redis.call('HSET', tag, 'job.data.json', '1') end
redis.call('SET', pending, t)
redis.call('SADD', owned, tag)
redis.call('ZADD', all_jobs, score, tag)
redis.call('ZADD', scheduled, score, tag)
redis.call('ZADD', key_jobs, score, tag)
redis.call('SET', by_uuid, tag)
redis.call('SADD', engines, engine)
redis.call('RPUSH', inbox, tag)
redis.call('PUBLISH', inbox, '')
return {'created', tag}
"""

#: Takes jobs off the inbox the reliable way: first forgets the tags JobData acknowledges
#: (ARGV[2..]: handed to the scheduler), then moves jobs from the inbox to the taking list
#: until it holds ARGV[1], and returns the whole taking list: tag, key, data, requestor,
#: process, start URL, status, scheduled time and cancel request of each. A take whose reply
#: is lost leaves its jobs in the taking list, and the next take returns them again.
_TAKE = """
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
  table.insert(out, redis.call('HMGET', tag, 'job.key', 'job.data', 'job.requestor', 'job.process',
                               'job.start_url', 'job.status.current', 'job.status.scheduled.time',
                               'job.cancel.requested', 'job.data.json'))
end
return out
"""

#: Expired jobs taken out of the indexes per round trip.
PRUNE_BATCH = 1000


def now() -> str:
    """The time format of the original (`MM-DD-YYYY hh:mm:ss`), in UTC."""
    return time.strftime("%m-%d-%Y %H:%M:%S", time.gmtime())


def connect(url: str, timeout: float = 5.0) -> redis.Redis:
    """A client whose every command gives up after `timeout` seconds: a Redis that is down or
    stalled must turn into a quick 503, not a hung worker. It never sends a command again by
    itself (redis-py can retry): after a timeout, whether the command ran is unknown, and
    the caller decides what to do about it."""
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                socket_connect_timeout=min(timeout, 2), health_check_interval=30,
                                retry=None)


def never_sent(error: redis.RedisError) -> bool:
    """Whether a command that failed with `error` certainly did not reach Redis: the
    connection could not be made. Any other failure (a timeout waiting for the reply, a
    connection lost after the command went) leaves it unknown whether Redis ran it."""
    return isinstance(error, redis.ConnectionError) and "connecting" in str(error)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used for a different request."""


class UnknownProcess(Exception):
    """No process of that name in the engine's catalog."""


class EngineStarting(Exception):
    """The engine has not yet published its catalog: no start can be checked."""


@dataclass(frozen=True)
class Created:
    """The job a start made, or (replayed) the one its Idempotency-Key had made before."""

    process: str
    key: str
    uuid: str
    status: str
    replayed: bool


def encode_data(data) -> tuple[str, bool]:
    """A job's data as stored: a string as it is, any other JSON value as JSON text (flagged)."""
    return (data, False) if isinstance(data, str) else (json.dumps(data, ensure_ascii=False), True)


def decode_data(h: dict):
    """A job's data from its hash fields, as the client gave it."""
    data = h.get(keys.JOB_DATA)
    return json.loads(data) if data is not None and h.get(keys.JOB_DATA_JSON) == "1" else data


def fingerprint(process: str, key: str, data, requestor: str) -> str:
    """What a start asked for: the same Idempotency-Key with another request is refused."""
    return hashlib.sha256(json.dumps([process, key, data, requestor]).encode()).hexdigest()


def new_uuid() -> str:
    return uuid_module.uuid4().hex


def ms() -> int:
    """Index scores: milliseconds since the epoch."""
    return int(time.time() * 1000)


#: Seconds the engine's health record outlives its last report (one a second): gone, it says
#: the supervision tree (or its JobData, or Redis for it) has stopped reporting.
HEALTH_TTL = 3


class JobStore:
    """Writes and reads jobs; every write of one call goes in a single MULTI/EXEC round trip.
    `engine` is the engine this store works for: the jobs it creates are that engine's.
    `retention` (seconds, 0 for never) is how long a finished job is kept; `idempotency_ttl`
    how long an Idempotency-Key names its job."""

    def __init__(self, client: redis.Redis, engine: str, *, retention: int = 0,
                 idempotency_ttl: int = 86400):
        self.redis = client
        self.engine = engine
        self.owned = keys.engine_jobs(engine)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._create_script = client.register_script(_CREATE)
        self._take_script = client.register_script(_TAKE)
        self.retention = retention
        self.idempotency_ttl = idempotency_ttl

    def start(self, process: str, key: str, data, requestor: str, *, idempotency_key: str = "",
              fingerprint: str = "", client: str = "", job_id: str = "") -> "Created":
        """Accept a job for a process of the engine's catalog (as the ProcessCatalog published
        it): stored, indexed and queued for the engine, atomically. An Idempotency-Key names
        a job within its process and `client` (the API token's name; "" without tokens).
        `job_id` (a new uuid by default) lets the caller name the job before it knows whether
        Redis answered."""
        job_id = job_id or new_uuid()
        return self._create(process, key, data, requestor, job_id, now(), "",
                            idempotency_key, fingerprint, client, check_catalog=True)

    def create(self, job: m.JobSpec, idempotency_key: str = "", fingerprint: str = "") -> "Created":
        """Store a job already specified (its process's start URL included), without the catalog."""
        return self._create(job.process.name, job.key, job.data, job.requestor, job.uuid,
                            job.scheduled_time, job.process.start_url, idempotency_key, fingerprint,
                            "", check_catalog=False)

    def _create(self, process, key, data, requestor, job_id, scheduled_time, start_url,
                idempotency_key, fingerprint, client, *, check_catalog) -> "Created":
        tag = keys.job_tag(process, key, job_id)
        data, data_json = encode_data(data)
        reply = self._create_script(keys=[
            tag, keys.job_marker(tag, keys.SCHEDULED), self.owned, keys.process_jobs(process),
            keys.process_jobs(process, keys.SCHEDULED), keys.key_jobs(process, key),
            keys.job_by_uuid(job_id),
            keys.idempotency(process, client, idempotency_key) if idempotency_key else "",
            keys.engine_inbox(self.engine), keys.ENGINES,
            keys.engine_catalog(self.engine) if check_catalog else ""],
            args=[self.engine, process, key, data, requestor, scheduled_time, ms(), start_url,
                  fingerprint, self.idempotency_ttl, "1" if data_json else ""])
        outcome = reply[0]
        if outcome == "conflict":
            raise IdempotencyConflict(idempotency_key)
        if outcome == "unknown":
            raise UnknownProcess(process)
        if outcome == "starting":
            raise EngineStarting("the engine has not published its catalog yet")
        if outcome == "same":
            return Created(*keys.parse_tag(reply[1]), status=reply[2], replayed=True)
        return Created(process, key, job_id, status=keys.SCHEDULED, replayed=False)

    def take_new(self, count: int = 500, handed=()) -> list[tuple[str, dict]]:
        """Up to `count` jobs off the engine's inbox, oldest first: (tag, fields) of each.
        They stay in the engine's taking list, and come back from every take, until a take
        names them in `handed`: call again with what was handed to the scheduler."""
        flat = self._take_script(keys=[keys.engine_inbox(self.engine), keys.engine_taking(self.engine)],
                                 args=[count, *handed])
        names = [keys.JOB_KEY, keys.JOB_DATA, keys.JOB_REQUESTOR, keys.JOB_PROCESS, keys.JOB_START_URL,
                 keys.JOB_STATUS, keys.job_time(keys.SCHEDULED), keys.JOB_CANCEL_REQUESTED,
                 keys.JOB_DATA_JSON]
        return [(flat[i], {n: v for n, v in zip(names, flat[i + 1]) if v is not None})
                for i in range(0, len(flat), 2)]

    def publish_catalog(self, processes) -> None:
        """The catalog the API checks starts against: exactly these processes."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.engine_catalog(self.engine))
        # A placeholder keeps the hash in existence when the catalog is empty: "no process"
        # must read as 404, not as "the engine is starting" (process names cannot hold ' ').
        pipe.hset(keys.engine_catalog(self.engine),
                  mapping={" ": "", **{p.name: p.start_url for p in processes}})
        pipe.execute()

    def apply(self, ops: list, token: str = "") -> None:
        """Write a batch of job moments (messages.JobStarted, TaskStarted, ...) atomically, as
        if one after the other: what they leave behind, in a few commands (_NetWrites). With a
        `token`, the same transaction records it (written_token() reads it back)."""
        net = _NetWrites()
        events = {}  # tag -> the job's changes in this batch, for its event stream
        for op in ops:
            _WRITERS[type(op)](net, op)
            events.setdefault(op.tag, []).append(event(op))
            if type(op) is m.JobEnded:
                net.srem(self.owned, op.tag)
                net.expire(keys.job_events(op.tag[-32:]), min(keys.EVENTS_TTL, self.retention or keys.EVENTS_TTL))
            if self.retention and isinstance(op, m.JobEnded):
                self._expire(net, op)
        # One stream entry and one wake-up per job per batch (a foo job's changes come in about
        # four batches: a few commands per job, not sixteen). A PUBLISH nobody listens to costs
        # Redis a lookup; web workers hear only of the jobs someone watches.
        for tag, changes in events.items():
            net.xadd(keys.job_events(tag[-32:]), json.dumps(changes, separators=(",", ":")))
            net.publish(keys.job_events(tag[-32:]), "")
        pipe = self.redis.pipeline(transaction=True)
        net.write(pipe)
        job_list_changes(pipe, ops)
        if token:
            pipe.set(keys.engine_written(self.engine), token)
        pipe.execute()

    def report_health(self, tree, progress: float) -> None:
        """The engine's health record (keys.engine_health): its tree as the Supervisor reports
        it, when a job last moved; it expires HEALTH_TTL seconds after the last report."""
        record = keys.engine_health(self.engine)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(record, mapping={"supervisor_pid": tree.pid, "children": tree.children,
                                   "expected": tree.expected, "given_up": ",".join(tree.given_up),
                                   "progress": f"{progress:.3f}", "at": f"{time.time():.3f}"})
        pipe.expire(record, HEALTH_TTL)
        pipe.execute()

    def written_token(self) -> str | None:
        """The token of the last apply() that reached Redis."""
        return self.redis.get(keys.engine_written(self.engine))

    def _expire(self, pipe, op: m.JobEnded):
        """A finished job's hash and markers go after the retention period; EXPIRING tells the
        index sweep (prune_expired) when to take it out of the sorted sets."""
        uuid = keys.parse_tag(op.tag)[2]
        for key in [op.tag, keys.job_marker(op.tag, op.status), keys.job_by_uuid(uuid)] + [
                keys.task_marker(op.tag, n, state) for n in range(op.tasks)
                for state in (keys.TASK_DONE, keys.TASK_ERROR)]:
            pipe.expire(key, self.retention)
        pipe.zadd(keys.EXPIRING, {op.tag: ms() + self.retention * 1000})

    def prune_expired(self, batch: int = PRUNE_BATCH) -> int:
        """Take jobs whose hash has expired out of the indexes; returns how many."""
        tags = self.redis.zrangebyscore(keys.EXPIRING, "-inf", ms(), start=0, num=batch)
        if tags:
            pipe = self.redis.pipeline(transaction=True)
            for tag in tags:
                _unindex(pipe, tag)
            pipe.execute()
        return len(tags)

    def request_cancel(self, process: str, key: str, uuid: str) -> tuple[str, str | None] | None:
        """Record a cancel in the job hash; (state, requested time), with time None when the
        job had already ended, or None when there is no such job."""
        tag = keys.job_tag(process, key, uuid)

        def record(pipe):
            status, requested = pipe.hmget(tag, keys.JOB_STATUS, keys.JOB_CANCEL_REQUESTED)
            if status is None:
                return None
            if status in keys.FINAL_STATES:
                return status, None
            if requested is None:
                requested = now()
                pipe.multi()
                pipe.hset(tag, keys.JOB_CANCEL_REQUESTED, requested)
                change = {"type": "cancel", "status": status, "time": requested}
                pipe.xadd(keys.job_events(uuid), {"e": json.dumps([change])})
                pipe.publish(keys.job_events(uuid), "")
            return status, requested
        return self.redis.transaction(record, tag, value_from_callable=True)

    def list_jobs(self, process: str, *, key: str | None = None, state: str | None = None,
                  limit: int = 50, cursor: tuple | None = None) -> tuple[list, tuple | None]:
        """One page of job summaries, newest first, and the cursor of the next page (None at
        the end); None for a process neither in the catalog nor with any job kept. With both
        a key and a state the page may hold fewer than `limit` jobs."""
        index = keys.key_jobs(process, key) if key is not None else keys.process_jobs(process, state)
        if cursor is None:
            rows = self.redis.zrevrange(index, 0, limit, withscores=True)
        else:
            score, after = cursor
            # Jobs with the cursor's own score come in reverse member order: skip those up to it.
            ties = self.redis.zcount(index, score, score)
            rows = [(t, s) for t, s in self.redis.zrevrangebyscore(
                        index, score, "-inf", start=0, num=limit + 1 + ties, withscores=True)
                    if s < score or t < after]
        if not rows and cursor is None and not self._process_known(process):
            return None
        page = rows[:limit]
        next_cursor = (page[-1][1], page[-1][0]) if len(rows) > limit else None
        pipe = self.redis.pipeline(transaction=False)
        for tag, _ in page:
            pipe.hmget(tag, *_SUMMARY_FIELDS)
        jobs, gone = [], []
        for (tag, _), values in zip(page, pipe.execute() if page else []):
            h = {f: v for f, v in zip(_SUMMARY_FIELDS, values) if v is not None}
            if not h:
                gone.append(tag)  # expired before the sweep took it out
            elif key is None or state is None or h[keys.JOB_STATUS] == state:
                jobs.append(summary(tag, h))
        if gone:
            pipe = self.redis.pipeline(transaction=True)
            for tag in gone:
                _unindex(pipe, tag)
            pipe.execute()
        return jobs, next_cursor

    def _process_known(self, process: str) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hexists(keys.engine_catalog(self.engine), process)
        pipe.exists(keys.process_jobs(process))
        return any(pipe.execute())

    def find(self, uuid: str) -> dict | None:
        """The job document of a uuid alone, or None."""
        tag = self.redis.get(keys.job_by_uuid(uuid))
        if tag is None:
            return None
        return self.get(*keys.parse_tag(tag))

    def count_by_state(self, process: str) -> dict:
        """How many jobs of the process are in each state, from the indexes."""
        pipe = self.redis.pipeline(transaction=False)
        for state in keys.JOB_STATES:
            pipe.zcard(keys.process_jobs(process, state))
        return dict(zip(keys.JOB_STATES, pipe.execute()))

    def unfinished(self, runner: int | None, runners: int) -> list[tuple[str, dict]]:
        """(tag, hash) of every job of this engine not yet done, or only those of one runner slot."""
        tags = [t for t in self.redis.smembers(self.owned)
                if runner is None or m.runner_slot(t.rsplit(":", 1)[1], runners) == runner]
        return self.hashes(tags)

    def hashes(self, tags: list[str]) -> list[tuple[str, dict]]:
        pipe = self.redis.pipeline(transaction=False)
        for tag in tags:
            pipe.hgetall(tag)
        return [(tag, h) for tag, h in zip(tags, pipe.execute()) if h]

    def renew_lease(self, ttl: float) -> tuple[bool, dict]:
        """Renew this engine's lease with a fresh value; whether it still held (False: it had
        expired, or another engine took this one's jobs), and every other engine's lease
        value ('' for none), to watch for engines that stopped renewing."""
        reply = self._renew(keys=[keys.ENGINES, keys.engine_lease(self.engine)],
                            args=[self.engine, keys.PREFIX, f"{time.time():.6f}", int(ttl * 1000)])
        return reply[0] != "", dict(zip(reply[1::2], reply[2::2]))

    def claim_orphans(self, dead: dict | None = None) -> list[str]:
        """Take over the unfinished jobs of the engines in `dead` (engine -> the lease value
        seen unchanged for a whole lease) whose lease still holds that value; returns every
        tag taken over and not yet acknowledged with adopted()."""
        pairs = [x for engine, value in (dead or {}).items() for x in (engine, value)]
        return self._claim(keys=[keys.ENGINES, LEGACY_UNFINISHED, keys.engine_adopting(self.engine)],
                           args=[self.engine, keys.PREFIX, *pairs])

    def adopted(self, tags) -> None:
        """The jobs taken over that are now handed to the runners."""
        self.redis.srem(keys.engine_adopting(self.engine), *tags)

    def handed_out(self) -> set[str]:
        """The engine's unfinished jobs that are neither waiting on its inbox, nor being taken
        off it, nor taken over and not yet handed out: those its runners should be driving."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.smembers(self.owned)
        pipe.lrange(keys.engine_inbox(self.engine), 0, -1)
        pipe.lrange(keys.engine_taking(self.engine), 0, -1)
        pipe.smembers(keys.engine_adopting(self.engine))
        owned, inbox, taking, adopting = pipe.execute()
        return owned.difference(inbox, taking, adopting)

    def owned_tags(self) -> set[str]:
        return self.redis.smembers(self.owned)

    def get(self, process: str, key: str, uuid: str) -> dict | None:
        """The job document of the API, or None when there is no such job."""
        h = self.redis.hgetall(keys.job_tag(process, key, uuid))
        if not h:
            return None
        return document(process, key, uuid, h)


class _NetWrites:
    """Takes the writers' commands (the redis-py names they use) and keeps only what they
    leave behind: one HSET per hash, one MSET, one DEL, one ZADD and one ZREM per sorted set,
    one SREM per set. Inside MULTI/EXEC nobody sees the steps between, so this is the same
    write; a foo job went from 48 commands to about 8, and JobData's time with them.
    Later calls win, as they would in order: a task's `running` marker set and deleted in one
    batch ends deleted."""

    def __init__(self):
        self.hashes = {}  # key -> {field: value}
        self.strings = {}  # key -> value, or None: deleted
        self.zsets = {}  # key -> {member: score, or None: removed}
        self.sets = {}  # key -> {members removed}
        self.expires = {}  # key -> seconds: after everything else (SET clears a TTL)
        self.streams = []  # (key, JSON text): stream entries, in order
        self.messages = []  # (channel, text): published once the rest is written

    def hset(self, key, mapping):
        self.hashes.setdefault(key, {}).update(mapping)

    def set(self, key, value):
        self.strings[key] = value

    def delete(self, *names):
        for name in names:
            self.strings[name] = None

    def zadd(self, key, mapping):
        self.zsets.setdefault(key, {}).update(mapping)

    def zrem(self, key, *members):
        z = self.zsets.setdefault(key, {})
        for member in members:
            z[member] = None

    def srem(self, key, *members):
        self.sets.setdefault(key, set()).update(members)

    def expire(self, key, seconds):
        self.expires[key] = seconds

    def xadd(self, key, text):
        self.streams.append((key, text))

    def publish(self, channel, text):
        self.messages.append((channel, text))

    def write(self, pipe):
        for key, mapping in self.hashes.items():
            pipe.hset(key, mapping=mapping)
        kept = {k: v for k, v in self.strings.items() if v is not None}
        if kept:
            pipe.mset(kept)
        gone = [k for k, v in self.strings.items() if v is None]
        if gone:
            pipe.delete(*gone)
        for key, members in self.zsets.items():
            added = {member: score for member, score in members.items() if score is not None}
            removed = [member for member, score in members.items() if score is None]
            if added:
                pipe.zadd(key, added)
            if removed:
                pipe.zrem(key, *removed)
        for key, members in self.sets.items():
            pipe.srem(key, *members)
        for key, text in self.streams:
            pipe.xadd(key, {"e": text})
        for key, seconds in self.expires.items():
            pipe.expire(key, seconds)
        for channel, text in self.messages:
            pipe.publish(channel, text)


def _job_started(pipe, op: m.JobStarted):
    pipe.hset(op.tag, mapping={keys.JOB_STATUS: keys.RUNNING, keys.job_time(keys.RUNNING): op.time})
    pipe.delete(keys.job_marker(op.tag, keys.SCHEDULED))
    pipe.set(keys.job_marker(op.tag, keys.RUNNING), op.time)
    _move(pipe, op.tag, keys.SCHEDULED, keys.RUNNING)


def _task_started(pipe, op: m.TaskStarted):
    n = op.n
    pipe.hset(op.tag, mapping={
        keys.task_field(n, "requestor"): op.requestor,
        keys.task_field(n, "status.current"): keys.TASK_RUNNING,
        keys.task_time(n, keys.TASK_RUNNING): op.time,
        keys.JOB_TASKS: op.tasks_csv,
        keys.task_field(n, "name"): op.name,
        keys.task_field(n, "url"): op.url,
        keys.task_field(n, "parent"): op.parent,
    })
    pipe.set(keys.task_marker(op.tag, n, keys.TASK_RUNNING), op.time)


def _task_ended(pipe, op: m.TaskEnded):
    n = op.n
    fields = {
        keys.task_field(n, "status.current"): op.status,
        keys.task_time(n, op.status): op.time,
        keys.task_field(n, "output.data"): op.data_json,
        keys.task_field(n, "duration_ms"): op.duration_ms,
        keys.task_field(n, "attempts"): op.attempts,
    }
    if op.status == keys.TASK_DONE:
        fields[keys.task_field(n, "output.next_activities")] = op.next_json
    pipe.hset(op.tag, mapping=fields)
    pipe.delete(keys.task_marker(op.tag, n, keys.TASK_RUNNING))
    pipe.set(keys.task_marker(op.tag, n, op.status), op.time)


def _job_ended(pipe, op: m.JobEnded):
    pipe.hset(op.tag, mapping={keys.JOB_STATUS: op.status, keys.job_time(op.status): op.time,
                               "job.errors": op.errors})
    # A job cancelled before it started ends straight from scheduled.
    pipe.delete(keys.job_marker(op.tag, keys.RUNNING), keys.job_marker(op.tag, keys.SCHEDULED))
    pipe.set(keys.job_marker(op.tag, op.status), op.time)
    _move(pipe, op.tag, keys.RUNNING, op.status)
    pipe.zrem(keys.process_jobs(keys.parse_tag(op.tag)[0], keys.SCHEDULED), op.tag)


def _move(pipe, tag: str, old: str, new: str):
    """Move a job between its process's state indexes, scored by when it entered the new state."""
    process = keys.parse_tag(tag)[0]
    pipe.zrem(keys.process_jobs(process, old), tag)
    pipe.zadd(keys.process_jobs(process, new), {tag: ms()})


def _unindex(pipe, tag: str):
    process, key, _ = keys.parse_tag(tag)
    pipe.zrem(keys.process_jobs(process), tag)
    for state in keys.JOB_STATES:
        pipe.zrem(keys.process_jobs(process, state), tag)
    pipe.zrem(keys.key_jobs(process, key), tag)
    pipe.zrem(keys.EXPIRING, tag)


def event(op) -> dict:
    """A job moment as its event stream tells it: small, without the task's output (the job
    document has it)."""
    if type(op) is m.TaskStarted:
        return {"type": "task", "n": op.n, "name": op.name, "status": keys.TASK_RUNNING,
                "time": op.time, "parent": op.parent, "requestor": op.requestor}
    if type(op) is m.TaskEnded:
        return {"type": "task", "n": op.n, "status": op.status, "time": op.time,
                "duration_ms": op.duration_ms, "attempts": op.attempts}
    if type(op) is m.JobStarted:
        return {"type": "job", "status": keys.RUNNING, "time": op.time}
    return {"type": "job", "status": op.status, "time": op.time, "errors": op.errors}


def job_list_changes(pipe, ops: list) -> None:
    """A write batch's job-level changes (a job started; a job ended, with its final state and
    errors) as one entry of the capped stream keys.JOBS_EVENTS, and a wake-up on its channel:
    what keeps a list of jobs live (GET /api/events). One XADD and one PUBLISH per batch that
    has any, not per job; nothing for a batch of task changes only."""
    changes = []
    for op in ops:
        if type(op) is m.JobStarted or type(op) is m.JobEnded:
            process, key, uuid = keys.parse_tag(op.tag)
            changes.append({**event(op), "process": process, "key": key, "uuid": uuid})
    if changes:
        pipe.xadd(keys.JOBS_EVENTS, {"e": json.dumps(changes, separators=(",", ":"))},
                  maxlen=keys.JOBS_EVENTS_KEEP, approximate=True)
        pipe.publish(keys.JOBS_EVENTS, "")


_WRITERS = {m.JobStarted: _job_started, m.TaskStarted: _task_started,
            m.TaskEnded: _task_ended, m.JobEnded: _job_ended}


def document(process: str, key: str, uuid: str, h: dict) -> dict:
    """Turn a job hash into the API's job document (the original's field names), tasks in start order."""
    status = h.get(keys.JOB_STATUS, "")
    tasks = []
    for t in tasks_of(h):
        n, current = t["n"], t["status"]
        task = {
            "name": t["name"],
            "requestor": t["requestor"],
            "status": {"current": current, "time": h.get(keys.task_time(n, current))},
            "data": _json_or_text(t["output"]) if t["output"] is not None else None,
            "index": n,
            "url": t["url"],
            "parent": t["parent"] if t["parent"] >= 0 else None,
        }
        duration = h.get(keys.task_field(n, "duration_ms"))
        if duration is not None:
            task["duration_ms"] = int(duration)
        attempts = h.get(keys.task_field(n, "attempts"))
        if attempts is not None:
            task["attempts"] = int(attempts)
        tasks.append(task)
    doc = {
        "process": process,
        "uuid": uuid,
        "key": key,
        "data": decode_data(h),
        "requestor": h.get(keys.JOB_REQUESTOR),
        "status": {"current": status, "time": h.get(keys.job_time(status))},
        "tasks": tasks,
    }
    if "job.errors" in h:
        doc["errors"] = int(h["job.errors"])
    if keys.JOB_CANCEL_REQUESTED in h:
        doc["cancel_requested"] = h[keys.JOB_CANCEL_REQUESTED]
    return doc


_SUMMARY_FIELDS = (keys.JOB_STATUS, keys.JOB_REQUESTOR, keys.job_time(keys.SCHEDULED), "job.errors",
                   keys.JOB_CANCEL_REQUESTED) + tuple(keys.job_time(s) for s in keys.JOB_STATES[1:])


def summary(tag: str, h: dict) -> dict:
    """A job as the listings show it: who, when, and how it stands, without its tasks."""
    process, key, uuid = keys.parse_tag(tag)
    status = h.get(keys.JOB_STATUS, "")
    s = {"process": process, "key": key, "uuid": uuid, "requestor": h.get(keys.JOB_REQUESTOR),
         "status": {"current": status, "time": h.get(keys.job_time(status))},
         "scheduled": h.get(keys.job_time(keys.SCHEDULED))}
    if "job.errors" in h:
        s["errors"] = int(h["job.errors"])
    if keys.JOB_CANCEL_REQUESTED in h:
        s["cancel_requested"] = h[keys.JOB_CANCEL_REQUESTED]
    return s


def encode_cursor(cursor: tuple | None) -> str | None:
    """The listing cursor as the API hands it out: opaque, URL-safe."""
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple:
    """Inverse of encode_cursor; ValueError for anything it did not make."""
    try:
        score, tag = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        keys.parse_tag(tag)
        # NaN or an infinity (Python's JSON reads them) would make Redis refuse the range.
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError, OverflowError):
        raise ValueError("not a cursor this server handed out") from None
    if not isinstance(tag, str) or not tag.startswith(keys.PREFIX):
        raise ValueError("not a cursor this server handed out")
    return float(score), tag


def tasks_of(h: dict) -> list[dict]:
    """The tasks recorded in a job hash, in start order, as a runner needs them to resume."""
    tasks = []
    n = 0
    while keys.task_field(n, "status.current") in h:
        t = lambda name: h.get(keys.task_field(n, name))  # noqa: E731
        tasks.append({"n": n, "name": t("name"), "url": t("url"), "requestor": t("requestor"),
                      "parent": int(t("parent") or -1), "status": t("status.current"),
                      "output": t("output.data")})
        n += 1
    return tasks


def _json_or_text(s: str):
    try:
        return json.loads(s)
    except ValueError:
        return s
