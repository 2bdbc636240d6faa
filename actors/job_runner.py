"""JobRunner: holds many jobs (cameron.job) in memory and carries out what they ask for: one
message in, at most one batch of calls to its TaskActor and one write batch to JobData out."""

import datetime

from thespian.actors import ActorExitRequest

from cameron import keys, metrics
from cameron import messages as m
from cameron.job import Effects, Jobs
from cameron.writes import Outbox

from actors.base import CameronActor, Pipe
from actors.task_actor import TaskActor

#: How long after its TaskActor died the runner calls the tasks it had in flight again: an
#: outcome it sent just before may still be on its way (fewer calls made twice).
RECALL_AFTER = datetime.timedelta(seconds=0.2)


class JobRunner(CameronActor):
    role = "runner"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.jobs = None  # Jobs, from the first Setup on
        self.task_actor = None
        self.fx = Effects()  # what the message being handled asks for
        self.outbox = Outbox()  # write batches until JobData acknowledges them
        self._job_data = None  # the JobData they were sent to
        self._to_tasks = Pipe(self, m.CallActivities)
        self._to_data = Pipe(self, self.outbox.batch)
        self._recall_generation = 0  # TaskActors replaced: a wake-up of an older one is stale

    def setup(self, first):
        if first:
            self.jobs = Jobs(self.config)
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
            self.jobs.start(spec, self.fx)
        self._flush()

    def receiveMsg_ResumeJob(self, msg: m.ResumeJob, sender):
        metrics.TASKS_IN_FLIGHT.inc(self.jobs.resume(msg, self.fx))  # called again, not started
        self._flush()

    def receiveMsg_Reconcile(self, msg: m.Reconcile, sender):
        """Which of these jobs of the engine's does this runner neither drive nor know ended?"""
        self.send(msg.reply_to, m.NotRunning(self.jobs.missing(msg.tags)))

    def receiveMsg_Disowned(self, msg: m.Disowned, sender):
        for job in self.jobs.drop(msg.tags):
            metrics.TASKS_IN_FLIGHT.dec(len(job.running))
            self.log.warning("job %s was taken over by another engine; dropping it", job.spec.uuid)
        metrics.JOBS_IN_FLIGHT.set(len(self.jobs))

    def receiveMsg_StopJob(self, msg: m.StopJob, sender):
        self.send(sender, m.Stopping(msg.uuid))
        job = self.jobs.cancel(msg.uuid, msg.tag, self.fx)
        if job is not None:
            self.log.info("cancelled: %d running tasks left to finish", len(job.running), extra={"job": msg.uuid})
            self._flush()

    # --- from the TaskActor -----------------------------------------------

    def receiveMsg_ActivityOutcomes(self, msg: m.ActivityOutcomes, sender):
        for job, task, outcome in self.jobs.outcomes(msg.outcomes, self.fx,
                                                     from_dead_caller=sender != self.task_actor):
            metrics.call_ended(job.spec.process.name, task.started, outcome.duration_ms, outcome.attempts)
        self._flush()

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
        lost = self.jobs.running()
        self.log.warning("TaskActor exited with %d calls in flight; restarting it", sum(len(ns) for _, ns in lost))
        self.task_actor = self.createActor(TaskActor)
        self.send(self.task_actor, m.Setup(self.config, self.peers))
        # Calls that waited for the old one go to the new one with the rest.
        self._to_tasks = Pipe(self, m.CallActivities)
        self._recall_generation += 1
        self.wakeupAfter(RECALL_AFTER, payload=(self._recall_generation, lost))

    def receiveMsg_WakeupMessage(self, msg, sender):
        generation, lost = msg.payload
        if generation != self._recall_generation:
            return  # that TaskActor died too: the later wake-up calls them all
        self.jobs.recall(lost, self.fx)
        self._flush()

    def status(self):
        jobs = self.jobs if self.jobs is not None else Jobs(self.config)
        return {"jobs": len(jobs), "finished": jobs.finished,
                "tasks_running": sum(len(ns) for _, ns in jobs.running()),
                "unacked_writes": len(self.outbox.unacked)}
