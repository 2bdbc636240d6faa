"""Lanes: Unix sockets that carry the actors' per-job messages without Thespian's costs."""

import dataclasses
import operator
import os
import pickle
import socket
import struct
import time

_HEAD = struct.Struct("!I")
#: Each read takes up to this much at once.
_CHUNK = 1 << 18


def per_task(cls):
    """A message class made many times per job (per task, or per task and moment) and sent
    over a lane: a plain dataclass, pickled as its class and field values. A frozen dataclass
    took 7 times as long to build and twice as long to unpickle, and these were a large share
    of the runners' and TaskActors' CPU; nothing changes one once it is built."""
    cls = dataclasses.dataclass(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = operator.attrgetter(*names)  # a tuple, or the one value of a one-field class
    cls.__reduce__ = (lambda self: (type(self), values(self))) if len(names) > 1 else \
        (lambda self: (type(self), (values(self),)))
    return cls


class LaneClosed(Exception):
    """The other end is gone: its process died or closed it."""


class Lane:
    """Length-prefixed pickles over one end of a Unix stream socket, non-blocking both ways.

    Unpickling what it reads is safe only because of who can be at the other end: a runner's
    lane to its TaskActor is a `socket.socketpair()` made before the TaskActor's process is
    forked from the runner's, so only that child holds the other half; a lane between
    siblings (Lanes) is read only once the other end's credentials were checked.
    Thespian's TCP transport pickles every message into an envelope, sends it on its own,
    waits for an acknowledgement and walks its queue on every turn of its loop: most of a
    runner's CPU went to that. Here a message is one write, and a message too big for the
    socket's buffer stays in `pending` until the next `flush()`, so neither end ever blocks on
    the other (two blocking writers could wait on each other forever)."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock = sock
        self.pending = bytearray()  # written but not yet taken by the socket
        self._inbox = bytearray()  # read but not yet a whole message

    @classmethod
    def pair(cls) -> tuple["Lane", socket.socket]:
        """A lane for this process, and the socket for the child process it will fork."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(mine), theirs

    @classmethod
    def adopt(cls, fd: int, parent: int) -> "Lane":
        """The child's end, inherited as file descriptor `fd`: checked to be a socket whose
        other end was made by process `parent` (a number reused by anything else fails here)."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise LaneClosed(f"file descriptor {fd} is not the lane's socket: {e}") from e
        pid, _ = peer(sock)
        if pid != parent:
            sock.detach()
            raise LaneClosed(f"file descriptor {fd} leads to process {pid}, not {parent}")
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message) -> None:
        """Queue one message and write what the socket takes now."""
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.pending += _HEAD.pack(len(body))
        self.pending += body
        self.flush()

    def flush(self) -> bool:
        """Write what the socket takes; True once nothing waits. LaneClosed if the other end
        is gone."""
        while self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return False
            except OSError as e:  # EPIPE, ECONNRESET: the other process died
                self.pending.clear()  # nobody will read it
                raise LaneClosed(str(e)) from e
            del self.pending[:sent]
        return True

    def receive(self) -> list:
        """Every whole message readable now, in order. LaneClosed (after the last of them has
        been returned) once the other end is gone."""
        closed = None
        while True:
            try:
                chunk = self.sock.recv(_CHUNK)
            except BlockingIOError:
                break
            except OSError as e:
                closed = e
                break
            if not chunk:
                closed = "end of stream"
                break
            self._inbox += chunk
        messages = self._take()
        if closed is not None and not messages:
            raise LaneClosed(str(closed))
        return messages

    def _take(self) -> list:
        messages, view, at = [], memoryview(self._inbox), 0
        while len(view) - at >= _HEAD.size:
            (size,) = _HEAD.unpack_from(view, at)
            if len(view) - at - _HEAD.size < size:
                break
            messages.append(pickle.loads(view[at + _HEAD.size:at + _HEAD.size + size]))
            at += _HEAD.size + size
        view.release()
        del self._inbox[:at]
        return messages

    def close(self) -> None:
        self.sock.close()


def close_fd(fd: int) -> None:
    """Close an inherited descriptor that is not ours to use (the parent's half of the pair)."""
    try:
        os.close(fd)
    except OSError:
        pass


# --- lanes between sibling actors -------------------------------------------------------------

class Hello:
    """The first message on a lane one actor opened to another: who is writing."""

    def __init__(self, address):
        self.address = address


def lane_name(address) -> bytes:
    """The abstract Unix socket (no file, not on any network) an actor takes lanes on: named
    by its user and its actor address, whose port only that actor's process holds."""
    return b"\0cameron-lane-%d-%s" % (os.getuid(), str(address).encode())


def peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket, as the kernel saw it
    connect (or make the pair)."""
    pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


def same_engine(sock: socket.socket) -> bool:
    """Whether the process at the other end of this Unix socket is one of this engine's: the
    same user and the same session (every process of an actor system shares its session)."""
    pid, uid = peer(sock)
    try:
        return uid == os.getuid() and os.getsid(pid) == os.getsid(0)
    except OSError:  # gone already
        return False


class Lanes:
    """An actor's lanes to its siblings, both ways: it listens on `lane_name(its address)`,
    and opens a lane to a peer the first time it sends it a message that may go by lane. Each
    end checks that the other is a process of the same engine before it reads a byte of it.
    A peer that does not listen (yet) is asked again after RETRY seconds; meanwhile `send`
    answers False and the caller sends through Thespian."""

    RETRY = 1.0

    def __init__(self, address):
        self.address = address
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(lane_name(address))
            self.listener.listen(128)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self._to = {}  # str(peer address) -> Lane, whichever end opened it
        self._open = {}  # fileno -> [peer address or None until its Hello, Lane]
        self._refused = {}  # str(peer address) -> when a connection to it last failed

    def fds(self, lanes: bool = True) -> list:
        """The listener's descriptor, and the open lanes' unless `lanes` is False."""
        return [self.listener.fileno(), *(self._open if lanes else ())]

    def read_all(self) -> list:
        """ready() of every open lane: what each holds now."""
        return self.ready(list(self._open))

    def send(self, address, message) -> bool:
        """Write `message` on the lane to `address`, opened now if need be; False if there is
        none (the caller sends it some other way)."""
        lane = self._to.get(str(address)) or self._connect(address)
        if lane is None:
            return False
        try:
            lane.send(message)
        except LaneClosed:
            self._drop(lane)
            return False
        return True

    def pending(self) -> bool:
        return any(lane.pending for lane in self._to.values())

    def flush(self) -> bool:
        """Write what waits; True once nothing does."""
        for lane in list(self._to.values()):
            try:
                lane.flush()
            except LaneClosed:
                self._drop(lane)
        return not self.pending()

    def ready(self, fds) -> list:
        """(message, sender address) of everything readable on these descriptors (those not
        the lanes' are left alone), in each lane's order; new lanes are accepted."""
        out = []
        for fd in fds:
            if fd == self.listener.fileno():
                self._accept()
                continue
            entry = self._open.get(fd)
            if entry is None:
                continue
            try:
                messages = entry[1].receive()
            except LaneClosed:
                self._drop(entry[1])
                continue
            for message in messages:
                if isinstance(message, Hello):
                    entry[0] = message.address
                    self._to[str(message.address)] = entry[1]
                elif entry[0] is not None:
                    out.append((message, entry[0]))
        return out

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            if not same_engine(sock):
                sock.close()
                continue
            lane = Lane(sock)
            self._open[lane.fileno()] = [None, lane]

    def _connect(self, address):
        key = str(address)
        if time.monotonic() - self._refused.get(key, -self.RETRY) < self.RETRY:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(lane_name(address))
            if not same_engine(sock):
                raise ConnectionRefusedError("the listener is not of this engine")
        except OSError:
            sock.close()
            self._refused[key] = time.monotonic()
            return None
        lane = Lane(sock)
        self._open[lane.fileno()] = [address, lane]
        self._to[key] = lane
        try:
            lane.send(Hello(self.address))
        except LaneClosed:
            self._drop(lane)
            return None
        return lane

    def _drop(self, lane: Lane):
        entry = self._open.pop(lane.fileno(), None)
        if entry is not None and entry[0] is not None and self._to.get(str(entry[0])) is lane:
            del self._to[str(entry[0])]
        lane.close()
