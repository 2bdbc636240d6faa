"""The job schema in Redis: how each moment of a job is written, and how a job is read back."""

import json
import time

import redis

from cameron import keys
from cameron import messages as m

#: Where engines before leases kept every unfinished job; whoever boots next adopts them.
LEGACY_UNFINISHED = f"{keys.PREFIX}:jobs:unfinished"

#: Takes over the jobs of every other engine whose lease has expired, atomically, so two
#: engines that both see one dead can never both get its jobs. Returns the tags moved.
#: (It names keys it builds itself: fine on one Redis server, not on Redis Cluster.)
_CLAIM = """
local me, prefix = ARGV[1], ARGV[2]
local mine = prefix .. ':engine:' .. me .. ':jobs'
local moved = {}
local function take(set)
  for _, tag in ipairs(redis.call('SMEMBERS', set)) do
    redis.call('SADD', mine, tag)
    table.insert(moved, tag)
  end
  redis.call('DEL', set)
end
for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if other ~= me and redis.call('EXISTS', prefix .. ':engine:' .. other .. ':lease') == 0 then
    take(prefix .. ':engine:' .. other .. ':jobs')
    redis.call('SREM', KEYS[1], other)
  end
end
take(KEYS[2])
return moved
"""


def now() -> str:
    """The time format of the original (`MM-DD-YYYY hh:mm:ss`), in UTC."""
    return time.strftime("%m-%d-%Y %H:%M:%S", time.gmtime())


def connect(url: str) -> redis.Redis:
    # Short timeouts: a Redis that is down must turn into a quick 503, not a hung worker.
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                socket_connect_timeout=2, health_check_interval=30)


class JobStore:
    """Writes and reads jobs; every write of one call goes in a single MULTI/EXEC round trip.
    `engine` is the engine this store works for: the jobs it creates are that engine's."""

    def __init__(self, client: redis.Redis, engine: str):
        self.redis = client
        self.engine = engine
        self.owned = keys.engine_jobs(engine)
        self._claim = client.register_script(_CLAIM)

    def create(self, job: m.JobSpec) -> None:
        tag = job.tag
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(tag, mapping={
            keys.JOB_KEY: job.key,
            keys.JOB_DATA: job.data,
            keys.JOB_REQUESTOR: job.requestor,
            keys.JOB_STATUS: keys.SCHEDULED,
            keys.job_time(keys.SCHEDULED): job.scheduled_time,
            keys.JOB_PROCESS: job.process.name,
            keys.JOB_START_URL: job.process.start_url,
        })
        pipe.set(keys.job_marker(tag, keys.SCHEDULED), job.scheduled_time)
        pipe.sadd(self.owned, tag)
        pipe.execute()

    def apply(self, ops: list) -> None:
        """Write a batch of job moments (messages.JobStarted, TaskStarted, ...) in order, atomically."""
        pipe = self.redis.pipeline(transaction=True)
        for op in ops:
            _WRITERS[type(op)](pipe, op)
            if type(op) is m.JobEnded:
                pipe.srem(self.owned, op.tag)
        pipe.execute()

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

    def renew_lease(self, ttl: float) -> bool:
        """Renew this engine's lease; False when it had expired (others may have taken jobs)."""
        lease = keys.engine_lease(self.engine)
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(lease)
        pipe.set(lease, str(time.time()), px=int(ttl * 1000))
        pipe.sadd(keys.ENGINES, self.engine)
        return bool(pipe.execute()[0])

    def claim_orphans(self) -> list[str]:
        """Take over the unfinished jobs of engines whose lease expired; their tags."""
        return self._claim(keys=[keys.ENGINES, LEGACY_UNFINISHED], args=[self.engine, keys.PREFIX])

    def owned_tags(self) -> set[str]:
        return self.redis.smembers(self.owned)

    def get(self, process: str, key: str, uuid: str) -> dict | None:
        """The job document of the API, or None when there is no such job."""
        h = self.redis.hgetall(keys.job_tag(process, key, uuid))
        if not h:
            return None
        return document(process, key, uuid, h)


def _job_started(pipe, op: m.JobStarted):
    pipe.hset(op.tag, mapping={keys.JOB_STATUS: keys.RUNNING, keys.job_time(keys.RUNNING): op.time})
    pipe.delete(keys.job_marker(op.tag, keys.SCHEDULED))
    pipe.set(keys.job_marker(op.tag, keys.RUNNING), op.time)


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
    pipe.hset(op.tag, mapping={keys.JOB_STATUS: keys.DONE, keys.job_time(keys.DONE): op.time,
                               "job.errors": op.errors})
    pipe.delete(keys.job_marker(op.tag, keys.RUNNING))
    pipe.set(keys.job_marker(op.tag, keys.DONE), op.time)


_WRITERS = {m.JobStarted: _job_started, m.TaskStarted: _task_started,
            m.TaskEnded: _task_ended, m.JobEnded: _job_ended}


def document(process: str, key: str, uuid: str, h: dict) -> dict:
    """Turn a job hash into the API's job document (SPEC.md field names), tasks in start order."""
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
        "data": h.get(keys.JOB_DATA),
        "requestor": h.get(keys.JOB_REQUESTOR),
        "status": {"current": status, "time": h.get(keys.job_time(status))},
        "tasks": tasks,
    }
    if "job.errors" in h:
        doc["errors"] = int(h["job.errors"])
    return doc


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
