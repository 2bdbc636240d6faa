"""TaskActor: calls activities over HTTP, many at once, and reports their outcomes."""

import datetime
import os
import queue
import socket
import time

from thespian.actors import ActorExitRequest, ThespianWatch

from cameron import activity
from cameron import activity_blocking
from cameron import activity_loop
from cameron import actorsys
from cameron import messages as m
from cameron.lane import Lane, LaneClosed, close_fd

from actors.base import CameronActor

#: Calls in flight at once per TaskActor (each path: the loop's, the threads'); more wait their turn.
MAX_CALLS = 2048
#: How long the engine's own ports, looked up in /proc, are taken as known.
PORTS_KEPT = 2.0
#: How soon outcomes the lane's socket could not take yet are written again.
FLUSH_AGAIN = datetime.timedelta(milliseconds=5)


class TaskActor(CameronActor):
    """A task is a unit of work here, not a process. Plain-HTTP calls run on one selector loop
    (activity_loop); https calls on a pool of threads with http.client (activity_blocking).
    Both hand outcomes back through a queue and wake the actor through a socket it watches
    (ThespianWatch). Calls come from its runner, and outcomes go back, over the runner's lane
    (cameron.lane), not as actor messages."""

    role = "task_actor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done = queue.SimpleQueue()
        self.in_flight = 0
        self.lane = None  # to the runner, from its Lane message on
        self._loop = None  # the CallLoop, started with the first plain-HTTP call
        self._pool = None  # the CallPool, started with the first https call
        self._loop_woke = False
        self._ports = (0.0, set())  # (looked up at, the engine's own ports)

    def receiveMessage(self, message, sender):
        super().receiveMessage(message, sender)
        if self.lane is None:
            return ThespianWatch([self._wake_r.fileno()])
        return ThespianWatch([self._wake_r.fileno(), self.lane.fileno()])

    def receiveMsg_Lane(self, msg: m.Lane, sender):
        close_fd(msg.runner_fd)  # the runner's half, inherited: only the runner may hold it
        self.lane = Lane.adopt(msg.fd, os.getppid())
        self._read_lane()  # calls may be waiting already

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

    def _call_activities(self, msg: m.CallActivities):
        plain = []
        for call in msg.calls:
            self.in_flight += 1
            if call.url.startswith("http://"):
                try:
                    plain.append(activity_loop.Call(call, call.url, call.body, **self._options(call)))
                except activity.ActivityError as e:  # e.g. a space in the URL: the task ends in error
                    self._ended(call, None, e, 0, 1)
                    self._wake()
                continue
            if self._pool is None:
                self._pool = activity_blocking.CallPool(self._call, MAX_CALLS)
            self._pool.submit(call)
        if plain:
            if self._loop is None:
                self._loop = activity_loop.CallLoop(self._loop_done, self._loop_round, MAX_CALLS,
                                                    engine_ports=self.engine_ports)
            self._loop.submit(plain)

    def _loop_done(self, lcall: activity_loop.Call, result, error):
        """On the loop's thread: a plain-HTTP call ended."""
        self._ended(lcall.token, result, error, int((time.monotonic() - lcall.started) * 1000), lcall.attempt)
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
        if self.lane is not None:
            self._read_lane()
        self._send_outcomes()

    def receiveMsg_WakeupMessage(self, msg, sender):
        self._send_outcomes()

    def _read_lane(self):
        try:
            for message in self.lane.receive():
                self._call_activities(message)
        except LaneClosed:
            # The runner is gone (its death takes this process along) or closed its end.
            self.log.warning("the runner's lane closed; exiting")
            self.send(self.myAddress, ActorExitRequest())

    def _send_outcomes(self):
        """Every outcome in the queue goes now, as one message; outcomes the socket cannot take
        yet are written again shortly (the runner reads them whenever it turns)."""
        outcomes = []
        while True:
            try:
                outcomes.append(self._done.get_nowait())
            except queue.Empty:
                break
        if self.lane is None:
            return
        try:
            if outcomes:
                self.in_flight -= len(outcomes)
                self.lane.send(m.ActivityOutcomes(outcomes))
            elif self.lane.pending:
                self.lane.flush()
        except LaneClosed:
            return  # the runner is gone: its calls are lost with it
        if self.lane.pending:
            self.wakeupAfter(FLUSH_AGAIN)

    def _call(self, call: m.ActivityCall):
        """Runs on a pool thread, retries and all: no actor state is touched here but the queue."""
        started = time.monotonic()
        result, error, attempts = activity_blocking.call(call.url, call.body, engine_ports=self.engine_ports,
                                                         **self._options(call))
        self._ended(call, result, error, int((time.monotonic() - started) * 1000), attempts)
        self._wake()

    def _ended(self, call: m.ActivityCall, result, error, elapsed_ms: int, attempts: int):
        """On any thread: a call's outcome, for the actor to send back at its next wake-up."""
        self._done.put(m.ActivityOutcome(call.job_uuid, call.n, result,
                                         None if error is None else str(error), elapsed_ms, attempts))

    def _wake(self):
        try:
            self._wake_w.send(b"!")
        except BlockingIOError:
            pass  # the socket is full of wake-ups already: the actor will drain the queue

    def status(self):
        return {"in_flight": self.in_flight, "threads": self._pool.threads if self._pool is not None else 0,
                "loop_calls": self._loop.active if self._loop is not None else 0}
