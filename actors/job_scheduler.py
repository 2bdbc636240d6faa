"""JobScheduler: accepts new jobs, has JobData store them, then hands each to a JobRunner."""

import hashlib
import json
import uuid

from cameron import keys
from cameron import messages as m
from cameron.catalog import Process
from cameron import store

from actors.base import CameronActor


class JobScheduler(CameronActor):
    role = "scheduler"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.processes = None  # name -> Process, pushed by the ProcessCatalog
        self.accepted = 0
        self.resumed = 0

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
                        scheduled_time=store.now())
        # The 201 waits for JobStored: an accepted job is always already in Redis.
        self.send(self.peers.job_data, m.CreateJob(job, sender, msg.idempotency_key,
                                                   _fingerprint(msg) if msg.idempotency_key else ""))

    def receiveMsg_CancelJob(self, msg: m.CancelJob, sender):
        if self.peers.job_data is None:
            self.send(sender, m.Unavailable("the engine is starting; try again"))
            return
        # Recorded in Redis first: a runner that restarts reads it back with the job.
        self.send(self.peers.job_data, m.RecordCancel(msg.process, msg.key, msg.uuid, sender))

    # --- from the other actors --------------------------------------------

    def receiveMsg_ProcessList(self, msg: m.ProcessList, sender):
        self.processes = {p.name: p for p in msg.processes}
        if msg.reply_to is not None:
            self.send(msg.reply_to, m.ProcessList(msg.processes))

    def receiveMsg_JobStored(self, msg: m.JobStored, sender):
        self.accepted += 1
        self.send(msg.reply_to, m.JobAccepted(msg.job))
        self.send(self._runner_of(msg.job.uuid, self.peers.runners), m.RunJob(msg.job))

    def receiveMsg_CancelRecorded(self, msg: m.CancelRecorded, sender):
        self.log.info("cancel requested", extra={"job": msg.uuid})
        self.send(self._runner_of(msg.uuid, self.peers.runners), m.StopJob(msg.uuid, msg.tag))
        self.send(msg.reply_to, m.CancelAccepted(msg.status, msg.requested))

    @staticmethod
    def _runner_of(job_uuid, runners):
        return runners[m.runner_slot(job_uuid, len(runners))]

    # --- recovery ---------------------------------------------------------

    def receiveMsg_Recover(self, msg: m.Recover, sender):
        self.adopt(msg.peers)
        self.send(msg.peers.job_data, m.LoadUnfinished(msg.runner, msg.peers.runners))

    def receiveMsg_UnfinishedJobs(self, msg: m.UnfinishedJobs, sender):
        for tag, h in msg.jobs:
            job_uuid = tag.rsplit(":", 1)[1]
            name = h.get(keys.JOB_PROCESS, "")
            # The catalog's current settings if the process is still there; else what the job
            # was accepted with.
            process = (self.processes or {}).get(name) or Process(name, h.get(keys.JOB_START_URL, ""))
            job = m.JobSpec(process=process, key=h.get(keys.JOB_KEY, ""), data=h.get(keys.JOB_DATA, ""),
                            requestor=h.get(keys.JOB_REQUESTOR, ""), uuid=job_uuid, tag=tag,
                            scheduled_time=h.get(keys.job_time(keys.SCHEDULED), ""))
            self.send(self._runner_of(job_uuid, msg.runners),
                      m.ResumeJob(job, h.get(keys.JOB_STATUS, ""), store.tasks_of(h),
                                  cancelled=keys.JOB_CANCEL_REQUESTED in h))
            self.resumed += 1
        if msg.jobs:
            self.log.warning("resuming %d unfinished jobs", len(msg.jobs))

    def receiveMsg_StoreFailed(self, msg: m.StoreFailed, sender):
        self.send(msg.reply_to, m.Unavailable(f"job store unavailable: {msg.reason}"))

    def status(self):
        return {"accepted": self.accepted, "resumed": self.resumed,
                "processes": None if self.processes is None else len(self.processes)}


def _fingerprint(msg: m.StartJob) -> str:
    """What a start asked for: the same Idempotency-Key with another request is refused."""
    request = [msg.process, msg.key, msg.data, msg.requestor]
    return hashlib.sha256(json.dumps(request).encode()).hexdigest()
