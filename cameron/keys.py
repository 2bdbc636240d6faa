"""Redis key and field names: the one place that spells them (operators read them with redis-cli)."""

PREFIX = "cameron"

#: Job states, as written to `job.status.current` and used as marker suffixes.
SCHEDULED, RUNNING, DONE = "scheduled", "running", "done"
#: Task states.
TASK_RUNNING, TASK_DONE, TASK_ERROR = "running", "done", "error"


def job_tag(process: str, key: str, uuid: str) -> str:
    """The job hash; every marker of the job hangs off it (JOBTAG in SPEC.md)."""
    return f"{PREFIX}:process:{process}:key:{key}:job:{uuid}"


def job_marker(tag: str, state: str) -> str:
    """`JOBTAG:pending`, `JOBTAG:running` or `JOBTAG:done`."""
    return f"{tag}:{'pending' if state == SCHEDULED else state}"


def task_marker(tag: str, n: int, state: str) -> str:
    """`JOBTAG:N:running`, `JOBTAG:N:done` or `JOBTAG:N:error`."""
    return f"{tag}:{n}:{state}"


# Job hash fields (SPEC.md names).
JOB_KEY, JOB_DATA, JOB_REQUESTOR = "job.key", "job.data", "job.requestor"
JOB_STATUS, JOB_TASKS = "job.status.current", "job.tasks"
# Ours: what a restarted engine needs to run the job again without the catalog.
JOB_PROCESS, JOB_START_URL = "job.process", "job.start_url"


def job_time(state: str) -> str:
    return f"job.status.{state}.time"


def task_field(n: int, name: str) -> str:
    """`task.N.<name>`, e.g. task_field(3, "status.current")."""
    return f"task.{n}.{name}"


def task_time(n: int, state: str) -> str:
    return f"task.{n}.status.{state}.time"


# Engines sharing one Redis, and which unfinished jobs each one runs.
ENGINES = f"{PREFIX}:engines"


def engine_lease(engine: str) -> str:
    """Exists while the engine lives: it renews it; when it expires, others take its jobs."""
    return f"{PREFIX}:engine:{engine}:lease"


def engine_jobs(engine: str) -> str:
    """The set of the tags of the engine's jobs not yet done."""
    return f"{PREFIX}:engine:{engine}:jobs"
