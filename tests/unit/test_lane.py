"""The runner's lane to its TaskActor (cameron.lane): whole messages in order, however the
bytes arrive; never a blocked writer; the end of the other side seen; only the right socket
adopted."""

import os

import pytest

from cameron import messages as m
from cameron.lane import Lane, LaneClosed


@pytest.fixture
def ends():
    a, theirs = Lane.pair()
    b = Lane(theirs)
    yield a, b
    a.close()
    b.close()


def outcomes(*ns):
    return m.ActivityOutcomes([m.ActivityOutcome("j", n, None, "x", 0) for n in ns])


def test_messages_arrive_whole_and_in_order(ends):
    a, b = ends
    for n in range(5):
        a.send(outcomes(n))
    assert [msg.outcomes[0].n for msg in b.receive()] == [0, 1, 2, 3, 4]
    assert b.receive() == []


def test_a_message_split_across_reads_is_returned_once_whole(ends):
    a, b = ends
    a.send(outcomes(1))
    raw = b.sock.recv(1 << 16)
    a.close()
    left, theirs = Lane.pair()  # feed the same bytes in two pieces to a fresh reader
    right = Lane(theirs)
    left.sock.send(raw[:7])
    assert right.receive() == []
    left.sock.send(raw[7:])
    assert right.receive() == [outcomes(1)]
    left.close()
    right.close()


def test_a_message_bigger_than_the_socket_takes_never_blocks_the_writer(ends):
    a, b = ends
    big = m.ActivityOutcomes([m.ActivityOutcome("j", n, None, f"{n:04}" * 250, 0) for n in range(5000)])
    a.send(big)  # ~5 MB: far more than a socket buffer; returns at once
    assert a.pending
    got = []
    while not got:
        got = b.receive()
        a.flush()
    assert got == [big] and not a.pending


def test_the_other_ends_close_is_seen_after_its_last_messages(ends):
    a, b = ends
    a.send(outcomes(1))
    a.send(outcomes(2))
    a.close()
    assert b.receive() == [outcomes(1), outcomes(2)]
    with pytest.raises(LaneClosed):
        b.receive()
    with pytest.raises(LaneClosed):
        b.send(outcomes(3))


def test_only_a_socket_whose_other_end_this_parent_made_is_adopted():
    mine, theirs = Lane.pair()
    try:
        with pytest.raises(LaneClosed, match="not " + str(os.getpid() + 1)):
            Lane.adopt(theirs.fileno(), os.getpid() + 1)
        r, w = os.pipe()
        with pytest.raises(LaneClosed, match="not the lane's socket"):
            Lane.adopt(r, os.getpid())
        os.close(r)
        os.close(w)
        lane = Lane.adopt(theirs.detach(), os.getpid())
        mine.send(outcomes(7))
        assert lane.receive() == [outcomes(7)]
        lane.close()
    finally:
        mine.close()
