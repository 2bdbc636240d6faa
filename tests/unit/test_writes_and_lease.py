"""JobData's two rules in plain Python: runners' batches in order (cameron.writes) and the
watch of the other engines' leases (cameron.lease)."""

import pytest
import redis

from cameron import messages as m
from cameron.lease import LeaseWatch
from cameron.writes import Backlog, InOrder, Outbox


def batch(seq, floor=0):
    return m.WriteBatch([], seq, floor)


def test_a_runners_batches_pass_in_its_order_whatever_order_they_come_in():
    order = InOrder()
    assert order.arrived("r1", batch(2)) == [] and order.waiting() == 1
    assert [b.seq for b in order.arrived("r1", batch(1))] == [1, 2]
    assert [b.seq for b in order.arrived("r2", batch(1))] == [1]  # runners apart
    assert order.arrived("r1", batch(2)) == []  # sent again after a JobData restart: once only


def test_a_new_jobdata_starts_from_the_floor_the_runner_sends():
    assert [b.seq for b in InOrder().arrived("r1", batch(7, floor=6))] == [7]


def test_the_batches_of_a_replaced_runner_are_dropped():
    order = InOrder()
    order.arrived("r1", batch(2))
    order.replace({"r1"})
    assert order.arrived("r1", batch(1)) is None and order.waiting() == 0


def test_an_engine_is_dead_after_a_whole_lease_of_the_same_value_with_redis_answering():
    watch = LeaseWatch(ttl=1.0)
    assert watch.renewal(0.0, 0.01, True, {"other": "v1"}) == {}
    t, dead = 0.0, None
    while t < 1.25:  # renewals every quarter lease (0.24 s watched each), its value never changing
        t += 0.25
        assert dead in (None, {}), t  # not before a whole lease was watched
        dead = watch.renewal(t, t + 0.01, True, {"other": "v1"})
    assert dead == {"other": "v1"} and not watch.fenced


def test_a_changed_value_or_a_gap_in_the_answers_starts_the_watch_again():
    watch = LeaseWatch(ttl=1.0)
    watch.renewal(0.0, 0.01, True, {"other": "v1"})
    watch.renewal(0.25, 0.26, True, {"other": "v1"})
    watch.renewal(0.5, 0.51, True, {"other": "v2"})  # it renewed: alive
    assert watch.seen["other"] == ["v2", 0.0]
    # Redis stalled 2 s: nobody could renew; the first answer after starts a new watch, and
    # this engine's own lease may have lapsed
    assert watch.renewal(2.5, 2.51, False, {"other": "v2"}) == {}
    assert watch.seen["other"] == ["v2", 0.0] and watch.fenced


class FlakyStore:
    """apply() that fails when told to, after (or before) Redis ran it; written_token() reads
    what the last applied write recorded."""

    def __init__(self):
        self.applied, self.token, self.fail = [], None, None

    def apply(self, ops, token):
        if self.fail == "before":
            raise redis.ConnectionError("down")
        self.applied.append(ops)
        self.token = token
        if self.fail == "reply lost":
            raise redis.TimeoutError("Timeout reading from socket")

    def written_token(self):
        return self.token


def test_a_backlog_is_written_in_order_many_batches_a_time_and_acknowledged_per_writer():
    backlog, redis_ = Backlog("x", most=2), FlakyStore()
    for seq, writer in [(1, "r1"), (2, "r1"), (1, "r2")]:
        backlog.add([f"{writer}-{seq}"], seq, writer)
    backlog.flush(redis_)
    assert redis_.applied == [["r1-1", "r1-2"], ["r2-1"]] and len(backlog) == 0
    assert backlog.acks == [["r1", 2], ["r2", 1]] and backlog.written == 3


def test_a_write_whose_reply_was_lost_is_not_written_twice_nor_lost():
    backlog, redis_ = Backlog("x", most=10), FlakyStore()
    backlog.add(["a"], 1, "r1")
    redis_.fail = "reply lost"
    with pytest.raises(redis.TimeoutError):
        backlog.flush(redis_)
    assert len(backlog) == 1 and backlog.acks == []  # not known to be in Redis yet
    redis_.fail = None
    backlog.flush(redis_)  # the token says it landed
    assert redis_.applied == [["a"]] and backlog.acks == [["r1", 1]]


def test_a_write_redis_never_ran_is_written_again():
    backlog, redis_ = Backlog("x", most=10), FlakyStore()
    backlog.add(["a"], 1, "r1")
    redis_.fail = "before"
    with pytest.raises(redis.ConnectionError):
        backlog.flush(redis_)
    redis_.fail = None
    backlog.flush(redis_)
    assert redis_.applied == [["a"]] and backlog.acks == [["r1", 1]]


def test_a_runner_keeps_its_batches_until_acknowledged_and_sends_the_rest_again_in_order():
    outbox = Outbox()
    first, second, third = (outbox.batch([n]) for n in "abc")
    assert [b.seq for b in (first, second, third)] == [1, 2, 3] and first.floor == 0
    outbox.written(1)
    assert outbox.batch(["d"]).floor == 1  # JobData may forget what is below it
    again = outbox.again()
    assert [(b.seq, b.ops, b.floor) for b in again] == [(2, ["b"], 1), (3, ["c"], 1), (4, ["d"], 1)]
    # ... which a new JobData, starting from that floor, puts back in order
    order = InOrder()
    assert [b.seq for b in order.arrived("r", again[1])] == []
    assert [b.seq for b in order.arrived("r", again[0])] == [2, 3]
