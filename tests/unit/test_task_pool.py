"""The TaskActor's pool of call threads: grows with the calls in flight, shrinks when idle."""

import threading
import time

import pytest

from actors import task_actor
from cameron import messages as m


@pytest.fixture
def actor(monkeypatch):
    monkeypatch.setattr(task_actor, "IDLE_EXIT", 0.2)
    actor = task_actor.TaskActor()
    release = threading.Event()
    calls = []

    def fake_call(call, reply_to):  # stands in for the HTTP call: waits until released
        calls.append(call.n)
        release.wait(5)
    actor._call = fake_call
    yield actor, release, calls
    release.set()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def calls(n):
    return m.CallActivities([m.ActivityCall("j", i, "t", "http://x/", {}, 1.0, 1.0, None) for i in range(n)])


def test_a_thread_per_call_in_flight_then_back_to_none_when_idle(actor):
    actor, release, made = actor
    actor.receiveMsg_CallActivities(calls(20), sender=None)
    wait_for(lambda: len(made) == 20)
    assert actor._threads == 20  # every call at once: none waits for another
    release.set()
    wait_for(lambda: actor._threads == 0)  # all idle past IDLE_EXIT: all gone
    assert actor._idle == 0


def test_idle_threads_are_reused_before_new_ones_are_made(actor):
    actor, release, made = actor
    release.set()
    actor.receiveMsg_CallActivities(calls(3), sender=None)
    wait_for(lambda: len(made) == 3 and actor._idle == actor._threads)
    before = actor._threads
    actor.receiveMsg_CallActivities(calls(2), sender=None)
    wait_for(lambda: len(made) == 5)
    assert actor._threads <= before
