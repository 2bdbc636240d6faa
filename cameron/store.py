"""The job schema in Redis: how each moment of a job is written, and how a job is read back."""

import json
import time

import redis

from cameron import keys
from cameron import messages as m

#: A set of the tags of jobs not yet done, so a restarted engine finds them without scanning.
UNFINISHED = f"{keys.PREFIX}:jobs:unfinished"


def now() -> str:
    """The time format of the original (`MM-DD-YYYY hh:mm:ss`), in UTC."""
    return time.strftime("%m-%d-%Y %H:%M:%S", time.gmtime())


def connect(url: str) -> redis.Redis:
    # Short timeouts: a Redis that is down must turn into a quick 503, not a hung worker.
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                socket_connect_timeout=2, health_check_interval=30)


class JobStore:
    """Writes and reads jobs; every write of one call goes in a single MULTI/EXEC round trip."""

    def __init__(self, client: redis.Redis):
        self.redis = client

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
        pipe.sadd(UNFINISHED, tag)
        pipe.execute()

    def apply(self, ops: list) -> None:
        """Write a batch of job moments (messages.JobStarted, TaskStarted, ...) in order, atomically."""
        pipe = self.redis.pipeline(transaction=True)
        for op in ops:
            _WRITERS[type(op)](pipe, op)
        pipe.execute()

    def unfinished(self, runner: int | None, runners: int) -> list[tuple[str, dict]]:
        """(tag, hash) of every job not yet done, or only those of one runner slot."""
        tags = [t for t in self.redis.smembers(UNFINISHED)
                if runner is None or m.runner_slot(t.rsplit(":", 1)[1], runners) == runner]
        pipe = self.redis.pipeline(transaction=False)
        for tag in tags:
            pipe.hgetall(tag)
        return [(tag, h) for tag, h in zip(tags, pipe.execute()) if h]

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
    pipe.srem(UNFINISHED, op.tag)


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
