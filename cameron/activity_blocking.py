"""Calls activities with blocking http.client on the caller's thread, and a pool of threads to
make many such calls at once: the TaskActor's https calls. Transport only: the request, the
answer's checks, the errors and the retries are the protocol's (cameron.activity)."""

import heapq
import http.client
import itertools
import queue
import socket
import threading
import time

from cameron import activity
from cameron.activity import ActivityError, ActivityResult, Request, RetryPolicy

#: One attempt: what a call without a retry policy makes.
ONCE = RetryPolicy(max_attempts=1)
#: A pool thread with nothing to do for this long ends: a burst of a thousand slow calls
#: must not keep a thousand threads' memory for ever.
IDLE_EXIT = 30.0


def _no_ports() -> set:
    return set()


class _Reaper:
    """Ends https exchanges that outlive their deadline: http.client's timeout bounds each read,
    so an answer that drips in a byte at a time would never time out. One thread for all."""

    def __init__(self):
        self._cond = threading.Condition()
        self._heap = []
        self._seq = itertools.count()
        self._thread = None

    def watch(self, sock, seconds: float) -> list:
        """A token: [expired, live, socket]; pass it to done() when the exchange is over."""
        token = [False, True, sock]
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._seq), token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="https-deadlines")
                self._thread.start()
            self._cond.notify()
        return token

    def done(self, token: list):
        with self._cond:  # so the socket is never shut once its next call has begun
            token[1] = False

    def _run(self):
        with self._cond:
            while True:
                while self._heap and not self._heap[0][2][1]:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                token = heapq.heappop(self._heap)[2]
                token[0] = True
                try:
                    # The plain socket's shutdown, even for TLS: the reading thread's blocked
                    # recv returns, and its SSL object stays in place for it.
                    socket.socket.shutdown(token[2], socket.SHUT_RDWR)
                except OSError:
                    pass


_reaper = _Reaper()
_local = threading.local()


def _connection(scheme: str, netloc: str, connect_timeout: float) -> tuple[http.client.HTTPConnection, bool]:
    """This thread's kept-alive connection to `netloc`, and whether it has served a call already.
    http.client rather than requests: a call costs a fifth of the CPU, and at thousands of
    calls a second the engine's TaskActors are CPU-bound."""
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    conn = conns.get((scheme, netloc))
    if conn is not None and conn.sock is not None:
        return conn, True
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = conns[(scheme, netloc)] = cls(netloc, timeout=connect_timeout)
    conn._create_connection = lambda address, timeout, source: _checked_connect(conn, address, timeout)
    return conn, False


def _checked_connect(conn, address, timeout):
    """http.client's connect, to the address the allow list was checked against (a name is
    looked up once here, so a second lookup cannot point the connection elsewhere)."""
    allow, engine_ports = conn.cameron_allow
    host, port = address
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    if allow is not None:
        refused = activity.refusal(allow, host, port, sockaddr[0], engine_ports)
        if refused:
            raise refused
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _forget(scheme: str, netloc: str):
    conn = _local.conns.pop((scheme, netloc), None)
    if conn is not None:
        conn.close()


def call(url: str, body: dict, *, connect_timeout: float, read_timeout: float, max_bytes: int,
         max_fanout: int, retry: RetryPolicy = ONCE, headers: dict | None = None, allow=None,
         engine_ports=_no_ports, signing_key: bytes | None = None) -> tuple:
    """The call and its retries, waited for on this thread: (result, None, attempts) or
    (None, the task's ActivityError, attempts). `allow` (an AllowList) is checked against the
    address connected to; `read_timeout` bounds the whole answer."""
    attempt = 1
    try:
        request = Request(url, body, headers=headers, signing_key=signing_key)
        while True:
            try:
                return _attempt(request, attempt, connect_timeout, read_timeout, max_bytes, max_fanout,
                                allow, engine_ports), None, attempt
            except ActivityError as e:
                wait = retry.wait_before(attempt, e)
                if wait is None:
                    raise
            time.sleep(wait)  # a waiting thread costs little, and the actor stays free
            attempt += 1
    except ActivityError as e:
        error = e
    except Exception as e:
        error = activity.internal_error(e)
    return None, activity.final_error(error, attempt), attempt


def _attempt(request: Request, attempt: int, connect_timeout, read_timeout, max_bytes, max_fanout,
             allow, engine_ports) -> ActivityResult:
    # UTF-8, as the selector loop sends them: http.client would refuse values beyond Latin-1.
    headers = {k: v.encode() for k, v in request.headers + request.attempt_headers(attempt)}
    scheme, netloc = request.scheme, request.netloc
    while True:
        conn, reused = _connection(scheme, netloc, connect_timeout)
        conn.cameron_allow = (allow, engine_ports)
        try:
            if reused and allow is not None:
                refused = activity.refusal(allow, request.host, request.port, conn.sock.getpeername()[0],
                                           engine_ports)
                if refused:
                    raise refused
            status, reason, retry_after, raw = _exchange(conn, request, headers, connect_timeout,
                                                         read_timeout, max_bytes)
            break
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
            _forget(scheme, netloc)
            if reused:
                continue  # the activity closed a kept-alive connection meanwhile: a new one
            raise activity.connection_failed(e) from None
        except _ConnectTimeout:
            _forget(scheme, netloc)
            raise activity.connect_timed_out(connect_timeout) from None
        except TimeoutError:
            _forget(scheme, netloc)
            raise activity.read_timed_out(read_timeout) from None
        except ActivityError:
            _forget(scheme, netloc)  # an answer read only in part: the connection is spent
            raise
        except (OSError, http.client.HTTPException) as e:
            _forget(scheme, netloc)
            raise activity.connection_failed(e) from None
    return activity.answer(status, reason, retry_after, raw, max_fanout=max_fanout)


class _ConnectTimeout(Exception):
    pass


def _exchange(conn, request: Request, headers: dict, connect_timeout, read_timeout, max_bytes):
    """One request and its whole answer: (status, reason, Retry-After header, body)."""
    if conn.sock is None:
        try:
            conn.connect()
        except TimeoutError:
            raise _ConnectTimeout() from None
    conn.sock.settimeout(read_timeout)  # this call's own: a kept-alive connection had another's
    deadline = _reaper.watch(conn.sock, read_timeout)
    try:
        conn.request("POST", request.target, request.payload, headers)
        # Acknowledge the answer's first segment at once (see activity_loop's quick_ack).
        conn.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", 12), 1)
        resp = conn.getresponse()
        limit = activity.body_limit(resp.status, max_bytes)
        raw = resp.read(limit + 1)
    except Exception:
        if deadline[0]:
            raise TimeoutError() from None  # the reaper cut an answer that came too slowly
        raise
    finally:
        _reaper.done(deadline)
    if deadline[0]:
        raise TimeoutError()
    if len(raw) > limit:
        if resp.status == 200:
            raise activity.too_large(max_bytes)
        raw = raw[:limit]  # the rest of a long error page: not worth reading
    if resp.will_close or not resp.isclosed():
        conn.close()  # closing, or the rest of a long error page unread: not reusable
    return resp.status, resp.reason, resp.getheader("Retry-After"), raw


class CallPool:
    """Runs `run(*args)` for each submit(*args) on a thread: one per call in flight, up to
    `most` (more wait their turn), an idle one reused before a new one is made."""

    def __init__(self, run, most: int):
        self.run, self.most = run, most
        self._todo = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.threads = self.idle = 0

    def submit(self, *args) -> None:
        self._todo.put(args)
        with self._lock:
            grow = self.idle == 0 and self.threads < self.most
            if grow:
                self.threads += 1
            else:
                self.idle -= 1  # claimed by this call, so the next one counts right
        if grow:
            # Daemon threads: stopping the engine must not wait for slow activities.
            threading.Thread(target=self._work, daemon=True, name="activity").start()

    def _work(self):
        while True:
            try:
                args = self._todo.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    # Leave only if another waiting thread is unclaimed: `idle` counts waiting
                    # threads not yet promised to a queued call.
                    if self.idle > 0:
                        self.idle -= 1
                        self.threads -= 1
                        return
                continue
            self.run(*args)
            with self._lock:
                self.idle += 1
