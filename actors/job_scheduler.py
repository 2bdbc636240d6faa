"""JobScheduler: accepts new jobs, has JobData store them, then hands each to a JobRunner."""

import itertools
import uuid

from cameron import keys
from cameron import messages as m
from cameron.store import now

from actors.base import CameronActor


class JobScheduler(CameronActor):
    role = "scheduler"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.processes = None  # name -> Process, pushed by the ProcessCatalog
        self.next_runner = itertools.count()
        self.accepted = 0

    # --- client API -------------------------------------------------------

    def receiveMsg_StartJob(self, msg: m.StartJob, sender):
        if self.processes is None or self.peers.job_data is None:
            self.send(sender, m.Unavailable("the engine is starting; try again"))
            return
        process = self.processes.get(msg.process)
        if process is None:
            self.send(sender, m.UnknownProcess(msg.process))
            return
        job_id = uuid.uuid4().hex
        job = m.JobSpec(process=process, key=msg.key, data=msg.data, requestor=msg.requestor,
                        uuid=job_id, tag=keys.job_tag(process.name, msg.key, job_id),
                        scheduled_time=now())
        # The 201 waits for JobStored: an accepted job is always already in Redis.
        self.send(self.peers.job_data, m.CreateJob(job, sender))

    # --- from the other actors --------------------------------------------

    def receiveMsg_ProcessList(self, msg: m.ProcessList, sender):
        self.processes = {p.name: p for p in msg.processes}

    def receiveMsg_JobStored(self, msg: m.JobStored, sender):
        self.accepted += 1
        self.send(msg.reply_to, m.JobAccepted(msg.job))
        runners = self.peers.runners
        self.send(runners[next(self.next_runner) % len(runners)], m.RunJob(msg.job))

    def receiveMsg_StoreFailed(self, msg: m.StoreFailed, sender):
        self.send(msg.reply_to, m.Unavailable(f"job store unavailable: {msg.reason}"))

    def status(self):
        return {"accepted": self.accepted,
                "processes": None if self.processes is None else len(self.processes)}
