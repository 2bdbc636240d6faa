"""JobRunner: holds many jobs (cameron.job) in memory and carries out what they ask for: one
message in, at most one batch of calls to its TaskActor and one write batch to JobData out."""

import datetime

from thespian.actors import ActorExitRequest

from cameron import metrics
from cameron import messages as m
from cameron.job import Effects, Jobs
from cameron.lane import Lane, LaneClosed
from cameron.writes import Outbox

from actors.base import CameronActor, Pipe
from actors.task_actor import TaskActor


#: At most this long between a count and its write to the metric files (datetime.timedelta).
METRICS_EVERY = datetime.timedelta(seconds=0.25)
_METRICS = "metrics"


class JobRunner(CameronActor):
    role = "runner"
    LANES = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.jobs = None  # Jobs, from the first Setup on
        self.task_actor = None
        self.lane = None  # to the TaskActor: calls out, outcomes in (cameron.lane)
        self._lane_open = False  # watched until its end is read
        self.fx = Effects()  # what the message being handled asks for
        self.outbox = Outbox()  # write batches until JobData acknowledges them
        self._job_data = None  # the JobData they were sent to
        self._to_data = Pipe(self, self.outbox.batch)
        self.tally = metrics.Tally()  # counts not yet written (_count)

    def watched(self):
        return [self.lane.fileno()] if self._lane_open else []

    def own_lanes(self):
        return [self.lane] if self.lane is not None else []

    def setup(self, first):
        if first:
            self.jobs = Jobs(self.config)
        if self.task_actor is None:
            self._new_task_actor()
        else:
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

    # --- from the TaskActor, over the lane -------------------------------

    def receiveMsg_WatchMessage(self, msg, sender):
        if self._lane_open:
            self._read_lane()
            self._flush()

    def _read_lane(self):
        try:
            messages = self.lane.receive()
        except LaneClosed:
            self._lane_open = False  # its TaskActor died: ChildActorExited follows, and the recall
            return
        for msg in messages:
            for job, task, outcome in self.jobs.outcomes(msg.outcomes, self.fx):
                self.tally.call_ended(job.spec.process.name, task.started, outcome.duration_ms, outcome.attempts)

    def _flush(self):
        # Calls first: they are the job's critical path, the writes are not. Were this runner
        # to die between the two sends, Redis would still show the parent task running, and
        # resuming would call it (and so its children) again: at-least-once, as ever.
        fx, self.fx = self.fx, Effects()
        self._count(fx.moments)
        if fx.calls:
            try:
                self.lane.send(m.CallActivities(fx.calls))
            except LaneClosed:
                pass  # the TaskActor died: these calls are made again with its others
            self.flush_later()
        if fx.moments:
            self._to_data.put(self.peers.job_data, fx.moments)

    def _count(self, moments):
        """The metrics: written before the moments go when a job ended (a job Redis shows
        ended is counted) or none is left, else within METRICS_EVERY (each write of them costs
        a lock, getpid() and mmap write per metric: once per message was a tenth of a runner)."""
        self.tally.moments(moments)
        if not self.tally.pending():
            return
        if not len(self.jobs) or any(type(op) is m.JobEnded for op in moments):
            self._write_metrics()
        else:
            self.wake_once(METRICS_EVERY, _METRICS)

    def _write_metrics(self):
        self.tally.write()
        metrics.JOBS_IN_FLIGHT.set(len(self.jobs))

    def receiveMsg_WakeupMessage(self, msg, sender):
        if msg.payload == _METRICS:
            self._write_metrics()

    # --- supervision of the TaskActor -------------------------------------

    def children(self):
        return (self.task_actor,) if self.task_actor is not None else ()

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender):
        self.task_actor = None  # shutting down: do not replace it

    def _new_task_actor(self):
        # The lane's other half goes to the TaskActor by inheritance: its process is forked
        # from this one inside createActor.
        self.lane, theirs = Lane.pair()
        self._lane_open = True
        self.task_actor = self.createActor(TaskActor)
        self.send(self.task_actor, m.Setup(self.config, self.peers))
        self.send(self.task_actor, m.Lane(theirs.fileno(), self.lane.fileno()))
        theirs.close()

    def receiveMsg_ChildActorExited(self, msg, sender):
        if self.task_actor is None or msg.childAddress != self.task_actor:
            return
        # The calls it had are lost with it: make them again (at-least-once). Its process is
        # gone, so whatever it wrote is in the lane: those outcomes count, and end their tasks
        # before the recall, which passes over tasks no longer running.
        lost = self.jobs.running()
        if self._lane_open:
            self._read_lane()
        self.lane.close()
        self.log.warning("TaskActor exited with %d calls in flight; restarting it", sum(len(ns) for _, ns in lost))
        self._new_task_actor()
        self.jobs.recall(lost, self.fx)
        self._flush()

    def status(self):
        jobs = self.jobs if self.jobs is not None else Jobs(self.config)
        return {"jobs": len(jobs), "finished": jobs.finished,
                "tasks_running": sum(len(ns) for _, ns in jobs.running()),
                "unacked_writes": len(self.outbox.unacked)}
