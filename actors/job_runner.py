"""JobRunner: drives many jobs at once: which tasks start, with what input, and when a job is done."""

import datetime
import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from thespian.actors import ActorExitRequest

from cameron import keys, metrics
from cameron import messages as m
from cameron.activity import RetryPolicy
from cameron.store import now

from actors.base import CameronActor, Pipe
from actors.task_actor import TaskActor


@dataclass
class Task:
    n: int
    name: str
    depth: int
    call: m.ActivityCall  # kept until the task ends, to call again if the TaskActor dies
    started: float = 0.0  # time.monotonic() when this runner started it (engine overhead metric)


@dataclass
class Job:
    spec: m.JobSpec
    names: list = field(default_factory=list)  # task names in start order (job.tasks)
    running: dict = field(default_factory=dict)  # n -> Task
    errors: int = 0
    cancelled: bool = False  # start no new task; end `cancelled` when none runs
    stored_bytes: int = 0  # answers' JSON kept in Redis so far (max_job_bytes)


#: Cancels remembered for jobs this runner has not been handed yet (a StopJob can overtake
#: its RunJob); the oldest are forgotten past this many.
EARLY_CANCELS = 1000
#: How long after its TaskActor died the runner calls the tasks it had in flight again.
RECALL_AFTER = datetime.timedelta(seconds=0.2)
#: Jobs ended here that are remembered, so that one both resumed at boot and then taken off
#: the inbox is not run a second time.
ENDED_KEPT = 10000


def _measure(job, task, outcome):
    """A task's outcome in the metrics: its call, the engine's time around it, retries."""
    process = job.spec.process.name
    metrics.TASKS_IN_FLIGHT.dec()
    call = outcome.duration_ms / 1000
    metrics.CALL_SECONDS.labels(process).observe(call)
    metrics.OVERHEAD_SECONDS.labels(process).observe(max(0.0, time.monotonic() - task.started - call))
    if outcome.attempts > 1:
        metrics.RETRIES.labels(process).inc(outcome.attempts - 1)


class JobRunner(CameronActor):
    """Holds its jobs in memory; one message in produces at most one write batch and one call batch."""

    role = "runner"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.jobs = {}  # uuid -> Job
        self.task_actor = None
        self.finished = 0
        self._ops, self._calls = [], []
        self._seq = self._acked = 0
        self._unacked = deque()  # WriteBatch not yet acknowledged by JobData, oldest first
        self._job_data = None  # the JobData they were sent to
        self.early_cancels = OrderedDict()  # uuid -> tag
        self.ended = OrderedDict()  # uuids of the latest jobs ended here, oldest first
        self._to_tasks = Pipe(self, m.CallActivities)
        self._to_data = Pipe(self, self._write_batch)
        self._recall_generation = 0  # TaskActors replaced: a wake-up of an older one is stale

    def setup(self, first):
        if self.task_actor is None:
            self.task_actor = self.createActor(TaskActor)
        self.send(self.task_actor, m.Setup(self.config, self.peers))
        if self.peers.job_data != self._job_data:
            self._job_data = self.peers.job_data
            if self._unacked:
                # A new JobData: what the old one may have died with goes again, in order.
                self.log.warning("JobData replaced; sending %d unacknowledged write batches again",
                                 len(self._unacked))
                for batch in self._unacked:
                    # With today's floor: the new JobData starts counting from the oldest.
                    self.send(self._job_data, m.WriteBatch(batch.ops, batch.seq, self._acked))
            # Writes waiting for the old JobData's delivery go to the new one now.
            self._to_data.put(self._job_data)

    def receiveMsg_Written(self, msg: m.Written, sender):
        self._acked = max(self._acked, msg.seq)
        while self._unacked and self._unacked[0].seq <= msg.seq:
            self._unacked.popleft()

    # --- from the scheduler -----------------------------------------------

    def receiveMsg_RunJob(self, msg: m.RunJob, sender):
        self._run(msg.job)
        self._flush()

    def receiveMsg_RunJobs(self, msg: m.RunJobs, sender):
        for spec in msg.jobs:
            self._run(spec)
        self._flush()

    def _run(self, spec: m.JobSpec):
        if spec.uuid in self.jobs or spec.uuid in self.ended or self._cancelled_before_start(spec):
            return  # a job both resumed at boot and taken off the inbox runs once
        job = self.jobs[spec.uuid] = Job(spec)
        self._ops.append(m.JobStarted(spec.tag, now()))
        metrics.JOBS_STARTED.labels(spec.process.name).inc()
        self._start_task(job, "start", spec.process.start_url, spec.data, spec.requestor,
                         parent=-1, depth=0)

    def receiveMsg_ResumeJob(self, msg: m.ResumeJob, sender):
        """Go on from what Redis recorded: done and error tasks stay as they are, tasks that
        were running are called again (at-least-once), a job never started starts now."""
        spec = msg.job
        if spec.uuid in self.jobs or spec.uuid in self.ended:
            return  # already driving it (this runner never lost it), or just ended it
        if msg.status == keys.SCHEDULED or not msg.tasks:
            if msg.cancelled:
                self.early_cancels[spec.uuid] = spec.tag
            self._run(spec)
            self._flush()
            return
        job = self.jobs[spec.uuid] = Job(spec, names=[t["name"] for t in msg.tasks],
                                         cancelled=msg.cancelled)
        depth = {}
        for t in msg.tasks:
            depth[t["n"]] = 0 if t["parent"] < 0 else depth[t["parent"]] + 1
            if t["status"] == keys.TASK_ERROR:
                job.errors += 1
            job.stored_bytes += len(t.get("output") or "")
            if t["status"] != keys.TASK_RUNNING:
                continue
            parent = t["parent"]
            data = spec.data if parent < 0 else json.loads(msg.tasks[parent]["output"])
            call = self._call(spec, t["n"], t["name"], t["url"], data, t["requestor"])
            job.running[t["n"]] = Task(t["n"], t["name"], depth[t["n"]], call, time.monotonic())
            self._calls.append(call)
            metrics.TASKS_IN_FLIGHT.inc()
        if not job.running:
            self._end_job(job)
        self._flush()

    def receiveMsg_Reconcile(self, msg: m.Reconcile, sender):
        """Which of these jobs of the engine's does this runner neither drive nor know ended?"""
        missing = [tag for tag in msg.tags
                   if tag.rsplit(":", 1)[1] not in self.jobs and tag.rsplit(":", 1)[1] not in self.ended]
        self.send(msg.reply_to, m.NotRunning(missing))

    def receiveMsg_Disowned(self, msg: m.Disowned, sender):
        for tag in msg.tags:
            job = self.jobs.pop(tag.rsplit(":", 1)[1], None)
            if job is not None:
                metrics.JOBS_IN_FLIGHT.set(len(self.jobs))
                metrics.TASKS_IN_FLIGHT.dec(len(job.running))
                self.log.warning("job %s was taken over by another engine; dropping it", job.spec.uuid)

    # --- from the TaskActor -----------------------------------------------

    def receiveMsg_ActivityOutcomes(self, msg: m.ActivityOutcomes, sender):
        for outcome in msg.outcomes:
            job = self.jobs.get(outcome.job_uuid)
            task = job and job.running.pop(outcome.n, None)
            if task is None:
                continue  # a late duplicate of a call made again after a TaskActor restart
            _measure(job, task, outcome)
            self._task_ended(job, task, outcome)
            if not job.running:
                self._end_job(job)
        self._flush()

    def _end_job(self, job):
        self._ops.append(m.JobEnded(job.spec.tag, now(), job.errors, tasks=len(job.names),
                                    status=keys.CANCELLED if job.cancelled else keys.DONE))
        del self.jobs[job.spec.uuid]
        metrics.JOBS_FINISHED.labels(job.spec.process.name, keys.CANCELLED if job.cancelled else keys.DONE).inc()
        self.ended[job.spec.uuid] = None
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        self.finished += 1

    def _task_ended(self, job, task, outcome):
        result, error = outcome.result, outcome.error
        c = self.config
        if result is not None and result.definitions:
            if task.depth + 1 >= c.max_depth:
                result, error = None, f"next activities would exceed the job depth limit of {c.max_depth}"
            elif len(job.names) + len(result.definitions) > c.max_tasks:
                result, error = None, (f"{len(result.definitions)} next activities would take the job "
                                       f"past its limit of {c.max_tasks} tasks")
        if result is not None:
            data_json = json.dumps(result.data)
            nxt = "undefined" if result.next_activities is None else json.dumps(result.next_activities)
            size = len(data_json) + len(nxt)
            if job.stored_bytes + size > c.max_job_bytes:
                result, error = None, (f"the answer ({size} bytes) would take the job past its limit "
                                       f"of {c.max_job_bytes} bytes of stored answers")
            else:
                job.stored_bytes += size
        if result is None:
            job.errors += 1
            metrics.TASKS_ENDED.labels(job.spec.process.name, keys.TASK_ERROR).inc()
            limit = metrics.limit_of(error)
            if limit:
                metrics.LIMITS.labels(job.spec.process.name, limit).inc()
            self._ops.append(m.TaskEnded(
                job.spec.tag, task.n, keys.TASK_ERROR,
                json.dumps({"error": error, "url": task.call.url}), "undefined", now(),
                outcome.duration_ms, outcome.attempts))
            return
        metrics.TASKS_ENDED.labels(job.spec.process.name, keys.TASK_DONE).inc()
        self._ops.append(m.TaskEnded(job.spec.tag, task.n, keys.TASK_DONE, data_json, nxt, now(),
                                     outcome.duration_ms, outcome.attempts))
        for d in result.definitions:
            # Children get the parent's answer: its data, and its name as their requestor.
            self._start_task(job, d.name, d.url, result.data, result.name,
                             parent=task.n, depth=task.depth + 1)

    def _start_task(self, job, name, url, data, requestor, *, parent, depth):
        if job.cancelled:
            return
        spec = job.spec
        n = len(job.names)
        job.names.append(name)
        call = self._call(spec, n, name, url, data, requestor)
        job.running[n] = Task(n, name, depth, call, time.monotonic())
        metrics.TASKS_STARTED.labels(spec.process.name).inc()
        metrics.TASKS_IN_FLIGHT.inc()
        self._ops.append(m.TaskStarted(spec.tag, n, name, url, requestor, parent,
                                       ",".join(job.names), now()))
        self._calls.append(call)

    def _call(self, spec, n, name, url, data, requestor) -> m.ActivityCall:
        p, c = spec.process, self.config
        return m.ActivityCall(
            job_uuid=spec.uuid, n=n, name=name, url=url,
            body={"job": spec.uuid, "key": spec.key, "data": data, "requestor": requestor},
            connect_timeout=p.connect_timeout or c.connect_timeout,
            read_timeout=p.read_timeout or c.read_timeout,
            retry=RetryPolicy(p.max_attempts or c.max_attempts, p.retry_backoff or c.retry_backoff,
                              p.retry_backoff_max or c.retry_backoff_max),
            allow=p.allow)

    def _flush(self):
        # Calls first: they are the job's critical path, the writes are not. Were this runner
        # to die between the two sends, Redis would still show the parent task running, and
        # resuming would call it (and so its children) again: at-least-once, as ever.
        metrics.JOBS_IN_FLIGHT.set(len(self.jobs))
        if self._calls:
            self._to_tasks.put(self.task_actor, self._calls)
            self._calls = []
        if self._ops:
            self._to_data.put(self.peers.job_data, self._ops)
            self._ops = []

    def _write_batch(self, ops) -> m.WriteBatch:
        self._seq += 1
        batch = m.WriteBatch(ops, self._seq, self._acked)
        self._unacked.append(batch)
        return batch

    # --- cancel -------------------------------------------------------------

    def receiveMsg_StopJob(self, msg: m.StopJob, sender):
        """No new task starts; the running ones finish (or time out) and the job ends cancelled."""
        job = self.jobs.get(msg.uuid)
        if job is None:
            # Not handed to us yet, or already ended: remember it in case it is the former.
            self.early_cancels[msg.uuid] = msg.tag
            while len(self.early_cancels) > EARLY_CANCELS:
                self.early_cancels.popitem(last=False)
            return
        job.cancelled = True
        self.log.info("cancelled: %d running tasks left to finish", len(job.running),
                      extra={"job": msg.uuid})
        if not job.running:
            self._end_job(job)
            self._flush()

    def _cancelled_before_start(self, spec: m.JobSpec) -> bool:
        if self.early_cancels.pop(spec.uuid, None) is None:
            return False
        self.log.info("cancelled before it started", extra={"job": spec.uuid})
        self._end_job(self.jobs.setdefault(spec.uuid, Job(spec, cancelled=True)))
        self._flush()
        return True

    def children(self):
        return (self.task_actor,) if self.task_actor is not None else ()

    # --- supervision of the TaskActor -------------------------------------

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender):
        self.task_actor = None  # shutting down: do not replace it

    def receiveMsg_ChildActorExited(self, msg, sender):
        if self.task_actor is None or msg.childAddress != self.task_actor:
            return
        # The calls it had in flight are lost with it: make them again (at-least-once).
        self.log.warning("TaskActor exited with %d calls in flight; restarting it",
                         sum(len(j.running) for j in self.jobs.values()))
        self.task_actor = self.createActor(TaskActor)
        self.send(self.task_actor, m.Setup(self.config, self.peers))
        # Every task running now is called again, after a moment: outcomes the old one sent
        # just before it died may still be on their way here, and a task they end must not be
        # called again once Redis records it done. Calls that waited for the old one go too.
        self._to_tasks = Pipe(self, m.CallActivities)
        self._recall_generation += 1
        lost = [(uuid, n) for uuid, job in self.jobs.items() for n in job.running]
        self.wakeupAfter(RECALL_AFTER, payload=(self._recall_generation, lost))

    def receiveMsg_WakeupMessage(self, msg, sender):
        generation, lost = msg.payload
        if generation != self._recall_generation:
            return  # that TaskActor died too: the later wake-up calls them all
        for uuid, n in lost:
            task = self.jobs[uuid].running.get(n) if uuid in self.jobs else None
            if task is not None:
                self._calls.append(task.call)
        self._flush()

    def status(self):
        return {"jobs": len(self.jobs), "finished": self.finished,
                "tasks_running": sum(len(j.running) for j in self.jobs.values()),
                "unacked_writes": len(self._unacked)}
