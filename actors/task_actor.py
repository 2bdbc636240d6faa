"""TaskActor: calls activities over HTTP, many at once, and reports their outcomes."""

import queue
import socket
import time

from thespian.actors import ThespianWatch

from cameron import activity
from cameron import activity_blocking
from cameron import activity_loop
from cameron import actorsys
from cameron import messages as m

from actors.base import CameronActor, Pipe

#: Calls in flight at once per TaskActor (each path: the loop's, the threads'); more wait their turn.
MAX_CALLS = 2048
#: How long the engine's own ports, looked up in /proc, are taken as known.
PORTS_KEPT = 2.0


class TaskActor(CameronActor):
    """A task is a unit of work here, not a process. Plain-HTTP calls run on one selector loop
    (activity_loop); https calls on a pool of threads with http.client (activity_blocking).
    Both hand outcomes back through a queue and wake the actor through a socket it watches
    (ThespianWatch)."""

    role = "task_actor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done = queue.SimpleQueue()
        self.in_flight = 0
        self._pipes = {}  # str(runner address) -> Pipe of ActivityOutcomes
        self._loop = None  # the CallLoop, started with the first plain-HTTP call
        self._pool = None  # the CallPool, started with the first https call
        self._loop_woke = False
        self._ports = (0.0, set())  # (looked up at, the engine's own ports)

    def receiveMessage(self, message, sender):
        super().receiveMessage(message, sender)
        return ThespianWatch([self._wake_r.fileno()])

    def engine_ports(self) -> set:
        """Asked from the call threads only when an allow-list pattern lets a call reach this
        machine: /proc is read at most every PORTS_KEPT seconds."""
        when, ports = self._ports
        if time.monotonic() - when > PORTS_KEPT:
            ports = actorsys.engine_ports(self.config)
            self._ports = (time.monotonic(), ports)
        return ports

    @property
    def signing_key(self) -> bytes | None:
        return self.config.signing_key.encode() or None

    def _options(self, call: m.ActivityCall) -> dict:
        """What either transport takes besides the URL and body, for one call."""
        return dict(connect_timeout=call.connect_timeout, read_timeout=call.read_timeout,
                    max_bytes=self.config.max_response_bytes, max_fanout=self.config.max_fanout,
                    retry=call.retry, allow=call.allow, signing_key=self.signing_key,
                    headers=activity.task_headers(call.job_uuid, call.n, call.name, call.again))

    def receiveMsg_CallActivities(self, msg: m.CallActivities, sender):
        plain = []
        for call in msg.calls:
            self.in_flight += 1
            if call.url.startswith("http://"):
                try:
                    plain.append(activity_loop.Call((call, sender), call.url, call.body, **self._options(call)))
                except activity.ActivityError as e:  # e.g. a space in the URL: the task ends in error
                    self._ended(sender, call, None, e, 0, 1)
                    self._wake()
                continue
            if self._pool is None:
                self._pool = activity_blocking.CallPool(self._call, MAX_CALLS)
            self._pool.submit(call, sender)
        if plain:
            if self._loop is None:
                self._loop = activity_loop.CallLoop(self._loop_done, self._loop_round, MAX_CALLS,
                                                    engine_ports=self.engine_ports)
            self._loop.submit(plain)

    def _loop_done(self, lcall: activity_loop.Call, result, error):
        """On the loop's thread: a plain-HTTP call ended."""
        call, reply_to = lcall.token
        self._ended(reply_to, call, result, error, int((time.monotonic() - lcall.started) * 1000), lcall.attempt)
        self._loop_woke = True

    def _loop_round(self):
        """On the loop's thread: one wake-up for all the outcomes of a round."""
        if self._loop_woke:
            self._loop_woke = False
            self._wake()

    def receiveMsg_WatchMessage(self, msg, sender):
        try:
            while self._wake_r.recv(65536):
                pass
        except BlockingIOError:
            pass
        # Every outcome in the queue goes now, one message per runner; while the last message
        # to a runner is still on its way, its Pipe gathers the next ones.
        out = {}  # str(runner address) -> (address, [outcome...])
        while True:
            try:
                reply_to, outcome = self._done.get_nowait()
            except queue.Empty:
                break
            out.setdefault(str(reply_to), (reply_to, []))[1].append(outcome)
        for key, (reply_to, outcomes) in out.items():
            self.in_flight -= len(outcomes)
            pipe = self._pipes.get(key)
            if pipe is None:
                pipe = self._pipes[key] = Pipe(self, m.ActivityOutcomes)
            pipe.put(reply_to, outcomes)

    def _call(self, call: m.ActivityCall, reply_to):
        """Runs on a pool thread, retries and all: no actor state is touched here but the queue."""
        started = time.monotonic()
        result, error, attempts = activity_blocking.call(call.url, call.body, engine_ports=self.engine_ports,
                                                         **self._options(call))
        self._ended(reply_to, call, result, error, int((time.monotonic() - started) * 1000), attempts)
        self._wake()

    def _ended(self, reply_to, call: m.ActivityCall, result, error, elapsed_ms: int, attempts: int):
        """On any thread: a call's outcome, for the actor to send back at its next wake-up."""
        self._done.put((reply_to, m.ActivityOutcome(call.job_uuid, call.n, result,
                                                    None if error is None else str(error), elapsed_ms, attempts)))

    def _wake(self):
        try:
            self._wake_w.send(b"!")
        except BlockingIOError:
            pass  # the socket is full of wake-ups already: the actor will drain the queue

    def status(self):
        return {"in_flight": self.in_flight, "threads": self._pool.threads if self._pool is not None else 0,
                "loop_calls": self._loop.active if self._loop is not None else 0}
