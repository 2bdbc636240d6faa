"""TaskActor: calls activities over HTTP, many at once, and reports their outcomes."""

import os
import queue
import resource
import socket
import threading
import time

from thespian.actors import ActorExitRequest

from cameron import activity
from cameron import activity_blocking
from cameron import activity_loop
from cameron import actorsys
from cameron import messages as m
from cameron.lane import Lane, LaneClosed, close_fd

from actors.base import FLUSH_AGAIN, CameronActor

#: The payload of its wake-up that writes what the lane's socket could not take yet.
_FLUSH_OUTCOMES = "outcomes"
#: https calls in flight at once per TaskActor (a thread each); more wait their turn.
MAX_THREADS = 2048
#: Open files a TaskActor keeps for other things than its calls' sockets: its lanes, Thespian's
#: sockets, its log (the https threads' sockets are MAX_THREADS more).
FILES_KEPT = 1024


class TaskActor(CameronActor):
    """A task is a unit of work here, not a process. Plain-HTTP calls run on one selector loop
    (activity_loop); https calls on a pool of threads with http.client (activity_blocking).
    Calls come from the runner over its lane (cameron.lane), which the loop's thread reads
    itself; outcomes go back the same way, the loop's at the end of each of its rounds, the
    threads' through a queue and a socket the actor watches (ThespianWatch)."""

    role = "task_actor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._done = queue.SimpleQueue()  # outcomes from other threads than the loop's
        self._outs = []  # the loop's outcomes of its current round
        self._lock = threading.Lock()  # the lane's writes and in_flight, shared by the threads
        self.in_flight = 0
        self.lane = None  # to the runner, from its Lane message on
        self._runner_gone = False
        self._loop = None  # the CallLoop, started with the lane
        self._pool = None  # the CallPool, started with the first https call
        self.engine_ports = None  # () -> the engine's own ports, for allow lists

    def watched(self):
        return [self._wake_r.fileno()]

    def setup(self, first):
        self.engine_ports = actorsys.EnginePorts(self.config)

    def receiveMsg_Lane(self, msg: m.Lane, sender):
        close_fd(msg.runner_fd)  # the runner's half, inherited: only the runner may hold it
        try:
            self.lane = Lane.adopt(msg.fd, os.getppid())
        except LaneClosed as e:  # only if Thespian stopped forking actors: say so, loudly
            self.log.error("no lane to the runner (%s); exiting", e)
            self.send(self.myAddress, ActorExitRequest())
            return
        self._loop = activity_loop.CallLoop(self._loop_done, self._loop_round, self._loop_calls(),
                                            engine_ports=self.engine_ports, watch=(self.lane.sock, self._from_runner))

    def _loop_calls(self) -> int:
        """Plain-http calls the loop may have in flight: calls_in_flight, or fewer if this
        process's open-file limit would not hold a socket for each (a call that cannot open
        one fails; one that waits its turn does not)."""
        wanted = self.config.calls_in_flight
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = wanted if soft == resource.RLIM_INFINITY else max(64, soft - FILES_KEPT - MAX_THREADS)
        if room >= wanted:
            return wanted
        self.log.warning("calls in flight limited to %d per runner (calls_in_flight = %d) by the "
                         "open-file limit of %d: raise it (ulimit -n) for more", room, wanted, soft)
        return room

    def _from_runner(self):
        """On the loop's thread, when the lane is readable: the plain-HTTP calls the runner
        sent, for the loop to begin (https ones go to the pool); None once the runner is gone."""
        try:
            messages = self.lane.receive()
        except LaneClosed:
            self._runner_gone = True
            self._wake()
            return None
        return [call for msg in messages for call in self._calls(msg)]

    def _calls(self, msg: m.CallActivities) -> list:
        plain = []
        with self._lock:
            self.in_flight += len(msg.calls)
        for call in msg.calls:
            if call.url.startswith("http://"):
                try:
                    options = activity.call_options(call, self.config)
                    plain.append(activity_loop.Call(call, call.url, call.body, **options))
                except activity.ActivityError as e:  # e.g. a space in the URL: the task ends in error
                    self._ended(call, None, e, time.monotonic(), 1)
                continue
            if self._pool is None:
                self._pool = activity_blocking.CallPool(self._call, MAX_THREADS)
            self._pool.submit(call)
        return plain

    def _loop_done(self, lcall: activity_loop.Call, result, error):
        """On the loop's thread: a plain-HTTP call ended."""
        self._outs.append(_outcome(lcall.token, result, error, lcall.started, lcall.attempt))

    def _loop_round(self):
        """On the loop's thread: the round's outcomes go to the runner as one message."""
        if self._outs:
            outcomes, self._outs = self._outs, []
            if not self._send(outcomes):
                self._wake()  # the actor's thread writes the rest, and keeps at it

    def receiveMsg_WatchMessage(self, msg, sender):
        try:
            while self._wake_r.recv(65536):
                pass
        except BlockingIOError:
            pass
        if self._runner_gone:
            self.log.warning("the runner's lane closed; exiting")
            self.send(self.myAddress, ActorExitRequest())
            return
        self._send_queued()

    def receiveMsg_WakeupMessage(self, msg, sender):
        self._send_queued()

    def _send_queued(self):
        outcomes = []
        while True:
            try:
                outcomes.append(self._done.get_nowait())
            except queue.Empty:
                break
        if self.lane is not None and not self._send(outcomes):
            self.wake_once(FLUSH_AGAIN, _FLUSH_OUTCOMES)  # writes what the lane's socket could not take

    def _send(self, outcomes) -> bool:
        """On any thread: these outcomes to the runner (none: only what waits); False while the
        lane's socket has not taken everything yet."""
        with self._lock:
            self.in_flight -= len(outcomes)
            try:
                if outcomes:
                    self.lane.send(m.ActivityOutcomes(outcomes))
                return self.lane.flush()
            except LaneClosed:
                return True  # the runner is gone: its calls are lost with it

    def _call(self, call: m.ActivityCall):
        """Runs on a pool thread, retries and all: no actor state is touched here but the queue."""
        started = time.monotonic()
        result, error, attempts = activity_blocking.call(call.url, call.body, engine_ports=self.engine_ports,
                                                         **activity.call_options(call, self.config))
        self._ended(call, result, error, started, attempts)

    def _ended(self, call: m.ActivityCall, result, error, started: float, attempts: int):
        """On any thread: a call's outcome, for the actor to send back at the wake-up."""
        self._done.put(_outcome(call, result, error, started, attempts))
        self._wake()

    def _wake(self):
        try:
            self._wake_w.send(b"!")
        except BlockingIOError:
            pass  # the socket is full of wake-ups already: the actor will drain the queue

    def status(self):
        return {"in_flight": self.in_flight, "threads": self._pool.threads if self._pool is not None else 0,
                "loop_calls": self._loop.active if self._loop is not None else 0}


def _outcome(call: m.ActivityCall, result, error, started: float, attempts: int) -> m.ActivityOutcome:
    return m.ActivityOutcome(call.job_uuid, call.n, result, None if error is None else str(error),
                             int((time.monotonic() - started) * 1000), attempts)
