"""How each moment of a job (messages.JobStarted, TaskStarted, TaskEnded, JobEnded) is written:
its fields, markers and index entries, gathered into the few commands they leave behind."""

import json

from cameron import keys
from cameron import messages as m
from cameron.store.documents import ms


class NetWrites:
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
    t = op.id
    fields = {
        keys.task_field(t, "requestor"): op.requestor,
        keys.task_field(t, "status.current"): keys.TASK_RUNNING,
        keys.task_time(t, keys.TASK_RUNNING): op.time,
        # Ours: what a resume needs (the start order, the parent) and what the API shows.
        keys.task_field(t, "index"): op.n,
        keys.task_field(t, "name"): op.name,
        keys.task_field(t, "url"): op.url,
        keys.task_field(t, "parent"): op.parent_id,
    }
    if op.tasks_csv:  # the last task started by one answer carries job.tasks for all of them
        fields[keys.JOB_TASKS] = op.tasks_csv
    pipe.hset(op.tag, mapping=fields)
    pipe.set(keys.task_marker(op.tag, t, keys.TASK_RUNNING), op.time)


def _task_ended(pipe, op: m.TaskEnded):
    t = op.id
    fields = {
        keys.task_field(t, "status.current"): op.status,
        keys.task_time(t, op.status): op.time,
        keys.task_field(t, "output.data"): op.data_json,
        keys.task_field(t, "duration_ms"): op.duration_ms,
        keys.task_field(t, "attempts"): op.attempts,
    }
    if op.status == keys.TASK_DONE:
        fields[keys.task_field(t, "output.next_activities")] = op.next_json
    pipe.hset(op.tag, mapping=fields)
    pipe.delete(keys.task_marker(op.tag, t, keys.TASK_RUNNING))
    pipe.set(keys.task_marker(op.tag, t, op.status), op.time)


def _job_ended(pipe, op: m.JobEnded):
    pipe.hset(op.tag, mapping={keys.JOB_STATUS: op.status, keys.job_time(op.status): op.time,
                               keys.JOB_ERRORS: op.errors})
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


def unindex(pipe, tag: str):
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
        return {"type": "task", "n": op.n, "id": op.id, "name": op.name, "status": keys.TASK_RUNNING,
                "time": op.time, "parent": op.parent, "requestor": op.requestor}
    if type(op) is m.TaskEnded:
        return {"type": "task", "n": op.n, "id": op.id, "status": op.status, "time": op.time,
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


WRITERS = {m.JobStarted: _job_started, m.TaskStarted: _task_started,
            m.TaskEnded: _task_ended, m.JobEnded: _job_ended}
