"""The TaskActor's pool of call threads (for https, activity_blocking.CallPool), and the TaskActor
without Thespian: how it sends outcomes back over its lane."""

import logging
import resource
import threading
from types import SimpleNamespace

import pytest

from actors import task_actor
from cameron import activity_blocking
from cameron import messages as m
from cameron.config import Config
from cameron.lane import Lane
from bench.stack import wait_for as shared_wait_for


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(activity_blocking, "IDLE_EXIT", 0.2)
    release = threading.Event()
    calls = []

    def fake_call(call):  # stands in for the HTTP call: waits until released
        calls.append(call.n)
        release.wait(5)
    yield activity_blocking.CallPool(fake_call, task_actor.MAX_THREADS), release, calls
    release.set()


def wait_for(predicate, timeout=5.0):
    shared_wait_for(predicate, timeout, "the task pool", interval=0.01)


def calls(n):
    # https: the calls the thread pool makes (plain http goes to the activity loop)
    return m.CallActivities([m.ActivityCall("j", i, "t", "https://x/", {}, 1.0, 1.0, None) for i in range(n)])


def submit(pool, batch):
    for call in batch.calls:
        pool.submit(call)


def test_a_thread_per_call_in_flight_then_back_to_none_when_idle(pool):
    pool, release, made = pool
    submit(pool, calls(20))
    wait_for(lambda: len(made) == 20)
    assert pool.threads == 20  # every call at once: none waits for another
    release.set()
    wait_for(lambda: pool.threads == 0)  # all idle past IDLE_EXIT: all gone
    assert pool.idle == 0


def test_idle_threads_are_reused_before_new_ones_are_made(pool):
    pool, release, made = pool
    release.set()
    submit(pool, calls(3))
    wait_for(lambda: len(made) == 3 and pool.idle == pool.threads)
    before = pool.threads
    submit(pool, calls(2))
    wait_for(lambda: len(made) == 5)
    assert pool.threads <= before


# --- outcomes go back as they come, together when they come together --------------

@pytest.fixture
def gated(monkeypatch):
    """A TaskActor whose calls end when the test says, and what it sends its runner's end of
    the lane."""
    actor = task_actor.TaskActor()
    actor.config = Config()
    actor.lane, theirs = Lane.pair()
    runner = Lane(theirs)
    gates = {}

    def fake_call(call):
        gates.setdefault(call.n, threading.Event()).wait(5)
        actor._done.put(m.ActivityOutcome(call.job_uuid, call.n, None, "x", 0))
    actor._call = fake_call

    def end(*ns):
        for n in ns:
            gates.setdefault(n, threading.Event()).set()
        wait_for(lambda: actor._done.qsize() >= len(ns))
        actor.receiveMsg_WatchMessage(None, None)
    yield actor, end, runner.receive
    for gate in gates.values():
        gate.set()
    actor.lane.close()
    runner.close()


def test_outcomes_that_ended_together_go_back_in_one_message(gated):
    actor, end, received = gated
    actor._calls(calls(3))
    end(0, 1, 2)
    [msg] = received()
    assert sorted(o.n for o in msg.outcomes) == [0, 1, 2]
    assert actor.in_flight == 0


def test_an_outcome_does_not_wait_for_its_slower_siblings(gated):
    actor, end, received = gated
    actor._calls(calls(2))
    end(0)
    [msg] = received()
    assert [o.n for o in msg.outcomes] == [0]
    end(1)
    [msg] = received()
    assert [o.n for o in msg.outcomes] == [1]
    assert actor.in_flight == 0


def test_an_activity_url_with_a_bad_port_ends_its_task_in_error_not_the_actor(gated):
    # Given an activity answer that named a next activity at "http://host:port" with no number
    actor, end, received = gated
    actor.config = Config(max_response_bytes=1000, max_fanout=10)
    bad = m.ActivityCall("j", 0, "t", "http://127.0.0.1:notaport/x", {}, 1.0, 1.0, None)
    # When it is to be called
    actor._calls(m.CallActivities([bad]))
    actor.receiveMsg_WatchMessage(None, None)
    # Expect the task's outcome to be an error saying why, sent back like any other
    [msg] = received()
    [outcome] = msg.outcomes
    assert outcome.result is None
    assert outcome.error == ("request failed: the URL has a port that is no number from 0 to 65535: "
                             "'http://127.0.0.1:notaport/x'")
    assert actor.in_flight == 0


def test_the_loop_takes_calls_in_flight_unless_the_open_file_limit_would_not_hold_them(monkeypatch, caplog):
    actor = SimpleNamespace(config=Config(calls_in_flight=5000), log=logging.getLogger("cameron.task_actor"))
    # A limit with room for them (and for the https threads and the actor's own files): all of them
    monkeypatch.setattr(resource, "getrlimit", lambda _: (65536, 65536))
    assert task_actor.TaskActor._loop_calls(actor) == 5000
    assert not caplog.records
    # A limit of 4,096 files: what is left after the actor's own and the threads', said in the log
    monkeypatch.setattr(resource, "getrlimit", lambda _: (4096, 65536))
    with caplog.at_level(logging.WARNING):
        assert task_actor.TaskActor._loop_calls(actor) == 4096 - task_actor.FILES_KEPT - task_actor.MAX_THREADS
    assert "calls in flight limited to 1024 per runner (calls_in_flight = 5000)" in caplog.text
