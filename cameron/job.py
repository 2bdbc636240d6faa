"""A job's life as plain Python: which tasks start with what input, the limits, cancel, resume
and when the job ends, and a runner's many jobs (Jobs: each run once, a cancel that came before
its job). Each operation adds its effects (activity calls to make, moments to write) to an
Effects; the JobRunner actor carries them out."""

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from cameron import keys, store
from cameron import messages as m
from cameron.activity import RetryPolicy
from cameron.config import Config

#: Cancels remembered for jobs this runner has not been handed yet (a StopJob can overtake
#: its RunJobs); the oldest are forgotten past this many.
EARLY_CANCELS = 1000
#: Jobs ended here that are remembered, so that one both resumed at boot and then taken off
#: the inbox is not run a second time.
ENDED_KEPT = 10000


@dataclass
class Effects:
    """What operations on jobs ask for, in order: calls first (a job's critical path), then
    the moments to write to Redis."""

    calls: list = field(default_factory=list)  # of messages.ActivityCall
    moments: list = field(default_factory=list)  # of messages.JobStarted, TaskStarted, ...


@dataclass
class Task:
    n: int  # start order in the job, from 0
    id: str  # the task's name in Redis: its name, or name#2, name#3 for later ones of that name
    depth: int
    call: m.ActivityCall  # kept until the task ends, to call again if its call was lost
    started: float = 0.0  # time.monotonic() at its start, for the engine-overhead metric


class Job:
    """One job in a runner's memory: its tasks running and what it has stored so far."""

    def __init__(self, spec: m.JobSpec, config: Config, *, cancelled: bool = False):
        self.spec, self.config = spec, config
        self.ids = []  # task ids in start order (job.tasks)
        self.taken = set()  # the same, to find a new task's id
        self.running = {}  # n -> Task
        self.errors = 0
        self.cancelled = cancelled  # start no new task; end `cancelled` once none runs
        self.stored_bytes = 0  # answers' JSON kept in Redis so far (max_job_bytes)
        self.final = None  # the state it ended in, once it has

    # --- the operations -------------------------------------------------------

    @classmethod
    def start(cls, spec: m.JobSpec, config: Config, fx: Effects, *, cancelled: bool = False) -> "Job":
        """A job off the inbox: its start task is called with the job's data. One cancelled
        while it waited ends `cancelled` without a call."""
        job = cls(spec, config, cancelled=cancelled)
        if cancelled:
            job._end(fx)
            return job
        fx.moments.append(m.JobStarted(spec.tag, store.now()))
        job._start_task(fx, "start", spec.process.start_url, spec.data, spec.requestor, parent=None)
        return job

    @classmethod
    def resume(cls, spec: m.JobSpec, config: Config, tasks: list, fx: Effects, *,
               cancelled: bool = False) -> "Job":
        """Go on from what Redis recorded (`tasks` as store.tasks_of reads them, in start
        order): done and error tasks stay as they are, running ones are called again with the
        input they had (at least once), and a job with none running ends."""
        if not tasks:
            return cls.start(spec, config, fx, cancelled=cancelled)
        job = cls(spec, config, cancelled=cancelled)
        depth = {}
        for t in tasks:
            n, parent = t["n"], t["parent"]
            depth[n] = 0 if parent < 0 else depth[parent] + 1
            job.ids.append(t["id"])
            job.taken.add(t["id"])
            if t["status"] == keys.TASK_DONE:  # counted as task_ended counts: answers, not errors
                job.stored_bytes += len(t["output"] or "") + len(t.get("next") or "")
            elif t["status"] == keys.TASK_ERROR:
                job.errors += 1
            if t["status"] != keys.TASK_RUNNING:
                continue
            data = spec.data if parent < 0 else json.loads(tasks[parent]["output"])
            call = job._call(n, t["id"], t["url"], data, t["requestor"], again=True)
            job.running[n] = Task(n, t["id"], depth[n], call, time.monotonic())
            fx.calls.append(call)
        if not job.running:
            job._end(fx)
        return job

    def task_ended(self, outcome: m.ActivityOutcome, fx: Effects):
        """A call's outcome: the task ends done (its next activities start, with its data) or
        error (nothing starts after it); the job ends when no task runs. Returns the ended Task,
        or None for an outcome that ends nothing (its task no longer runs)."""
        task = self.running.get(outcome.n)
        if task is None:
            return None
        del self.running[outcome.n]
        result, error = outcome.result, outcome.error
        if result is not None:
            data_json, next_json = store.encode_answer(result.data, result.next_activities)
            error = self._past_limits(task, result, len(data_json) + len(next_json))
            if error:
                result = None
            else:
                self.stored_bytes += len(data_json) + len(next_json)
        if result is None:
            self.errors += 1
            fx.moments.append(m.TaskEnded(self.spec.tag, task.n, task.id, keys.TASK_ERROR,
                                          *store.encode_error(error, task.call.url), store.now(),
                                          outcome.duration_ms, outcome.attempts))
        else:
            fx.moments.append(m.TaskEnded(self.spec.tag, task.n, task.id, keys.TASK_DONE,
                                          data_json, next_json, store.now(),
                                          outcome.duration_ms, outcome.attempts))
            for d in result.definitions:
                # Children get the parent's answer: its data, and its name as their requestor.
                self._start_task(fx, d.name, d.url, result.data, result.name, parent=task, last=False)
            if result.definitions and not self.cancelled:
                # job.tasks goes with the last of them only: a fan-out of a thousand would
                # otherwise carry a thousand ever longer copies of the list to JobData.
                fx.moments[-1] = replace(fx.moments[-1], tasks_csv=",".join(self.ids))
        if not self.running:
            self._end(fx)
        return task

    def cancel(self, fx: Effects) -> None:
        """No new task starts; the running ones finish (or time out), then the job ends cancelled."""
        self.cancelled = True
        if not self.running and self.final is None:
            self._end(fx)

    def recall(self, ns, fx: Effects) -> None:
        """Call these running tasks again: their caller died with their calls."""
        for n in ns:
            task = self.running.get(n)
            if task is not None:
                task.call = replace(task.call, again=True)
                fx.calls.append(task.call)

    # --- the rules ------------------------------------------------------------

    def _past_limits(self, task: Task, result, size: int) -> str | None:
        """Which limit an answer (`size` bytes of JSON to store) would take the job past, if any."""
        c = self.config
        if result.definitions:
            if task.depth + 1 >= c.max_depth:
                return f"next activities would exceed the job depth limit of {c.max_depth}"
            if len(self.ids) + len(result.definitions) > c.max_tasks:
                return (f"{len(result.definitions)} next activities would take the job "
                        f"past its limit of {c.max_tasks} tasks")
        if self.stored_bytes + size > c.max_job_bytes:
            return (f"the answer ({size} bytes) would take the job past its limit "
                    f"of {c.max_job_bytes} bytes of stored answers")
        return None

    def _start_task(self, fx: Effects, name, url, data, requestor, *, parent: Task | None, last=True):
        if self.cancelled:
            return
        n, task_id = len(self.ids), self._unique(name)
        self.ids.append(task_id)
        call = self._call(n, task_id, url, data, requestor)
        self.running[n] = Task(n, task_id, 0 if parent is None else parent.depth + 1, call, time.monotonic())
        fx.moments.append(m.TaskStarted(
            self.spec.tag, n, task_id, name, url, requestor, -1 if parent is None else parent.n,
            "" if parent is None else parent.id, ",".join(self.ids) if last else "", store.now()))
        fx.calls.append(call)

    def _unique(self, name: str) -> str:
        """The task's name in Redis: a second task of one name in a job is name#2, and so on
        (past any id an activity's own name took already)."""
        task_id, k = name, 1
        while task_id in self.taken:
            k += 1
            task_id = f"{name}#{k}"
        self.taken.add(task_id)
        return task_id

    def _call(self, n, task_id, url, data, requestor, again=False) -> m.ActivityCall:
        spec, p, c = self.spec, self.spec.process, self.config
        return m.ActivityCall(
            job_uuid=spec.uuid, n=n, name=task_id, url=url,
            body={"job": spec.uuid, "key": spec.key, "data": data, "requestor": requestor},
            connect_timeout=p.connect_timeout or c.connect_timeout,
            read_timeout=p.read_timeout or c.read_timeout,
            retry=RetryPolicy(p.max_attempts or c.max_attempts, p.retry_backoff or c.retry_backoff,
                              p.retry_backoff_max or c.retry_backoff_max),
            allow=p.allow, again=again)

    def _end(self, fx: Effects) -> None:
        self.final = keys.CANCELLED if self.cancelled else keys.DONE
        fx.moments.append(m.JobEnded(self.spec.tag, store.now(), self.errors, tuple(self.ids), self.final))


class Jobs:
    """A runner's jobs in memory, by uuid: those it drives, the latest it ended, and cancels
    for jobs not handed to it yet."""

    def __init__(self, config: Config):
        self.config = config
        self.live = {}  # uuid -> Job
        self.ended = OrderedDict()  # uuids of the latest jobs ended here, oldest first
        self.early_cancels = OrderedDict()  # uuid -> tag
        self.finished = 0

    def __len__(self):
        return len(self.live)

    def start(self, spec: m.JobSpec, fx: Effects) -> None:
        if self._new(spec):
            self._took(Job.start(spec, self.config, fx, cancelled=self._cancelled_early(spec)))

    def resume(self, msg: m.ResumeJob, fx: Effects) -> int:
        """Go on with a job a dead runner or engine left. Returns how many of its tasks were
        called again (called, not started: no TaskStarted counts them)."""
        spec = msg.job
        if not self._new(spec):
            return 0
        cancelled = msg.cancelled or self._cancelled_early(spec)
        tasks = msg.tasks if msg.status != keys.SCHEDULED else []
        job = Job.resume(spec, self.config, tasks, fx, cancelled=cancelled)
        self._took(job)
        return len(job.running) if tasks else 0

    def cancel(self, uuid: str, tag: str, fx: Effects) -> Job | None:
        """The job cancelled, or None when it is not here."""
        job = self.live.get(uuid)
        if job is None:
            # Not handed to us yet, or already ended: remember it in case it is the former.
            self.early_cancels[uuid] = tag
            while len(self.early_cancels) > EARLY_CANCELS:
                self.early_cancels.popitem(last=False)
            return None
        job.cancel(fx)
        self._settle(job)
        return job

    def outcomes(self, outcomes, fx: Effects) -> list:
        """Calls' outcomes: (job, task, outcome) of each that ended its task."""
        ended = []
        for outcome in outcomes:
            job = self.live.get(outcome.job_uuid)
            task = job and job.task_ended(outcome, fx)
            if task:
                ended.append((job, task, outcome))
                self._settle(job)
        return ended

    def running(self) -> list:
        """(uuid, the numbers of its running tasks) of every job."""
        return [(uuid, list(job.running)) for uuid, job in self.live.items()]

    def recall(self, lost, fx: Effects) -> None:
        """Call these tasks (as running() listed them) again: their caller died with their calls."""
        for uuid, ns in lost:
            if uuid in self.live:
                self.live[uuid].recall(ns, fx)

    def missing(self, tags) -> list:
        """The tags of these jobs that this runner neither drives nor knows ended."""
        return [tag for tag in tags if keys.parse_tag(tag)[2] not in self.live
                and keys.parse_tag(tag)[2] not in self.ended]

    def drop(self, tags) -> list:
        """Forget these jobs (another engine took them over): those that were here."""
        return [job for job in (self.live.pop(keys.parse_tag(tag)[2], None) for tag in tags) if job is not None]

    def _new(self, spec) -> bool:
        # A job both resumed at boot and taken off the inbox runs once.
        return spec.uuid not in self.live and spec.uuid not in self.ended

    def _cancelled_early(self, spec) -> bool:
        return self.early_cancels.pop(spec.uuid, None) is not None

    def _took(self, job: Job):
        self.live[job.spec.uuid] = job
        self._settle(job)

    def _settle(self, job: Job):
        """Forget a job that ended."""
        if job.final is None:
            return
        del self.live[job.spec.uuid]
        self.ended[job.spec.uuid] = None
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        self.finished += 1
