"""The runner's lane to its TaskActor (cameron.lane): whole messages in order, however the
bytes arrive; never a blocked writer; the end of the other side seen; only the right socket
adopted."""

import os
import pickle

import pytest

from cameron import messages as m
from cameron.lane import Lane, LaneClosed, Lanes, per_task


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


# --- lanes between sibling actors (Lanes) ------------------------------------------------

def wait_ready(lanes, want=1, timeout=5.0):
    """What `lanes` reads from its sockets until `want` messages came (select, not sleeps)."""
    import select
    import time
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        ready, _, _ = select.select(lanes.fds(), [], [], 0.05)
        got += lanes.ready(ready)
    return got


@pytest.fixture
def lanes():
    made = []

    def make(address):
        made.append(Lanes(address))
        return made[-1]
    yield make
    for one in made:
        for fd in one.fds():
            os.close(fd)


def test_a_message_goes_by_lane_with_its_sender_and_the_answer_comes_back_on_it(lanes):
    a, b = lanes(f"test-a-{os.getpid()}"), lanes(f"test-b-{os.getpid()}")
    assert a.send(b.address, m.Written(1))
    [(msg, sender)] = wait_ready(b)
    assert msg == m.Written(1) and sender == a.address
    # The answer takes the lane `a` opened: `b` opens none of its own
    assert b.send(sender, m.Written(2))
    assert wait_ready(a) == [(m.Written(2), b.address)]
    assert len(a.fds()) == len(b.fds()) == 2  # each: its listener and the one lane


def test_lanes_left_unwatched_keep_what_arrives_until_read_all_takes_it(lanes):
    # Given a lane from a to b (b accepted it) and b watching only its listener for a while
    # (JobData between the first write batch and the flush COALESCE later)
    a, b = lanes(f"test-a-{os.getpid()}"), lanes(f"test-b-{os.getpid()}")
    assert a.send(b.address, m.Written(1))
    assert wait_ready(b) == [(m.Written(1), a.address)]
    assert b.fds(lanes=False) == [b.listener.fileno()] and len(b.fds()) == 2
    # When three more messages come meanwhile
    for seq in (2, 3, 4):
        assert a.send(b.address, m.Written(seq))
    # Expect none to make the listener readable, and read_all to take all three, in order
    import select
    assert select.select(b.fds(lanes=False), [], [], 0.2)[0] == []
    assert b.read_all() == [(m.Written(seq), a.address) for seq in (2, 3, 4)]
    assert b.read_all() == []


def test_a_peer_that_does_not_listen_yet_is_asked_again_only_after_a_while(lanes, monkeypatch):
    a = lanes(f"test-a-{os.getpid()}")
    later = f"test-later-{os.getpid()}"
    assert not a.send(later, m.Written(1))  # the caller sends it by Thespian instead
    b = lanes(later)
    assert not a.send(later, m.Written(2))  # within RETRY: not asked again
    monkeypatch.setattr(Lanes, "RETRY", 0.0)
    assert a.send(later, m.Written(3))
    assert wait_ready(b) == [(m.Written(3), a.address)]


def test_a_process_of_another_session_gets_no_lane(lanes):
    import subprocess
    import sys
    b = lanes(f"test-b-{os.getpid()}")
    # Given a process of this user in a session of its own, which connects and writes a Hello
    # and a message exactly as a lane would
    script = ("import socket, sys; from cameron.lane import Lane, Hello, lane_name; "
              "from cameron import messages as m; s = socket.socket(socket.AF_UNIX); "
              "s.connect(lane_name(sys.argv[1])); lane = Lane(s); lane.send(Hello('intruder')); "
              "lane.send(m.Written(99)); lane.flush(); print('sent', flush=True); s.settimeout(20)\n"
              "try:\n    print('closed' if s.recv(1) == b'' else 'open')\n"
              "except ConnectionResetError:\n    print('closed')\n")
    child = subprocess.Popen([sys.executable, "-c", script, b.address], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "sent"
        # Expect nothing handed on, and the connection closed unread
        assert wait_ready(b, timeout=1.0) == [] and len(b.fds()) == 1
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert out.strip() == "closed", err


def test_no_lane_is_opened_to_a_listener_of_another_session(lanes):
    import subprocess
    import sys
    a = lanes(f"test-a-{os.getpid()}")
    squatted = f"test-squatted-{os.getpid()}"
    # Given a process of another session listening on the name a peer's lane would have
    script = ("import socket, sys; from cameron.lane import lane_name; s = socket.socket(socket.AF_UNIX); "
              "s.bind(lane_name(sys.argv[1])); s.listen(); print('up', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", script, squatted], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "up"
        # Expect nothing written to it: the message goes some other way
        assert not a.send(squatted, m.Written(1))
        assert len(a.fds()) == 1
    finally:
        child.kill()
        child.wait()


@per_task
class _OneField:
    a: int


def test_a_per_task_message_crosses_a_lane_equal_and_rebuilt_from_its_values(ends):
    # Given per-task messages, one of a single field, one with nested ones
    a, b = ends
    outcome = m.ActivityOutcome("u" * 32, 3, None, "boom", 12, attempts=2)
    moment = m.TaskStarted(tag="t", n=1, id="x", name="x", url="http://h/x", requestor="r",
                           parent=0, parent_id="start", tasks_csv="", time="now")
    # When they cross a lane, expect them equal, of their own class
    a.send(m.ActivityOutcomes([outcome, moment, _OneField(7)]))
    [got] = b.receive()
    assert got.outcomes == [outcome, moment, _OneField(7)]
    assert [type(o) for o in got.outcomes] == [m.ActivityOutcome, m.TaskStarted, _OneField]
    # and pickled as their values: no per-object state dictionary on the wire
    assert b"__dict__" not in pickle.dumps(moment) and b"tasks_csv" not in pickle.dumps(moment)
