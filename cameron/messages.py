"""Messages between the web layer and the actors, and among the actors (all pickled by Thespian)."""

from dataclasses import dataclass, field
from typing import Any

from cameron.activity import RetryPolicy
from cameron.catalog import Process
from cameron.config import Config
from cameron.lane import per_task


@per_task
class JobSpec:
    """Everything needed to run a job, fixed when it is accepted."""

    process: Process
    key: str
    data: Any  # a string, or any JSON value the client gave
    requestor: str
    uuid: str
    tag: str


# --- web layer -> actors, and the answers ---------------------------------

@dataclass(frozen=True)
class WhereIs:
    """Ask the supervisor for its children's addresses; boots it with `config` if it was not."""

    config: Config


@dataclass
class Peers:
    """Addresses of the supervised actors, as the supervisor last created them."""

    catalog: Any = None
    job_data: Any = None
    scheduler: Any = None
    runners: list = field(default_factory=list)
    #: Raised on every change: messages between two actors are not always delivered in the
    #: order sent, so an actor keeps the newest Peers it has seen.
    generation: int = 0


@dataclass(frozen=True)
class Unavailable:
    """The engine cannot take the request now (Redis down, actors restarting); try again."""

    reason: str


@dataclass(frozen=True)
class ListProcesses:
    pass


@dataclass(frozen=True)
class ProcessList:
    processes: list
    reply_to: Any = None  # after a reload: who to pass the list on to once it is in use


@dataclass(frozen=True)
class Ping:
    """Any actor answers Pong: how `cameron status` and start-up see that it lives."""


@dataclass(frozen=True)
class Pong:
    role: str
    pid: int
    handled: int
    status: dict
    cls: str = ""  # the actor's class, for `cameron status`
    children: tuple = ()  # addresses of the actors it created and supervises itself


# --- among the actors -----------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """From the supervisor: the settings and where the other actors are; resent on any restart."""

    config: Config
    peers: Peers


@dataclass(frozen=True)
class NewJobs:
    """JobData -> scheduler: jobs the API accepted, taken off the engine's inbox:
    [(tag, {job hash field: value})]."""

    jobs: list


@dataclass(frozen=True)
class RunJobs:
    """Scheduler -> JobRunner: drive these stored jobs to the end (a batch off the inbox)."""

    jobs: list


@dataclass(frozen=True)
class Recover:
    """Supervisor -> scheduler: resume unfinished jobs from Redis, those of runner `runner`
    after it was restarted, or all of them (None) when the engine boots."""

    runner: int | None
    peers: Peers  # the runners to resume on, which the scheduler may not have heard of yet


@dataclass(frozen=True)
class LoadUnfinished:
    """Scheduler -> JobData: read the unfinished jobs whose runner slot is `runner` (None: all)."""

    runner: int | None
    runners: list  # the runners' addresses, handed back with the answer


@dataclass(frozen=True)
class UnfinishedJobs:
    jobs: list  # of (tag, job hash)
    runners: list


@dataclass(frozen=True)
class Disowned:
    """JobData -> JobRunner: another engine took these jobs over (our lease had expired): drop
    them, call nothing more for them."""

    tags: list


@dataclass(frozen=True)
class Reconcile:
    """JobData -> scheduler -> each JobRunner: tags of jobs this engine owns in Redis and has
    handed out; the runners answer JobData which of them they neither run nor ended."""

    tags: list
    reply_to: object = None


@dataclass(frozen=True)
class NotRunning:
    """JobRunner -> JobData: jobs of a Reconcile this runner does not run: to hand out again."""

    tags: list


@dataclass(frozen=True)
class ResumeJob:
    """Scheduler -> JobRunner: go on with a job a dead runner or engine left unfinished."""

    job: JobSpec
    status: str
    tasks: list  # store.tasks_of(): [{"n", "id", "name", "url", "requestor", "parent", ...}]
    cancelled: bool = False  # a cancel was recorded: start no new task, end it cancelled


def runner_slot(uuid: str, runners: int) -> int:
    """Which runner drives a job: fixed by its uuid, so a resumed job and a new one never
    end up on two runners at once."""
    return int(uuid, 16) % runners


# Writes, batched by the JobRunner into one WriteBatch per message it handles.

@per_task
class JobStarted:
    tag: str
    time: str


@per_task
class TaskStarted:
    tag: str
    n: int  # start order in the job
    id: str  # its name in Redis (task.<id>.*): the name, or name#2 for the job's second one
    name: str
    url: str
    requestor: str
    parent: int  # the parent's n; -1 for the start task
    parent_id: str  # "" for the start task
    tasks_csv: str  # job.tasks after this task joined it; "" but on the last one an answer started
    time: str


@per_task
class TaskEnded:
    tag: str
    n: int
    id: str
    status: str  # done or error
    data_json: str
    next_json: str  # JSON text, or "undefined" for a leaf or an error
    time: str
    duration_ms: int
    attempts: int = 1


@per_task
class JobEnded:
    tag: str
    time: str
    errors: int
    task_ids: tuple = ()  # its tasks' ids: their markers expire with the job
    status: str = "done"  # or "cancelled"


@dataclass(frozen=True)
class WriteBatch:
    ops: list
    #: The runner's number for the batch, counting up from 1: JobData applies each runner's
    #: batches in this order (Thespian may deliver them out of it) and acknowledges them.
    seq: int
    #: Every batch up to this one is known to be in Redis: where a new JobData starts counting.
    floor: int


@dataclass(frozen=True)
class Written:
    """JobData -> JobRunner: every batch of yours up to `seq` is in Redis. Until then the runner
    keeps a batch, to send it again if JobData dies with it (re-applying a batch is harmless)."""

    seq: int


@per_task
class ActivityCall:
    """JobRunner -> TaskActor: call one activity for one task."""

    job_uuid: str
    n: int
    name: str  # the task's id (X-Cameron-Task: n:id)
    url: str
    body: dict
    connect_timeout: float
    read_timeout: float
    retry: RetryPolicy
    allow: Any = None  # the process's AllowList: checked against the address connected to
    #: Made again because an engine part died with this task's call in flight: the earlier
    #: call may have reached the activity (X-Cameron-Again tells it).
    again: bool = False


@dataclass(frozen=True)
class CallActivities:
    calls: list


@per_task
class ActivityOutcome:
    """The answer of one call: `result` when it went well, else `error` says what happened."""

    job_uuid: str
    n: int
    result: Any  # cameron.activity.ActivityResult or None
    error: str | None
    duration_ms: int
    attempts: int = 1


@dataclass(frozen=True)
class ActivityOutcomes:
    outcomes: list


@dataclass(frozen=True)
class Lane:
    """JobRunner -> its new TaskActor: the file descriptor of the TaskActor's half of the lane
    (cameron.lane), inherited when its process was forked from the runner's, and the runner's
    half's, which the TaskActor closes. Calls and outcomes go over the lane from then on."""

    fd: int
    runner_fd: int


# --- operations: listing, cancel, idempotent start, catalog reload --------

@dataclass(frozen=True)
class StopJob:
    """Web or CLI -> JobRunner, once the cancel is in the job's hash: start no new task of this
    job; end it cancelled once its running tasks have finished. Answered with Stopping."""

    uuid: str
    tag: str


@dataclass(frozen=True)
class Stopping:
    uuid: str


@dataclass(frozen=True)
class ReloadCatalog:
    """CLI -> ProcessCatalog: read the catalog file again (answer ProcessList or CatalogInvalid);
    jobs already accepted keep the settings they started with."""


@dataclass(frozen=True)
class CatalogInvalid:
    reason: str


def _short(self) -> str:
    # Thespian renders every message with str() for a debug line on each send and receive,
    # even with debug logging off: the full dataclass text of a write batch costs real CPU.
    return type(self).__name__


for _cls in list(globals().values()):
    if isinstance(_cls, type) and hasattr(_cls, "__dataclass_fields__") and _cls.__module__ == __name__:
        _cls.__str__ = _short


@dataclass(frozen=True)
class TreeReport:
    """Supervisor -> JobData, every second: the supervision tree as it is, for the engine's
    health record in Redis."""

    pid: int
    children: int  # alive
    expected: int
    given_up: tuple = ()
