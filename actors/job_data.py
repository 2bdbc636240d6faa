"""JobData: the only writer of job state in Redis; applies batched writes, loads the jobs a
restarted runner resumes, and takes newly accepted jobs off the engine's inbox for the scheduler. Its state and rules are
plain Python (cameron/engine_data.py); the actor hands that each message and wake-up."""

from cameron import messages as m
from cameron import store
from cameron.engine_data import FLUSH, EngineData

from actors.base import CameronActor


class JobData(CameronActor):
    role = "job_data"
    LANES = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data = None  # the EngineData, from the first Setup on

    def adopt(self, peers):
        super().adopt(peers)
        if self.peers is peers and self.data is not None:
            self.data.adopt(peers)

    def setup(self, first):
        if first:
            job_store = store.JobStore(store.connect(self.config.effective_redis_url, self.config.redis_timeout),
                                       self.config.engine, retention=self.config.job_retention,
                                       idempotency_ttl=self.config.idempotency_ttl)
            self.data = EngineData(job_store, self.config, send=self.send, after=self.wakeupAfter,
                                   peers=self.peers)
            self.data.start()

    def watched(self):
        fileno = self.data and self.data.fileno()
        return [fileno] if fileno is not None else []

    def receiveMsg_WatchMessage(self, msg, sender):
        self.data.take_new()

    def lanes_watched(self):
        # Write batches wait for the flush COALESCE after the first anyway: while one is due,
        # they stay in their lanes and the flush reads them all (one turn of Thespian's loop
        # per flush, instead of one per batch, two or three per foo job).
        return self.data is None or not self.data.flush_due

    def receiveMsg_WakeupMessage(self, msg, sender):
        if msg.payload == FLUSH and self.lanes is not None:
            self.read_lanes()
        self.data.wake(msg.payload)

    def receiveMsg_TreeReport(self, msg: m.TreeReport, sender):
        self.data.report_health(msg)

    def receiveMsg_LoadUnfinished(self, msg: m.LoadUnfinished, sender):
        self.data.load_unfinished(msg, sender)

    def receiveMsg_WriteBatch(self, msg: m.WriteBatch, sender):
        self.data.write(msg, sender)

    def receiveMsg_NotRunning(self, msg: m.NotRunning, sender):
        self.data.not_running(msg)

    def status(self):
        return self.data.status() if self.data is not None else {}
