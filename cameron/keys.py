"""Redis key and field names: the one place that spells them (operators read them with redis-cli)."""

import re

PREFIX = "cameron"

#: Job states, as written to `job.status.current` and used as marker suffixes.
SCHEDULED, RUNNING, DONE = "scheduled", "running", "done"
#: Task states.
TASK_RUNNING, TASK_DONE, TASK_ERROR = "running", "done", "error"


def job_tag(process: str, key: str, uuid: str) -> str:
    """The job hash; every marker of the job hangs off it (JOBTAG in the README's Redis schema)."""
    return f"{PREFIX}:process:{process}:key:{key}:job:{uuid}"


def job_marker(tag: str, state: str) -> str:
    """`JOBTAG:pending`, `JOBTAG:running` or `JOBTAG:done`."""
    return f"{tag}:{'pending' if state == SCHEDULED else state}"


def task_marker(tag: str, task: str, state: str) -> str:
    """`JOBTAG:<task>:running`, `JOBTAG:<task>:done` or `JOBTAG:<task>:error`."""
    return f"{tag}:{task}:{state}"


# Job hash fields (the original's names).
JOB_KEY, JOB_DATA, JOB_REQUESTOR = "job.key", "job.data", "job.requestor"
#: "1" when job.data holds JSON text of a value that is not a string (a string is stored as is).
JOB_DATA_JSON = "job.data.json"
JOB_STATUS, JOB_TASKS = "job.status.current", "job.tasks"
# Ours: what a restarted engine needs to run the job again without the catalog.
JOB_PROCESS, JOB_START_URL = "job.process", "job.start_url"


def job_time(state: str) -> str:
    return f"job.status.{state}.time"


# A task's fields are named by the task: `task.<task>.<field>`, where <task> is the task's
# name (`start`, or the name its parent's answer gave it), `name#2`, `name#3` for the job's
# later tasks of one name. Names may hold dots and colons: read a field by its known suffix.
TASK_HEAD, TASK_STATUS_TAIL = "task.", ".status.current"


def task_field(task: str, field: str) -> str:
    """`task.<task>.<field>`, e.g. task_field("act_1", "status.current")."""
    return f"task.{task}.{field}"


def task_time(task: str, state: str) -> str:
    return f"task.{task}.status.{state}.time"


def task_ids(h: dict) -> list[str]:
    """The ids of the tasks in a job hash (in no order): each has a `status.current` field."""
    return [f[len(TASK_HEAD):-len(TASK_STATUS_TAIL)] for f in h
            if f.startswith(TASK_HEAD) and f.endswith(TASK_STATUS_TAIL)]


# Engines sharing one Redis, and which unfinished jobs each one runs.
ENGINES = f"{PREFIX}:engines"


def engine_lease(engine: str) -> str:
    """Exists while the engine lives: it renews it; when it expires, others take its jobs."""
    return f"{PREFIX}:engine:{engine}:lease"


def engine_jobs(engine: str) -> str:
    """The set of the tags of the engine's jobs not yet done."""
    return f"{PREFIX}:engine:{engine}:jobs"


def engine_inbox(engine: str) -> str:
    """The list of the tags of jobs accepted but not yet handed to a runner; also the pub/sub
    channel that wakes the engine's JobData when one is pushed."""
    return f"{PREFIX}:engine:{engine}:inbox"


def engine_taking(engine: str) -> str:
    """The list of the tags JobData moved off the inbox and has not yet acknowledged handing
    to the scheduler: what a take whose reply was lost leaves for the next take."""
    return f"{PREFIX}:engine:{engine}:taking"


def engine_adopting(engine: str) -> str:
    """The set of the tags the engine took over from dead engines and has not yet
    acknowledged handing to its runners: what a claim whose reply was lost leaves behind."""
    return f"{PREFIX}:engine:{engine}:adopting"


def engine_written(engine: str) -> str:
    """The token of the engine's last write batch that reached Redis: after a write whose
    reply was lost, JobData reads it to learn whether that write was applied."""
    return f"{PREFIX}:engine:{engine}:written"


def engine_health(engine: str) -> str:
    """Hash the engine's JobData refreshes every second, expiring soon after: its supervision
    tree (Supervisor pid, children alive and expected, children given up) and when a job last
    moved. /api/health and `cameron status` read it instead of asking the actors."""
    return f"{PREFIX}:engine:{engine}:health"


def engine_catalog(engine: str) -> str:
    """Hash process name -> start URL: the catalog the engine runs, which the API checks a
    start against (written by the ProcessCatalog at boot and on every reload)."""
    return f"{PREFIX}:engine:{engine}:catalog"


# --- ours: what the operations side needs (listing, cancel, idempotent start, expiry) -------

#: A job's final state when it was cancelled (beside DONE); `job.status.cancelled.time`.
CANCELLED = "cancelled"
#: Every state a job can be in, in lifecycle order.
JOB_STATES = (SCHEDULED, RUNNING, DONE, CANCELLED)
FINAL_STATES = (DONE, CANCELLED)
#: When a cancel was asked for: a job with this field starts no new task, even after a restart.
JOB_CANCEL_REQUESTED = "job.cancel.requested"
#: How many of its tasks ended in error, once the job has ended.
JOB_ERRORS = "job.errors"

_TAG_HEAD = f"{PREFIX}:process:"
_UUID = re.compile(r"[0-9a-f]{32}")


def is_uuid(text: str) -> bool:
    """A job's uuid: 32 lower-case hex digits."""
    return _UUID.fullmatch(text) is not None
_UUID_TAIL = len(":job:") + 32


def parse_tag(tag: str) -> tuple[str, str, str]:
    """(process, key, uuid) of a job tag; process names cannot hold ':', uuids are 32 hex."""
    process, rest = tag[len(_TAG_HEAD):].split(":key:", 1)
    return process, rest[:-_UUID_TAIL], tag[-32:]


def process_jobs(process: str, state: str | None = None) -> str:
    """Sorted set of a process's job tags: all of them scored by creation time (ms), or those
    in one state scored by when they entered it."""
    base = f"{PREFIX}:process:{process}:jobs"
    return base if state is None else f"{base}:{state}"


def key_jobs(process: str, key: str) -> str:
    """Sorted set of the job tags of one process and key, scored by creation time (ms)."""
    return f"{PREFIX}:process:{process}:key:{key}:jobs"


def job_by_uuid(uuid: str) -> str:
    """A string holding the job's tag, so a job can be found from its uuid alone."""
    return f"{PREFIX}:job:{uuid}"


def job_events(uuid: str) -> str:
    """A Redis stream of the job's state changes, in the order they were written: each entry
    holds the changes of one write batch as JSON (field `e`). Expires a while after the job ends.
    Also the pub/sub channel on which each such write says the stream grew."""
    return f"{PREFIX}:job:{uuid}:events"
#: Seconds a finished job's event stream is kept (less when job_retention is shorter): long
#: enough for a follower that lost its connection to resume where it was. Later, a stream
#: asked for is rebuilt from the job's hash. (An hour of them at full load was gigabytes.)
EVENTS_TTL = 60
#: A capped Redis stream of every job's job-level changes (started; ended, with its final
#: state): one entry per write batch that had any, holding them as JSON (field `e`). Also the
#: pub/sub channel on which each such write says the stream grew.
JOBS_EVENTS = f"{PREFIX}:jobs:events"
#: Entries JOBS_EVENTS keeps, about (Redis trims it as it grows): seconds of history under
#: full load, hours when the engine is quiet. A reader that falls further behind is told so.
JOBS_EVENTS_KEEP = 2000


def idempotency(process: str, client: str, key: str) -> str:
    """A start's Idempotency-Key: JSON {"tag", "fingerprint"} of the job it created. A key is
    one client's within one process: `client` is its API token's name ("" without tokens),
    so two clients choosing the same key never meet."""
    return f"{PREFIX}:idempotency:{process}:{client}:{key}"


#: Sorted set of finished jobs' tags scored by when their hash expires: what the index
#: sweep removes from the sorted sets above.
EXPIRING = f"{PREFIX}:jobs:expiring"
