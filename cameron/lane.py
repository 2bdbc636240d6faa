"""A lane: a JobRunner's private stream socket to its own TaskActor, for the calls and their
outcomes, without the actor transport's per-message costs."""

import os
import pickle
import socket
import struct

_HEAD = struct.Struct("!I")
#: Each read takes up to this much at once.
_CHUNK = 1 << 18


class LaneClosed(Exception):
    """The other end is gone: its process died or closed it."""


class Lane:
    """Length-prefixed pickles over one end of a socket pair, non-blocking both ways.

    Both ends are the two halves of one `socket.socketpair()` made by the runner before it
    creates its TaskActor, whose process is forked from the runner's and so holds the other
    half: nothing else can connect to it, which is what makes unpickling what it reads safe.
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
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
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
