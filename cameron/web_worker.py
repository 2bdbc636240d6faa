"""The API server's gunicorn worker: gevent's, with a deadline on every request body and
JSON for the errors gunicorn answers itself (a request line too long, a malformed header)."""

import json
import logging
import os
import signal
import time

import gevent
from gunicorn import glogging, util
from gunicorn.workers.ggevent import GeventWorker

from cameron.config import from_env


# A worker's stop signals are held from just before gunicorn forks it until its own handlers
# are in place: in between, the master's handler (which only queues the signal for the master's
# loop) would swallow a SIGTERM, and the worker would serve on until the master kills it
# graceful_timeout later. The master releases them right after the fork.
_STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
os.register_at_fork(after_in_parent=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS))


class Worker(GeventWorker):
    """A greenlet per connection, so slow clients hold no thread; the request line and
    headers must come within `keepalive` seconds (gunicorn's gevent worker bounds that read
    by it) and the body within web_body_timeout."""

    def __init__(self, *args, **kwargs):
        # Made by the master just before the fork that starts this worker.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        super().__init__(*args, **kwargs)

    def init_signals(self):
        super().init_signals()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)  # one that came meanwhile arrives now

    def init_process(self):
        self.body_timeout = from_env().web_body_timeout
        self.waiting = {}  # greenlet -> the Timeout of its wait for a request's headers
        super().init_process()

    def timeout_ctx(self):
        # A connection that goes idle once the worker is stopping (after a long answer, such
        # as an event stream) ends at once too.
        return _Waiting(self.waiting, gevent.Timeout(self.cfg.keepalive if self.alive else 0.01, False))

    def handle_exit(self, sig, frame):
        # gunicorn waits for every connection to end before the worker exits, kept-alive idle
        # ones too: end those at once, as their header timeout would, so that a stop takes
        # as long as the requests in progress and not web_header_timeout more.
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_waiting)
        # Open event streams end too; their clients resume elsewhere. (Imported here: this
        # module is loaded before gevent patches the standard library, and events imports redis.)
        from cameron import events
        gevent.spawn(events.stop_all)

    def _close_waiting(self):
        for greenlet, timeout in list(self.waiting.items()):
            greenlet.kill(timeout, block=False)

    def handle_request(self, listener_name, req, sock, addr):
        if req.body is None:
            return super().handle_request(listener_name, req, sock, addr)
        req.body = body = _Deadline(req.body, time.monotonic() + self.body_timeout, self.body_timeout)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            body.answered()


class _Waiting:
    """A connection's wait for its next request (gunicorn's keepalive Timeout), registered so
    that a stopping worker can end it as if it had timed out."""

    def __init__(self, waiting: dict, timeout):
        self.waiting, self.timeout = waiting, timeout

    def __enter__(self):
        self.waiting[gevent.getcurrent()] = self.timeout
        return self.timeout.__enter__()

    def __exit__(self, *exc):
        self.waiting.pop(gevent.getcurrent(), None)
        return self.timeout.__exit__(*exc)


class _Deadline:
    """A request body whose every read must end by `deadline` (time.monotonic()); past it a
    read raises TimeoutError, which the API answers with a 408. Once the answer is sent,
    gunicorn reads what the application left of the body before the next request: it gets
    DRAIN seconds, then the connection closes (a 413 for 100 MB never sent must not hold
    it), while a client still sending a body it was refused can finish and read the answer."""

    DRAIN = 1.0

    def __init__(self, body, deadline: float, seconds: float):
        self._body, self._deadline, self._seconds = body, deadline, seconds

    def answered(self):
        # A body whose reading timed out is `failed`: gunicorn closes without reading more.
        self._deadline = time.monotonic() + self.DRAIN

    @property
    def failed(self) -> bool:
        """Reading raised (gunicorn's Body says so): the connection cannot serve another request."""
        return self._body.failed

    def _bounded(self, read, *args):
        error = TimeoutError(f"the request body did not arrive within {self._seconds:g} s")
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error
        with gevent.Timeout(left, error):
            return read(*args)

    def read(self, size=None):
        return self._bounded(self._body.read, size)

    def readline(self, size=None):
        return self._bounded(self._body.readline, size)

    def readlines(self, hint=None):
        return list(iter(self.readline, b""))

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration()
        return line


def _json_error(sock, status_int, reason, mesg):
    body = json.dumps({"title": reason, "description": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn writes the answers to requests it cannot parse with util.write_error, in HTML.
util.write_error = _json_error


class Logger(glogging.Logger):
    """gunicorn's logger, but an access line that its logger would drop is not made at all:
    with a logging config of our own gunicorn takes access logging as on and formats every
    request's line (about 7 % of a worker's CPU per start) for a logger set to WARNING."""

    def access(self, resp, req, environ, request_time):
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)
