"""JobData against a real Redis, outside an actor system: what it does when Redis runs a
command but its reply never comes back."""

import redis
from thespian.actors import WakeupMessage

from actors.job_data import JobData, RETRY
from cameron import keys, store
from cameron import messages as m
from cameron.config import Config
from cameron.lease import LeaseWatch
from test_store import create, new_job




class ReplyLost(store.JobStore):
    """A job store whose next write is applied by Redis but answered by a timeout."""

    lose = False

    def apply(self, ops, token=""):
        super().apply(ops, token)
        if self.lose:
            self.lose = False
            raise redis.TimeoutError("Timeout reading from socket")


def job_data(client) -> JobData:
    actor = JobData()
    actor.sent, actor.wakeups = [], []
    actor.send = lambda addr, msg: actor.sent.append((addr, msg))
    actor.wakeupAfter = lambda delay, payload=None: actor.wakeups.append(payload)
    actor.config = Config(redis_timeout=0.5)
    actor.store = ReplyLost(client, "me:1")
    return actor


def watching(redis_url, monkeypatch):
    """An emptied Redis, a clock the test moves, this engine's JobData (lease 1 s) and another
    engine's store: (client, clock, actor, other)."""
    client = store.connect(redis_url)
    client.flushdb()
    clock = [0.0]
    monkeypatch.setattr("actors.job_data.time.monotonic", lambda: clock[0])
    actor = job_data(client)
    actor.config = Config(redis_timeout=0.5, lease_ttl=1.0)
    return client, clock, actor, store.JobStore(client, "other:2")


def test_a_write_whose_reply_was_lost_is_known_applied_and_disowns_nothing(redis_url):
    client = store.connect(redis_url)
    client.flushdb()  # our own throwaway server
    actor = job_data(client)
    job = new_job(key="k")
    create(actor.store, job)
    # Given an engine whose lease lapsed once (every write checks its jobs are still its own)
    actor.watch = LeaseWatch(1.0)
    actor.watch.fenced = True
    # When a runner's batch that ends a job is written, Redis applies it, and the reply is lost
    actor.store.lose = True
    actor.receiveMsg_WriteBatch(m.WriteBatch([m.JobStarted(job.tag, store.now()),
                                              m.JobEnded(job.tag, store.now(), 0, (), status="done")],
                                             1, 0), "runner-1")
    actor._flush()
    assert actor.backlog and actor.stalled  # not acknowledged: Redis did not answer
    assert client.hget(job.tag, "job.status.current") == "done"  # ... yet it ran it
    # Then once Redis answers again, the write is known applied: acknowledged, not written
    # again, and the job (no longer in the engine's set: it ended) is not counted as taken away
    actor.receiveMsg_WakeupMessage(WakeupMessage(None, RETRY), None)
    assert actor.stalled is None and len(actor.backlog) == 0
    assert actor.disowned == set()
    assert not [msg for _, msg in actor.sent if isinstance(msg, m.Disowned)]
    assert actor.backlog.acks == [["runner-1", 1]]
    client.close()


def test_an_engine_is_dead_only_when_its_lease_stood_still_for_a_whole_lease_while_redis_answered(
        redis_url, monkeypatch):
    client, clock, actor, other = watching(redis_url, monkeypatch)
    theirs = new_job(key="k")
    create(other, theirs)
    other.renew_lease(60)  # its value stays: the other engine renews no more

    def renew_at(t):
        clock[0] = t
        actor._renew_lease()
        return [msg for _, msg in actor.sent if isinstance(msg, m.UnfinishedJobs)]

    # Given renewals every quarter lease, then a gap of 2 s (Redis, or this engine, stood
    # still: the other could not renew either), then renewals again
    for t in (0.0, 0.25, 0.5):
        assert renew_at(t) == []
    # When the other's lease is watched for less than a lease across the gap
    for t in (2.5, 2.75, 3.0, 3.25):
        assert renew_at(t) == []
    # ... nothing is taken; once it has stood still for a whole lease of answers, its job is
    assert renew_at(3.5) and client.sismember(keys.engine_jobs("me:1"), theirs.tag)
    assert not client.exists(keys.engine_jobs("other:2"))
    # ... and the lapse of our own lease across the gap made every write check its job
    assert actor.fenced is True
    client.close()


def test_a_lease_that_changes_is_never_taken(redis_url, monkeypatch):
    client, clock, actor, other = watching(redis_url, monkeypatch)
    for i in range(12):
        other.renew_lease(60)
        clock[0] = i * 0.25
        actor._renew_lease()
    assert not [msg for _, msg in actor.sent if isinstance(msg, m.UnfinishedJobs)]
    assert client.sismember(keys.ENGINES, "other:2") and actor.fenced is False
    client.close()


def test_a_replaced_runners_late_batches_are_dropped_and_its_successors_taken(redis_url):
    client = store.connect(redis_url)
    client.flushdb()  # our own throwaway server
    actor = job_data(client)
    job = new_job(key="k")
    create(actor.store, job)
    actor.adopt(m.Peers(runners=["runner-1", "runner-2"], generation=1))
    # When the Supervisor replaces runner-1, then a batch it sent before it died comes in
    actor.adopt(m.Peers(runners=["runner-1b", "runner-2"], generation=2))
    actor.receiveMsg_WriteBatch(m.WriteBatch([m.JobStarted(job.tag, store.now())], 1, 0), "runner-1")
    # Then it changes nothing (the new runner resumes from what Redis holds), while the
    # batches of its successor and of the runner that lives on are written
    assert len(actor.backlog) == 0
    actor.receiveMsg_WriteBatch(m.WriteBatch([m.JobStarted(job.tag, store.now())], 1, 0), "runner-1b")
    actor.receiveMsg_WriteBatch(m.WriteBatch([], 1, 0), "runner-2")
    actor._flush()
    assert client.hget(job.tag, "job.status.current") == "running"
    assert actor.backlog.acks == [["runner-1b", 1], ["runner-2", 1]]
    client.close()
