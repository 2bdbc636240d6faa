"""This engine's side of the jobs in Redis, in plain Python: the inbox taken, the runners' writes
applied, the lease renewed, dead engines' jobs taken over, Redis's stalls waited out. The JobData
actor hands it each message and carries out its sends and wake-ups."""

import datetime
import logging
import time
import uuid

import redis

from cameron import keys
from cameron import messages as m
from cameron import store
from cameron.config import Config
from cameron.lease import LeaseWatch
from cameron.writes import Backlog, InOrder

#: How soon writes that failed (Redis down) are tried again, in order.
RETRY_AFTER = datetime.timedelta(seconds=0.5)
#: How long write batches gather before they go to Redis together, and at most how many go in
#: one MULTI/EXEC: a round trip per batch made Redis I/O most of this actor's time. Writes are
#: off the jobs' critical path (a runner calls the next activities without waiting for them).
COALESCE = datetime.timedelta(milliseconds=3)
MAX_COALESCED = 200
#: How often runners hear which of their write batches are in Redis (one message for many).
ACK_EVERY = datetime.timedelta(seconds=0.1)
#: How often expired jobs are taken out of the listing indexes (when a retention is set).
PRUNE_EVERY = datetime.timedelta(seconds=60)
#: How often the inbox is looked at even without a wake-up from pub/sub (which a Redis
#: restart, or a JobData restart, can miss).
INBOX_EVERY = datetime.timedelta(seconds=1)
#: Jobs taken off the inbox per round trip (and per message to the scheduler).
INBOX_BATCH = 500
#: Wake-up payloads: the write retry, the lease's renewal, the acknowledgements, the pruning,
#: the inbox, the check that the runners drive every job the engine owns.
RETRY, LEASE, ACK, PRUNE, INBOX, FLUSH, RECONCILE = ("retry", "lease", "ack", "prune", "inbox", "flush",
                                                     "reconcile")

log = logging.getLogger("cameron.job_data")


class EngineData:
    """The one writer of this engine's jobs. `send(to, message)` sends a message to an actor;
    `after(timedelta, payload=...)` asks for `wake(payload)` that much later."""

    def __init__(self, job_store: store.JobStore, config: Config, *, send, after, peers=None):
        self.store, self.config, self.send, self.after = job_store, config, send, after
        self.peers = peers or m.Peers()
        self.backlog = Backlog(uuid.uuid4().hex[:12], MAX_COALESCED)  # write batches not yet in Redis
        self.loads = []  # (LoadUnfinished, sender) waiting for the backlog: reads must see it
        self.retrying = False
        self.flush_due = False
        self.lease = None  # None before the first renewal, then whether it was renewed in time
        self.disowned = set()  # tags of jobs other engines took over while we were away
        self.order = InOrder()  # of the runners' write batches, by str(runner address)
        self.inbox = None  # the store.Wakeups that say the inbox has new jobs
        self.taken = 0
        self.handed = []  # tags taken off the inbox and handed out, to acknowledge at the next take
        self.watch = None  # the LeaseWatch of the other engines' leases
        self.stalled = None  # why Redis did not answer the last call, until one is answered

    def start(self) -> None:
        """The lease, the inbox's first look, and the wake-ups that keep them going."""
        self.renew_lease()
        self.take_new()
        self.after(INBOX_EVERY, payload=INBOX)
        self.after(datetime.timedelta(seconds=self.config.reconcile_every), payload=RECONCILE)
        if self.config.job_retention:
            self.after(datetime.timedelta(seconds=1), payload=PRUNE)

    def adopt(self, peers: m.Peers) -> None:
        """The Supervisor's new addresses: the runners it replaced write no more."""
        self.order.replace({str(r) for r in self.peers.runners} - {str(r) for r in peers.runners})
        self.peers = peers

    def wake(self, payload) -> None:
        if payload == LEASE:
            self.renew_lease()
            return
        if payload == ACK:
            for writer, seq in self.backlog.acks:
                self.send(writer, m.Written(seq))
            self.backlog.acks = []
            return
        if payload == PRUNE:
            self._prune()
            return
        if payload == INBOX:
            self.take_new()
            self.after(INBOX_EVERY, payload=INBOX)
            return
        if payload == RECONCILE:
            self._reconcile()
            self.after(datetime.timedelta(seconds=self.config.reconcile_every), payload=RECONCILE)
            return
        if payload == FLUSH:
            self.flush_due = False
        else:
            self.retrying = False
            if self.stalled:
                self.take_new(probe=True)  # the inbox must be looked at anyway: the probe
                if self.stalled:
                    return
                log.warning("Redis answers again")
                self._renew()
        self.flush()

    # --- new jobs: the API stores them and pushes them on the inbox -----------

    def fileno(self) -> int | None:
        """The socket that becomes readable when the inbox has new jobs, once subscribed."""
        return self.inbox and self.inbox.fileno()

    def take_new(self, probe=False) -> None:
        """Hand every job on the inbox to the scheduler, in batches. A take moves jobs to the
        engine's taking list, where they stay until the next take acknowledges them: one whose
        reply is lost (Redis stalled past the timeout) loses nothing, the next take returns
        them again. While Redis does not answer, only the look that probes it takes. A start
        wakes JobData only when its job lands in an empty inbox, so every look takes until the
        inbox is empty."""
        if self.stalled and not probe:
            return
        try:
            if self.inbox is None:
                self.inbox = store.Wakeups(self.store.redis, keys.engine_inbox(self.config.engine))
            self.inbox.drain()
            while True:
                jobs = self.store.take_new(INBOX_BATCH, self.handed)
                self.stalled = None
                self.handed = [tag for tag, _ in jobs]
                if jobs:
                    self.taken += len(jobs)
                    self.send(self.peers.scheduler, m.NewJobs(jobs))
                if len(jobs) < INBOX_BATCH:
                    return
        except (redis.RedisError, OSError) as e:
            # Subscribe again on the next look: the connection may be gone for good.
            log.warning("inbox not read: %s", e)
            self._stalled(e)
            if self.inbox is not None:
                self.inbox.close()
                self.inbox = None

    def _stalled(self, error):
        """Redis did not answer: until a probe (a look at the inbox, every redis_timeout, or a
        quarter lease if that is less) gets an answer, nothing else asks it. Every call into a
        stalled Redis blocks this actor for redis_timeout; one after the other, they would
        leave it no time to answer reads, pings or runners, nor to send its own messages. The
        probe renews the lease as soon as Redis answers, well within the lease others give."""
        if not isinstance(error, (redis.ConnectionError, redis.TimeoutError, OSError)):
            return
        self.stalled = str(error) or type(error).__name__
        if not self.retrying:
            self.retrying = True
            every = min(self.config.redis_timeout, self.config.lease_ttl / 4)
            self.after(datetime.timedelta(seconds=max(0.1, every)), payload=RETRY)

    def report_health(self, msg: m.TreeReport) -> None:
        """Refresh the engine's health record; while Redis stalls it ages and expires, which
        is what it should then say."""
        if self.stalled:
            return
        try:
            self.store.report_health(msg, self.backlog.progress)
        except redis.RedisError as e:
            self._stalled(e)

    def load_unfinished(self, msg: m.LoadUnfinished, sender) -> None:
        self.loads.append((msg, sender))
        self.flush()

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

    def write(self, msg: m.WriteBatch, sender) -> None:
        ready = self.order.arrived(str(sender), msg)
        if ready is None:
            log.warning("dropped a write batch of a replaced runner (%d moments)", len(msg.ops))
            return
        for batch in ready:
            self.backlog.add(batch.ops, batch.seq, sender)
        if not self.flush_due and not self.retrying:
            self.flush_due = True
            self.after(COALESCE, payload=FLUSH)

    # --- reconciliation: every job the engine owns is driven -----------------------------

    def _reconcile(self):
        """Ask the runners, through the scheduler, which of the jobs this engine owns and has
        handed out they do not drive: whatever lost a job on its way (a reply or a message
        that never came), it is handed out again within reconcile_every."""
        if self.stalled:
            return
        try:
            tags = self.store.handed_out()
        except redis.RedisError as e:
            log.warning("jobs not reconciled: %s", e)
            return
        # Jobs whose end waits in the backlog are no longer driven, and must not be.
        tags -= self.backlog.ending()
        if tags and self.peers.scheduler is not None:
            self.send(self.peers.scheduler, m.Reconcile(sorted(tags)))

    def not_running(self, msg: m.NotRunning) -> None:
        if not msg.tags or self.stalled:
            return  # the next round finds them again
        try:
            found = self.store.hashes(msg.tags)
        except redis.RedisError as e:
            log.warning("jobs not reconciled: %s", e)
            return  # the next round finds them again
        found = [(tag, h) for tag, h in found if h.get(keys.JOB_STATUS) not in keys.FINAL_STATES]
        if found:
            log.warning("%d jobs of this engine were driven by no runner; handing them out again",
                        len(found))
            self.send(self.peers.scheduler, m.UnfinishedJobs(found, self.peers.runners))

    def _prune(self):
        if self.stalled:
            self.after(PRUNE_EVERY, payload=PRUNE)
            return
        try:
            while self.store.prune_expired() == store.PRUNE_BATCH:
                pass
        except redis.RedisError as e:
            log.warning("expired jobs not pruned from the indexes: %s", e)
        self.after(PRUNE_EVERY, payload=PRUNE)

    def flush(self) -> None:
        """Everything in the backlog to Redis (see writes.Backlog), then the reads that waited
        for it; while Redis does not answer, again every RETRY_AFTER."""
        if self.stalled:
            return  # the probe flushes once Redis answers
        acked = bool(self.backlog.acks)
        try:
            self.backlog.flush(self.store, self._still_ours if self.fenced else None)
        except redis.RedisError as e:
            self._retry_later(e)
        else:
            self.stalled = None
            self._serve_loads()
        if self.backlog.acks and not acked:
            self.after(ACK_EVERY, payload=ACK)

    # --- the lease: one engine per job --------------------------------------

    def renew_lease(self) -> None:
        """Renew this engine's lease, then take over the jobs of engines that stopped renewing
        theirs. An engine is dead when its lease's value stays the same while this one watches
        it, with Redis answering, for a whole lease_ttl: a Redis stall makes every lease expire
        at once, and must not make the engines take each other's jobs."""
        self.after(datetime.timedelta(seconds=self.config.lease_ttl / 4), payload=LEASE)
        if not self.stalled:  # else nothing can be renewed: the probe renews once Redis answers
            self._renew()

    @property
    def fenced(self) -> bool:
        """The lease lapsed once: every write checks that its job is still ours."""
        return self.watch is not None and self.watch.fenced

    def _renew(self):
        if self.watch is None:
            self.watch = LeaseWatch(self.config.lease_ttl)
        began = time.monotonic()
        try:
            held, others = self.store.renew_lease(self.config.lease_ttl)
        except redis.RedisError as e:
            log.warning("lease not renewed: %s", e)
            self._stalled(e)
            return
        self.stalled = None
        fenced = self.fenced
        dead = self.watch.renewal(began, time.monotonic(), held, others)
        if self.fenced and not fenced:
            log.error("this engine's lease may have lapsed (Redis out of reach or stalled, or "
                      "the engine stalled); from now on every write checks that its job is "
                      "still ours")
        self.lease = True
        try:
            adopting = self.store.claim_orphans(dead)
            found = self.store.hashes(adopting) if adopting else []
        except redis.RedisError as e:
            log.warning("jobs of dead engines not taken over yet: %s", e)
            self._stalled(e)
            return
        if found:
            log.warning("took over %d unfinished jobs of engines whose lease expired", len(found))
            self.send(self.peers.scheduler, m.UnfinishedJobs(found, self.peers.runners))
        if adopting:
            try:
                self.store.adopted(adopting)  # if this is lost, the next renewal hands them again
            except redis.RedisError as e:
                log.warning("jobs taken over not acknowledged yet: %s", e)

    def _still_ours(self, ops, writer):
        """Drop the writes of jobs another engine took over, and tell their runner to let go."""
        tags = list({op.tag for op in ops} - self.disowned)
        if tags:
            lost = {t for t, mine in zip(tags, self.store.redis.smismember(self.store.owned, tags))
                    if not mine}
            self.disowned |= lost
        kept = [op for op in ops if op.tag not in self.disowned]
        gone = sorted({op.tag for op in ops} & self.disowned)
        if gone:
            self.send(writer, m.Disowned(gone))
        return kept

    def _retry_later(self, error):
        if not self.retrying:
            log.warning("%d write batches wait for Redis: %s", len(self.backlog), error)
        self._stalled(error)
        if not self.retrying:
            self.retrying = True
            self.after(RETRY_AFTER, payload=RETRY)

    def status(self) -> dict:
        return {"writes": self.backlog.written, "jobs_taken": self.taken, "backlog": len(self.backlog),
                "lease": self.lease, "fenced": self.fenced, "redis_stalled": self.stalled,
                "retrying": self.retrying,
                "disowned": len(self.disowned),
                "out_of_order": self.order.waiting()}
