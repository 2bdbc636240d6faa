"""JobRunner: holds many jobs (cameron.job) in memory and carries out what they ask for: one
message in, at most one batch of calls to its TaskActor and one write batch to JobData out."""

import datetime
from collections import OrderedDict

from thespian.actors import ActorExitRequest

from cameron import keys, metrics
from cameron import messages as m
from cameron.job import Effects, Job
from cameron.writes import Outbox

from actors.base import CameronActor, Pipe
from actors.task_actor import TaskActor

#: Cancels remembered for jobs this runner has not been handed yet (a StopJob can overtake
#: its RunJobs); the oldest are forgotten past this many.
EARLY_CANCELS = 1000
#: How long after its TaskActor died the runner calls the tasks it had in flight again: an
#: outcome it sent just before may still be on its way (fewer calls made twice).
RECALL_AFTER = datetime.timedelta(seconds=0.2)
#: Jobs ended here that are remembered, so that one both resumed at boot and then taken off
#: the inbox is not run a second time.
ENDED_KEPT = 10000


class JobRunner(CameronActor):
    role = "runner"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.jobs = {}  # uuid -> Job
        self.task_actor = None
        self.finished = 0
        self.fx = Effects()  # what the message being handled asks for
        self.outbox = Outbox()  # write batches until JobData acknowledges them
        self._job_data = None  # the JobData they were sent to
        self.early_cancels = OrderedDict()  # uuid -> tag
        self.ended = OrderedDict()  # uuids of the latest jobs ended here, oldest first
        self._to_tasks = Pipe(self, m.CallActivities)
        self._to_data = Pipe(self, self.outbox.batch)
        self._recall_generation = 0  # TaskActors replaced: a wake-up of an older one is stale

    def setup(self, first):
        if self.task_actor is None:
            self.task_actor = self.createActor(TaskActor)
        self.send(self.task_actor, m.Setup(self.config, self.peers))
        if self.peers.job_data != self._job_data:
            self._job_data = self.peers.job_data
            again = self.outbox.again()
            if again:
                # A new JobData: what the old one may have died with goes again, in order.
                self.log.warning("JobData replaced; sending %d unacknowledged write batches again", len(again))
                for batch in again:
                    self.send(self._job_data, batch)
            # Writes waiting for the old JobData's delivery go to the new one now.
            self._to_data.put(self._job_data)

    def receiveMsg_Written(self, msg: m.Written, sender):
        self.outbox.written(msg.seq)

    # --- from the scheduler -----------------------------------------------

    def receiveMsg_RunJobs(self, msg: m.RunJobs, sender):
        for spec in msg.jobs:
            if self._new(spec):
                self._took(spec, Job.start(spec, self.config, self.fx, cancelled=self._cancelled_early(spec)))
        self._flush()

    def receiveMsg_ResumeJob(self, msg: m.ResumeJob, sender):
        spec = msg.job
        if self._new(spec):
            cancelled = msg.cancelled or self._cancelled_early(spec)
            tasks = msg.tasks if msg.status != keys.SCHEDULED else []
            job = Job.resume(spec, self.config, tasks, self.fx, cancelled=cancelled)
            if tasks:
                metrics.TASKS_IN_FLIGHT.inc(len(job.running))  # called again, not started
            self._took(spec, job)
        self._flush()

    def _new(self, spec) -> bool:
        # A job both resumed at boot and taken off the inbox runs once.
        return spec.uuid not in self.jobs and spec.uuid not in self.ended

    def _cancelled_early(self, spec) -> bool:
        return self.early_cancels.pop(spec.uuid, None) is not None

    def _took(self, spec, job: Job):
        self.jobs[spec.uuid] = job
        self._settle(job)

    def receiveMsg_Reconcile(self, msg: m.Reconcile, sender):
        """Which of these jobs of the engine's does this runner neither drive nor know ended?"""
        missing = [tag for tag in msg.tags if keys.parse_tag(tag)[2] not in self.jobs
                   and keys.parse_tag(tag)[2] not in self.ended]
        self.send(msg.reply_to, m.NotRunning(missing))

    def receiveMsg_Disowned(self, msg: m.Disowned, sender):
        for tag in msg.tags:
            job = self.jobs.pop(keys.parse_tag(tag)[2], None)
            if job is not None:
                metrics.TASKS_IN_FLIGHT.dec(len(job.running))
                self.log.warning("job %s was taken over by another engine; dropping it", job.spec.uuid)
        metrics.JOBS_IN_FLIGHT.set(len(self.jobs))

    def receiveMsg_StopJob(self, msg: m.StopJob, sender):
        self.send(sender, m.Stopping(msg.uuid))
        job = self.jobs.get(msg.uuid)
        if job is None:
            # Not handed to us yet, or already ended: remember it in case it is the former.
            self.early_cancels[msg.uuid] = msg.tag
            while len(self.early_cancels) > EARLY_CANCELS:
                self.early_cancels.popitem(last=False)
            return
        self.log.info("cancelled: %d running tasks left to finish", len(job.running), extra={"job": msg.uuid})
        job.cancel(self.fx)
        self._settle(job)
        self._flush()

    # --- from the TaskActor -----------------------------------------------

    def receiveMsg_ActivityOutcomes(self, msg: m.ActivityOutcomes, sender):
        from_dead = sender != self.task_actor
        for outcome in msg.outcomes:
            job = self.jobs.get(outcome.job_uuid)
            task = job and job.task_ended(outcome, self.fx, from_dead_caller=from_dead)
            if task:
                metrics.call_ended(job.spec.process.name, task.started, outcome.duration_ms, outcome.attempts)
                self._settle(job)
        self._flush()

    def _settle(self, job: Job):
        """Forget a job that ended."""
        if job.final is None:
            return
        del self.jobs[job.spec.uuid]
        self.ended[job.spec.uuid] = None
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        self.finished += 1

    def _flush(self):
        # Calls first: they are the job's critical path, the writes are not. Were this runner
        # to die between the two sends, Redis would still show the parent task running, and
        # resuming would call it (and so its children) again: at-least-once, as ever.
        fx, self.fx = self.fx, Effects()
        metrics.observe(fx.moments)
        metrics.JOBS_IN_FLIGHT.set(len(self.jobs))
        if fx.calls:
            self._to_tasks.put(self.task_actor, fx.calls)
        if fx.moments:
            self._to_data.put(self.peers.job_data, fx.moments)

    # --- supervision of the TaskActor -------------------------------------

    def children(self):
        return (self.task_actor,) if self.task_actor is not None else ()

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
        # Calls that waited for the old one go to the new one with the rest.
        self._to_tasks = Pipe(self, m.CallActivities)
        self._recall_generation += 1
        lost = [(uuid, list(job.running)) for uuid, job in self.jobs.items()]
        self.wakeupAfter(RECALL_AFTER, payload=(self._recall_generation, lost))

    def receiveMsg_WakeupMessage(self, msg, sender):
        generation, lost = msg.payload
        if generation != self._recall_generation:
            return  # that TaskActor died too: the later wake-up calls them all
        for uuid, ns in lost:
            if uuid in self.jobs:
                self.jobs[uuid].recall(ns, self.fx)
        self._flush()

    def status(self):
        return {"jobs": len(self.jobs), "finished": self.finished,
                "tasks_running": sum(len(j.running) for j in self.jobs.values()),
                "unacked_writes": len(self.outbox.unacked)}
