"""JobData: the only writer of job state in Redis; applies batched writes and serves reads."""

import datetime

import redis

from cameron import keys
from cameron import messages as m
from cameron import store

from actors.base import CameronActor

#: How soon writes that failed (Redis down) are tried again, in order.
RETRY_AFTER = datetime.timedelta(seconds=0.5)
#: How often expired jobs are taken out of the listing indexes (when a retention is set).
PRUNE_EVERY = datetime.timedelta(seconds=60)


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
            self.store = store.JobStore(store.connect(self.config.effective_redis_url),
                                        retention=self.config.job_retention,
                                        idempotency_ttl=self.config.idempotency_ttl)
            if self.config.job_retention:
                self.wakeupAfter(datetime.timedelta(seconds=1), payload="prune")

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
            known = self.store.create(msg.job, msg.idempotency_key, msg.fingerprint)
        except store.IdempotencyConflict:
            self.send(msg.reply_to, m.IdempotencyConflict(msg.idempotency_key))
            return
        except redis.RedisError as e:
            self.log.warning("job not accepted: %s", e, extra={"job": msg.job.uuid})
            self.send(sender, m.StoreFailed(msg.job, msg.reply_to, str(e)))
            return
        if known is not None:
            tag, status = known
            self.send(msg.reply_to, m.SameJob(*keys.parse_tag(tag), status))
            return
        self.send(sender, m.JobStored(msg.job, msg.reply_to))

    def receiveMsg_FindJob(self, msg: m.FindJob, sender):
        self._read(sender, lambda: self.store.find(msg.uuid),
                   lambda doc: m.JobDocument(doc) if doc is not None else m.JobNotFound())

    def receiveMsg_ListJobs(self, msg: m.ListJobs, sender):
        self._read(sender, lambda: self.store.list_jobs(msg.process, key=msg.key, state=msg.state,
                                                        limit=msg.limit, cursor=msg.cursor),
                   lambda found: m.JobList(*found))

    def receiveMsg_RecordCancel(self, msg: m.RecordCancel, sender):
        try:
            found = self.store.request_cancel(msg.process, msg.key, msg.uuid)
        except redis.RedisError as e:
            self.send(msg.reply_to, m.Unavailable(f"job store unavailable: {e}"))
            return
        if found is None:
            self.send(msg.reply_to, m.JobNotFound())
        elif found[1] is None:
            self.send(msg.reply_to, m.JobFinished(found[0]))
        else:
            self.send(sender, m.CancelRecorded(msg.uuid, keys.job_tag(msg.process, msg.key, msg.uuid),
                                               found[0], found[1], msg.reply_to))

    def _read(self, sender, read, answer):
        try:
            found = read()
        except redis.RedisError as e:
            self.send(sender, m.Unavailable(f"job store unavailable: {e}"))
            return
        self.send(sender, answer(found))

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
        if msg.payload == "prune":
            self._prune()
            return
        self.retrying = False
        self._flush()

    def _prune(self):
        try:
            while self.store.prune_expired() == store.PRUNE_BATCH:
                pass
        except redis.RedisError as e:
            self.log.warning("expired jobs not pruned from the indexes: %s", e)
        self.wakeupAfter(PRUNE_EVERY, payload="prune")

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
