"""JobScheduler: hands each accepted job to its JobRunner, and the unfinished ones back after a
restart."""

from cameron import keys
from cameron import messages as m
from cameron.catalog import Process
from cameron import store

from actors.base import CameronActor


class JobScheduler(CameronActor):
    role = "scheduler"
    LANES = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.processes = None  # name -> Process, pushed by the ProcessCatalog
        self.accepted = 0
        self.resumed = 0
        self.waiting = []  # NewJobs come before the catalog

    # --- from the other actors --------------------------------------------

    def receiveMsg_ProcessList(self, msg: m.ProcessList, sender):
        self.processes = {p.name: p for p in msg.processes}
        if msg.reply_to is not None:
            self.send(msg.reply_to, m.ProcessList(msg.processes))
        waiting, self.waiting = self.waiting, []
        for batch in waiting:
            self.receiveMsg_NewJobs(batch, sender)

    def receiveMsg_NewJobs(self, msg: m.NewJobs, sender):
        """Jobs the API accepted: one RunJobs per runner for the whole batch."""
        if self.processes is None:
            self.waiting.append(msg)  # their processes' settings come with the catalog
            return
        runners = self.peers.runners
        batches = [[] for _ in runners]
        for tag, h in msg.jobs:
            if h.get(keys.JOB_STATUS) != keys.SCHEDULED:
                continue  # started already (resumed when the engine booted), or expired
            job = self._spec(tag, h)
            runner = m.runner_slot(job.uuid, len(runners))
            if keys.JOB_CANCEL_REQUESTED in h:
                # Cancelled while it waited: its runner ends it cancelled without a call.
                self.send(runners[runner], m.ResumeJob(job, keys.SCHEDULED, [], cancelled=True))
            else:
                batches[runner].append(job)
        for runner, jobs in zip(runners, batches):
            if jobs:
                self.accepted += len(jobs)
                self.send(runner, m.RunJobs(jobs))

    def _spec(self, tag: str, h: dict) -> m.JobSpec:
        job_uuid = keys.parse_tag(tag)[2]
        name = h.get(keys.JOB_PROCESS, "")
        # The catalog's current settings if the process is still there; else what the job was
        # accepted with.
        process = (self.processes or {}).get(name) or Process(name, h.get(keys.JOB_START_URL, ""))
        return m.JobSpec(process=process, key=h.get(keys.JOB_KEY, ""), data=store.decode_data(h) if keys.JOB_DATA in h else "",
                         requestor=h.get(keys.JOB_REQUESTOR, ""), uuid=job_uuid, tag=tag)

    @staticmethod
    def _runner_of(job_uuid, runners):
        return runners[m.runner_slot(job_uuid, len(runners))]

    # --- recovery ---------------------------------------------------------

    def receiveMsg_Reconcile(self, msg: m.Reconcile, sender):
        """Each runner checks the jobs of its slot, and answers JobData."""
        runners = self.peers.runners
        slots = [[] for _ in runners]
        for tag in msg.tags:
            slots[m.runner_slot(keys.parse_tag(tag)[2], len(runners))].append(tag)
        for runner, tags in zip(runners, slots):
            if tags:
                self.send(runner, m.Reconcile(tags, sender))

    def receiveMsg_Recover(self, msg: m.Recover, sender):
        self.adopt(msg.peers)
        self.send(msg.peers.job_data, m.LoadUnfinished(msg.runner, msg.peers.runners))

    def receiveMsg_UnfinishedJobs(self, msg: m.UnfinishedJobs, sender):
        for tag, h in msg.jobs:
            if h.get(keys.JOB_STATUS) in keys.FINAL_STATES:
                continue  # ended, and handed out again only because that was not yet known
            job = self._spec(tag, h)
            self.send(self._runner_of(job.uuid, msg.runners),
                      m.ResumeJob(job, h.get(keys.JOB_STATUS, ""), store.tasks_of(h),
                                  cancelled=keys.JOB_CANCEL_REQUESTED in h))
            self.resumed += 1
        if msg.jobs:
            self.log.warning("resuming %d unfinished jobs", len(msg.jobs))

    def status(self):
        return {"accepted": self.accepted, "resumed": self.resumed,
                "processes": None if self.processes is None else len(self.processes)}
