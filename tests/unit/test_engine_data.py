"""JobData's state and rules (EngineData) against a real Redis, outside an actor system: what
it does when Redis runs a command but its reply never comes back, or answers nothing at all."""

import redis

from cameron import keys, store
from cameron import messages as m
from cameron.config import Config
from cameron.engine_data import FLUSH, LEASE, PRUNE, RECONCILE, RETRY, EngineData
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


class Unanswered:
    """A real job store in front of which every call is recorded and, while `down`, answered
    by a timeout, as a stalled Redis answers."""

    def __init__(self, jobs: store.JobStore):
        self.jobs, self.down, self.calls = jobs, False, []

    def __getattr__(self, name):
        value = getattr(self.jobs, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            self.calls.append(name)
            if self.down:
                raise redis.TimeoutError("Timeout reading from socket")
            return value(*args, **kwargs)
        return call


def engine_data(jobs, **settings) -> EngineData:
    """This engine's EngineData on `jobs`; what it sends and the wake-ups it asks for are kept
    in its `sent` and `wakeups`."""
    sent, wakeups = [], []
    data = EngineData(jobs, Config(redis_timeout=0.5, **settings), send=lambda to, msg: sent.append((to, msg)),
                      after=lambda delay, payload=None: wakeups.append(payload))
    data.sent, data.wakeups = sent, wakeups
    return data


def emptied(redis_url):
    client = store.connect(redis_url)
    client.flushdb()  # our own throwaway server
    return client


def watching(redis_url, monkeypatch):
    """An emptied Redis, a clock the test moves, this engine's EngineData (lease 1 s) and
    another engine's store: (client, clock, data, other)."""
    client = emptied(redis_url)
    clock = [0.0]
    monkeypatch.setattr("cameron.engine_data.time.monotonic", lambda: clock[0])
    data = engine_data(ReplyLost(client, "me:1"), lease_ttl=1.0)
    return client, clock, data, store.JobStore(client, "other:2")


def test_a_write_whose_reply_was_lost_is_known_applied_and_disowns_nothing(redis_url):
    client = emptied(redis_url)
    data = engine_data(ReplyLost(client, "me:1"))
    job = new_job(key="k")
    create(data.store, job)
    # Given an engine whose lease lapsed once (every write checks its jobs are still its own)
    data.watch = LeaseWatch(1.0)
    data.watch.fenced = True
    # When a runner's batch that ends a job is written, Redis applies it, and the reply is lost
    data.store.lose = True
    data.write(m.WriteBatch([m.JobStarted(job.tag, store.now()),
                             m.JobEnded(job.tag, store.now(), 0, (), status="done")], 1, 0), "runner-1")
    data.flush()
    assert data.backlog and data.stalled  # not acknowledged: Redis did not answer
    assert client.hget(job.tag, "job.status.current") == "done"  # ... yet it ran it
    # Then once Redis answers again, the write is known applied: acknowledged, not written
    # again, and the job (no longer in the engine's set: it ended) is not counted as taken away
    data.wake(RETRY)
    assert data.stalled is None and len(data.backlog) == 0
    assert data.disowned == set()
    assert not [msg for _, msg in data.sent if isinstance(msg, m.Disowned)]
    assert data.backlog.acks == [["runner-1", 1]]
    client.close()


def test_an_engine_is_dead_only_when_its_lease_stood_still_for_a_whole_lease_while_redis_answered(
        redis_url, monkeypatch):
    client, clock, data, other = watching(redis_url, monkeypatch)
    theirs = new_job(key="k")
    create(other, theirs)
    other.renew_lease(60)  # its value stays: the other engine renews no more

    def renew_at(t):
        clock[0] = t
        data.renew_lease()
        return [msg for _, msg in data.sent if isinstance(msg, m.UnfinishedJobs)]

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
    assert data.fenced is True
    client.close()


def test_a_lease_that_changes_is_never_taken(redis_url, monkeypatch):
    client, clock, data, other = watching(redis_url, monkeypatch)
    for i in range(12):
        other.renew_lease(60)
        clock[0] = i * 0.25
        data.renew_lease()
    assert not [msg for _, msg in data.sent if isinstance(msg, m.UnfinishedJobs)]
    assert client.sismember(keys.ENGINES, "other:2") and data.fenced is False
    client.close()


def test_a_replaced_runners_late_batches_are_dropped_and_its_successors_taken(redis_url):
    client = emptied(redis_url)
    data = engine_data(ReplyLost(client, "me:1"))
    job = new_job(key="k")
    create(data.store, job)
    data.adopt(m.Peers(runners=["runner-1", "runner-2"], generation=1))
    # When the Supervisor replaces runner-1, then a batch it sent before it died comes in
    data.adopt(m.Peers(runners=["runner-1b", "runner-2"], generation=2))
    data.write(m.WriteBatch([m.JobStarted(job.tag, store.now())], 1, 0), "runner-1")
    # Then it changes nothing (the new runner resumes from what Redis holds), while the
    # batches of its successor and of the runner that lives on are written
    assert len(data.backlog) == 0
    data.write(m.WriteBatch([m.JobStarted(job.tag, store.now())], 1, 0), "runner-1b")
    data.write(m.WriteBatch([], 1, 0), "runner-2")
    data.flush()
    assert client.hget(job.tag, "job.status.current") == "running"
    assert data.backlog.acks == [["runner-1b", 1], ["runner-2", 1]]
    client.close()


def test_while_redis_stalls_nothing_but_the_probe_asks_it(redis_url):
    client = emptied(redis_url)
    jobs = Unanswered(store.JobStore(client, "me:1"))
    data = engine_data(jobs)
    data.adopt(m.Peers(scheduler="scheduler", runners=["runner-1"], generation=1))
    job = new_job(key="k")
    create(jobs.jobs, job)
    # Given a look at the inbox that Redis did not answer
    jobs.down = True
    data.take_new()
    assert data.stalled and data.wakeups == [RETRY]
    # When everything that would ask Redis comes in while it stalls
    jobs.calls.clear()
    data.write(m.WriteBatch([m.JobStarted(job.tag, store.now())], 1, 0), "runner-1")
    data.load_unfinished(m.LoadUnfinished(None, ["runner-1"]), "scheduler")
    data.report_health(m.TreeReport(pid=1, children=4, expected=4))
    data.not_running(m.NotRunning([job.tag]))
    data.take_new()
    for payload in (FLUSH, LEASE, PRUNE, RECONCILE):
        data.wake(payload)
    # Then none of it reaches Redis, and the retry's probe is one look at the inbox
    assert jobs.calls == []
    data.wake(RETRY)
    assert jobs.calls == ["take_new"] and data.stalled
    # ... which, once Redis answers, hands the job out, renews the lease, writes the batch
    # and serves the read that waited for it
    jobs.down = False
    jobs.calls.clear()
    data.wake(RETRY)
    assert data.stalled is None and jobs.calls[:2] == ["take_new", "renew_lease"]
    assert client.hget(job.tag, "job.status.current") == "running"
    assert [type(msg) for _, msg in data.sent] == [m.NewJobs, m.UnfinishedJobs]
    client.close()


def test_reconciliation_leaves_out_the_jobs_whose_end_waits_to_be_written(redis_url):
    client = emptied(redis_url)
    data = engine_data(ReplyLost(client, "me:1"), reconcile_every=1)
    data.adopt(m.Peers(scheduler="scheduler", runners=["runner-1"], generation=1))
    ending, going_on = new_job(key="a"), new_job(key="b")
    for job in (ending, going_on):
        create(data.store, job)
    # Given two jobs handed out (the second take acknowledges the first), one of which a
    # runner has ended in a batch not yet written
    data.take_new()
    data.take_new()
    data.write(m.WriteBatch([m.JobEnded(ending.tag, store.now(), 0, (), status="done")], 1, 0), "runner-1")
    # When the engine asks its runners which jobs they do not drive
    data.sent.clear()
    data.wake(RECONCILE)
    # Then it asks about the job that goes on only
    assert data.sent == [("scheduler", m.Reconcile([going_on.tag]))]
    client.close()
