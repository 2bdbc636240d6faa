"""Pipe: one message in flight per peer; what comes meanwhile goes together next."""

from actors.base import Pipe


class FakeActor:
    """Records sends; the test says when the transport has delivered each."""

    def __init__(self):
        self.sent = []  # (address, message, delivered callback)

    def send_then(self, addr, msg, done):
        self.sent.append((addr, msg, done))


def test_an_idle_pipe_sends_at_once_and_a_busy_one_gathers_until_delivery():
    actor = FakeActor()
    pipe = Pipe(actor, tuple)
    pipe.put("runner", [1])
    assert [(a, m) for a, m, _ in actor.sent] == [("runner", (1,))]
    pipe.put("runner", [2])
    pipe.put("runner", [3, 4])
    assert len(actor.sent) == 1  # the first is still on its way
    actor.sent[0][2]()  # delivered
    assert [(a, m) for a, m, _ in actor.sent] == [("runner", (1,)), ("runner", (2, 3, 4))]
    actor.sent[1][2]()
    assert len(actor.sent) == 2  # nothing left: idle again
    pipe.put("runner", [5])
    assert actor.sent[2][1] == (5,)


def test_a_replaced_peer_gets_items_at_once_and_the_old_delivery_changes_nothing():
    actor = FakeActor()
    pipe = Pipe(actor, tuple)
    pipe.put("old", [1])
    pipe.put("new", [2])  # the peer was restarted at a new address: do not wait for the old one
    assert [(a, m) for a, m, _ in actor.sent] == [("old", (1,)), ("new", (2,))]
    pipe.put("new", [3])
    actor.sent[0][2]()  # the old message's fate: not the new peer's pipe being free
    assert len(actor.sent) == 2
    actor.sent[1][2]()
    assert actor.sent[2][:2] == ("new", (3,))


def test_told_where_a_replaced_peer_is_the_waiting_items_go_there_at_once():
    # Given items waiting behind a message to a peer that has died
    actor = FakeActor()
    pipe = Pipe(actor, tuple)
    pipe.put("old", [1])
    pipe.put("old", [2, 3])
    # When the actor learns the peer's new address, with nothing new to send
    pipe.put("new")
    # Expect the waiting items sent there, without waiting for the old message's fate
    assert [(a, m) for a, m, _ in actor.sent] == [("old", (1,)), ("new", (2, 3))]
    # And with nothing waiting, being told sends nothing
    actor.sent[1][2]()
    pipe.put("newer")
    assert len(actor.sent) == 2


def test_a_failed_delivery_frees_the_pipe_for_what_waits():
    # Given a message whose delivery failed (Thespian calls back either way)
    actor = FakeActor()
    pipe = Pipe(actor, tuple)
    pipe.put("peer", [1])
    pipe.put("peer", [2])
    actor.sent[0][2]()
    # Expect what waited to go next
    assert actor.sent[1][:2] == ("peer", (2,))
