"""JobData: the only writer of job state in Redis; applies batched writes and serves reads."""

import datetime

import redis

from cameron import messages as m
from cameron import store

from actors.base import CameronActor

#: How soon writes that failed (Redis down) are tried again, in order.
RETRY_AFTER = datetime.timedelta(seconds=0.5)


class JobData(CameronActor):
    role = "job_data"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.store = None
        self.backlog = []  # write batches not yet in Redis, oldest first
        self.loads = []  # (LoadUnfinished, sender) waiting for the backlog: reads must see it
        self.retrying = False
        self.written = 0

    def setup(self, first):
        if first:
            self.store = store.JobStore(store.connect(self.config.effective_redis_url))

    # --- client API -------------------------------------------------------

    def receiveMsg_GetJob(self, msg: m.GetJob, sender):
        try:
            doc = self.store.get(msg.process, msg.key, msg.uuid)
        except redis.RedisError as e:
            self.send(sender, m.Unavailable(f"job store unavailable: {e}"))
            return
        self.send(sender, m.JobDocument(doc) if doc is not None else m.JobNotFound())

    def receiveMsg_CreateJob(self, msg: m.CreateJob, sender):
        try:
            self.store.create(msg.job)
        except redis.RedisError as e:
            self.log.warning("job %s not accepted: %s", msg.job.uuid, e)
            self.send(sender, m.StoreFailed(msg.job, msg.reply_to, str(e)))
            return
        self.send(sender, m.JobStored(msg.job, msg.reply_to))

    def receiveMsg_LoadUnfinished(self, msg: m.LoadUnfinished, sender):
        self.loads.append((msg, sender))
        self._flush()

    def _serve_loads(self):
        while self.loads:
            msg, sender = self.loads[0]
            try:
                found = self.store.unfinished(msg.runner, len(msg.runners))
            except redis.RedisError as e:
                self._retry_later(e)
                return
            self.loads.pop(0)
            self.send(sender, m.UnfinishedJobs(found, msg.runners))

    # --- from the runners -------------------------------------------------

    def receiveMsg_WriteBatch(self, msg: m.WriteBatch, sender):
        self.backlog.append(msg.ops)
        self._flush()

    def receiveMsg_WakeupMessage(self, msg, sender):
        self.retrying = False
        self._flush()

    def _flush(self):
        while self.backlog:
            try:
                self.store.apply(self.backlog[0])
            except redis.RedisError as e:
                self._retry_later(e)
                return
            self.written += len(self.backlog.pop(0))
        self._serve_loads()

    def _retry_later(self, error):
        if not self.retrying:
            self.log.warning("%d write batches wait for Redis: %s", len(self.backlog), error)
            self.retrying = True
            self.wakeupAfter(RETRY_AFTER)

    def status(self):
        return {"writes": self.written, "backlog": len(self.backlog)}
