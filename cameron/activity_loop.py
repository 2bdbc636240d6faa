"""Calls plain-HTTP activities from one thread: a selector loop drives every call of a TaskActor.

A thread per call in flight cost each call about six context switches (hand-off, the wait for
the answer, the wait for the GIL, the hand-back), which made the TaskActor the engine's
busiest process. Here a call is a small state machine on a non-blocking socket: a request
written, a status line, headers and a body (Content-Length, chunked, or up to the close)
read; connections are kept alive and reused; deadlines are checked on a 50 ms tick, retry
back-offs are timers. A read timeout here bounds the whole answer, not each read.
Transport only: the request, the answer's checks, the errors and the retries are the
protocol's (cameron.activity), as for the blocking client (activity_blocking)."""

import errno
import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque

from cameron import activity
from cameron.activity import ActivityError, Request, RetryPolicy

#: An answer's status line and headers may take this much; more is not an activity's answer.
MAX_HEAD = 65536
#: Kept-alive connections unused for this long are closed (servers drop theirs after a while).
IDLE_KEEP = 30.0
#: Addresses of host names are looked up again after this long.
DNS_TTL = 60.0
#: Bytes asked of the socket per read: under the allocator's 128 KiB mmap threshold, so that
#: a read is not an mmap and a munmap (a 256 KiB read cost two system calls each time).
RECV_SIZE = 65536
#: How often calls in progress are checked against their deadlines: a timer per call would
#: keep every call's memory until its deadline, long after most calls have ended.
TICK = 0.05
#: Connections being opened to one host and port at once; more calls wait for one of them.
#: A server whose listen backlog is small (the standard library's is 5) drops the connection
#: requests of a burst beyond it, and the kernel asks again only after 1, 3, 7... seconds.
#: The limit starts high (a remote host's handshakes take a round trip each), is halved, down
#: to the minimum, each time a request had to be made again, and grows back by one with each
#: connection that needed no second request.
MAX_CONNECTING, MIN_CONNECTING = 16, 4
#: A connection request unanswered for this long, or four handshakes of that host if longer,
#: is made again (then after twice as long, up to eight times) instead of waiting for the
#: kernel's second try a second later: by then the server has taken the burst's first
#: connections. Checked this often while connections are being opened.
SYN_AGAIN = 0.02
SYN_CHECK = 0.01
#: Once a host dropped a connection request, the requests on new connections it has not taken
#: yet are kept few: a thread-per-connection server (the standard library's) falls behind in
#: taking connections while its threads are busy, and with all of a burst's connections at
#: its door it dropped requests for 60-70 % of the calls, each of them 20 ms lost. The limit
#: is halved (to half those waiting, at least MIN_CONNECTING) at each dropped request, grows
#: slowly with each connection taken at the first request, and by one for each request the
#: server has sat on for TAKEN_AFTER without answering: it took that one, and works on it
#: (a long call), so it no longer counts. A fan-out of long calls is not held back.
TAKEN_AFTER = 0.02

_CONNECTING, _SENDING, _HEAD, _BODY = range(4)

log = logging.getLogger("cameron.activity")


def _quick_ack(sock):
    """Acknowledge what arrives at once, not after Linux's delayed-ACK wait (up to 40 ms).
    Servers that write an answer's headers and body in two sends without TCP_NODELAY (the
    standard library's http.server, many small frameworks) hold the body back under Nagle's
    rule until the headers are acknowledged: every call took 40 ms. The kernel drops the
    flag again after a while, so it is set on each read."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    except OSError:
        pass


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


class Call:
    """One task's activity call, across its attempts. `token` is the caller's, handed back."""

    __slots__ = ("token", "request", "host", "port", "head", "connect_timeout", "read_timeout",
                 "max_bytes", "max_fanout", "retry", "attempt", "started", "allow")

    def __init__(self, token, url, body, *, connect_timeout, read_timeout, max_bytes, max_fanout,
                 retry: RetryPolicy, headers=None, allow=None, signing_key: bytes | None = None):
        """Raises ActivityError for a URL that must not be called, or not by this loop."""
        request = self.request = Request(url, body, headers=headers, signing_key=signing_key)
        if request.scheme != "http":
            raise ActivityError(f"request failed: not an http URL: {url[:200]!r}")
        self.token = token
        self.host, self.port = request.host, request.port
        lines = [f"POST {request.target} HTTP/1.1", f"Host: {request.netloc}", "Accept-Encoding: identity",
                 f"Content-Length: {len(request.payload)}"] + [f"{k}: {v}" for k, v in request.headers]
        self.head = "\r\n".join(lines).encode("utf-8")  # the same for every attempt: made once
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_bytes, self.max_fanout, self.retry = max_bytes, max_fanout, retry
        self.allow = allow
        self.attempt = 0
        self.started = time.monotonic()

    def with_attempt(self, n: int) -> bytes:
        """The request's bytes for attempt number `n`."""
        extra = "".join(f"\r\n{k}: {v}" for k, v in self.request.attempt_headers(n))
        return self.head + extra.encode("utf-8") + b"\r\n\r\n" + self.request.payload


class _Exchange:
    """One attempt of a call on one connection."""

    __slots__ = ("call", "sock", "key", "reused", "out", "state", "buf", "got_any", "deadline",
                 "status", "reason", "headers", "keep", "length", "chunk", "limit", "body", "done",
                 "syn_at", "syn_tries", "counted", "sent_at")

    def __init__(self, call: Call, sock, key, reused: bool):
        self.call, self.sock, self.key, self.reused = call, sock, key, reused
        self.out = memoryview(call.with_attempt(call.attempt))
        self.state = _SENDING if reused else _CONNECTING
        self.buf = bytearray()
        self.got_any = False
        self.deadline = 0.0
        self.status, self.reason, self.headers = 0, "", {}
        self.keep = False
        self.length = None  # Content-Length, or None: chunked (self.chunk) or until the close
        self.chunk = None  # chunked: bytes still due in this chunk, -1 reading a size line, -2 the trailer
        self.limit = 0
        self.body = bytearray()
        self.done = False
        self.syn_at, self.syn_tries = 0.0, 0  # when the last connection request went out, how many
        self.counted = not reused  # in CallLoop._fresh: a new connection the server may not have taken yet
        self.sent_at = 0.0


#: The selector's mark on the socket a CallLoop watches for its caller (`watch=`).
_WATCHED = object()


class CallLoop:
    """Runs calls on its own thread. `on_done(call, result, error)` runs on that thread when a
    call ended (after its retries): result an ActivityResult, or None and the ActivityError;
    `on_round()` after each round of socket events and timers. `watch=(sock, on_readable)`:
    the loop also waits for `sock` to be readable and then begins the calls `on_readable()`
    returns; None from it stops the watch (so a caller's own socket feeds it without a thread
    of its own between them)."""

    def __init__(self, on_done, on_round=None, max_calls: int = 2048, engine_ports=set, watch=None):
        self.on_done = on_done
        self.engine_ports = engine_ports  # () -> the ports the engine listens on (allow lists)
        self.on_round = on_round  # called after each round of events: to send one wake-up for many
        self.max_calls = max_calls
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._watched_by = watch
        if watch is not None:
            self.sel.register(watch[0], selectors.EVENT_READ, _WATCHED)
        self._incoming = deque()  # calls submitted by other threads (deque appends are atomic)
        self._waiting = deque()  # calls beyond max_calls, started as others end
        self._timers = []  # heap of (when, seq, what, arg)
        self._seq = itertools.count()
        self._idle = {}  # ((host, port), address) -> [(socket, since)], most recently used last
        self._addrs = {}  # (host, port) -> (sockaddr, family, looked up at)
        self._connecting = {}  # (host, port) -> connections being opened to it now
        self._connect_limit = {}  # (host, port) -> how many may be, if not MAX_CONNECTING
        self._parked = {}  # (host, port) -> deque of calls waiting until fewer are being opened
        self._fresh = {}  # (host, port) -> exchanges on connections opened for them, until they end
        self._fresh_limit = {}  # (host, port) -> how many may be, once the host dropped a request
        self._young = set()  # counted exchanges of limited hosts whose request is sent, unanswered
        self._handshake = {}  # (host, port) -> the quickest connection to it so far, seconds
        self._syns = set()  # exchanges waiting for their connection
        self.syns_again = 0  # connection requests made again (a server's backlog was full)
        self.active = 0  # calls with an exchange under way (not those waiting to be retried)
        self._live = set()  # exchanges in progress, checked against their deadlines every TICK
        self._ticking = False
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True, name="activity-loop")
        self.thread.start()

    # --- from any thread ------------------------------------------------------

    def submit(self, calls) -> None:
        self._incoming.extend(calls)
        self._wake()

    def close(self) -> None:
        self._stop = True
        self._wake()
        self.thread.join(5)
        if not self.thread.is_alive():
            self.sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _wake(self):
        try:
            self._wake_w.send(b"!")
        except OSError:
            pass  # wake-ups pending already (or closed)

    # --- the loop ---------------------------------------------------------------

    def _run(self):
        self._at(time.monotonic() + IDLE_KEEP, self._sweep_idle, None)
        while not self._stop:
            timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else None
            for key, mask in self.sel.select(timeout):
                if key.data is None:
                    self._drain_wake()
                elif key.data is _WATCHED:
                    self._guarded(self._watched, key.fileobj)
                else:
                    self._guarded(self._step, key.data)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, what, arg = heapq.heappop(self._timers)
                self._guarded(what, arg)
            if self.on_round is not None:
                self.on_round()
        for conns in self._idle.values():
            for sock, _ in conns:
                sock.close()

    def _guarded(self, what, arg):
        """A bug of ours must end the call it hit, not the loop and every call on it."""
        try:
            what(arg)
        except Exception as e:
            if isinstance(arg, _Exchange) and not arg.done:
                self._fail(arg, activity.internal_error(e))
            else:
                log.exception("activity loop: %s failed", getattr(what, "__name__", what))

    def _at(self, when, what, arg):
        heapq.heappush(self._timers, (when, next(self._seq), what, arg))

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._incoming:
            self._begin(self._incoming.popleft())

    def _watched(self, sock):
        calls = self._watched_by[1]()
        if calls is None:
            self.sel.unregister(sock)
            return
        for call in calls:
            self._begin(call)

    def _begin(self, call: Call):
        """A call's next attempt (or a queued one, once there is room)."""
        if self.active >= self.max_calls:
            self._waiting.append(call)
            return
        self.active += 1
        call.attempt += 1
        self._open(call)

    def _open(self, call: Call, fresh: bool = False):
        key = (call.host, call.port)
        try:
            addr, family = self._address(key)
        except OSError as e:
            return self._attempt_failed(call, activity.connection_failed(e))
        if call.allow is not None:
            # Before any connection, new or kept alive (opened for another process's call).
            refused = activity.refusal(call.allow, call.host, call.port, addr[0], self.engine_ports)
            if refused:
                return self._attempt_failed(call, refused)
        idle = self._idle.get((key, addr))
        if idle and not fresh:
            ex = _Exchange(call, idle.pop()[0], (key, addr), reused=True)
            self._watch(ex, call.read_timeout)
            self.sel.register(ex.sock, selectors.EVENT_WRITE, ex)
            self._step(ex)
            return
        if not self._may_open(key):
            self._parked.setdefault(key, deque()).append(call)
            return
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            return self._attempt_failed(call, activity.connection_failed(e))
        self._connecting[key] = self._connecting.get(key, 0) + 1
        self._fresh[key] = self._fresh.get(key, 0) + 1
        ex = _Exchange(call, sock, (key, addr), reused=False)
        self._watch(ex, call.connect_timeout)
        self._syn(ex)

    def _syn(self, ex: _Exchange):
        """Ask for a connection on the exchange's socket."""
        ex.sock.setblocking(False)
        ex.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ex.syn_at = time.monotonic()
        if not self._syns:
            self._at(ex.syn_at + SYN_CHECK, self._syn_check, None)
        self._syns.add(ex)
        err = ex.sock.connect_ex(ex.key[1])
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            return self._fail(ex, activity.connection_failed(OSError(err, os.strerror(err))))
        self.sel.register(ex.sock, selectors.EVENT_WRITE, ex)

    def _syn_again(self, ex: _Exchange):
        """A connection request that the server has not answered: very likely dropped (its
        backlog was full), so a new one, not the kernel's next try a second later."""
        key = ex.key[0]
        self._connect_limit[key] = max(MIN_CONNECTING, self._connect_limit.get(key, MAX_CONNECTING) // 2)
        if key not in self._fresh_limit:
            # Requests sent before the host was limited age from now on too.
            for other in self._live:
                if other.counted and other.state >= _HEAD and other.key[0] == key:
                    self._is_young(other)
        self._fresh_limit[key] = max(MIN_CONNECTING, self._fresh[key] // 2)
        self.syns_again += 1
        self.sel.unregister(ex.sock)
        ex.sock.close()
        ex.sock = socket.socket(socket.AF_INET6 if ":" in ex.key[1][0] else socket.AF_INET, socket.SOCK_STREAM)
        ex.syn_tries += 1
        self._syn(ex)

    def _syn_check(self, _):
        now = time.monotonic()
        for ex in [ex for ex in self._syns if ex.key[0] in self._handshake]:
            wait = max(SYN_AGAIN, 4 * self._handshake[ex.key[0]]) * 2 ** min(ex.syn_tries, 3)
            if now - ex.syn_at > wait:
                self._guarded(self._syn_again, ex)
        if self._syns:
            self._at(now + SYN_CHECK, self._syn_check, None)

    def _connect_ended(self, ex: _Exchange, ok: bool):
        key = ex.key[0]
        self._syns.discard(ex)
        self._connecting[key] -= 1
        if ok:
            took = time.monotonic() - ex.syn_at
            self._handshake[key] = min(took, self._handshake.get(key, took))
            if not ex.syn_tries and key in self._connect_limit:
                self._connect_limit[key] += 1
                if self._connect_limit[key] >= MAX_CONNECTING:
                    del self._connect_limit[key]
            if key in self._fresh_limit:
                self._grow_fresh(key, 1 / self._fresh_limit[key])
        if not self._connecting[key]:
            del self._connecting[key]
        self._unpark(key)

    def _uncount(self, ex: _Exchange):
        ex.counted = False
        self._young.discard(ex)
        key = ex.key[0]
        self._fresh[key] -= 1
        if not self._fresh[key]:
            del self._fresh[key]
        self._unpark(key)

    def _is_young(self, ex: _Exchange):
        if not self._young:
            self._at(time.monotonic() + SYN_CHECK, self._age, None)
        self._young.add(ex)

    def _age(self, _):
        """Requests sent a while ago on new connections, not answered yet: the server took
        them and works on them (a thread-per-connection server's backlog is the requests it has
        not taken), so they no longer count, and one more may go."""
        now = time.monotonic()
        for ex in [ex for ex in self._young if now - ex.sent_at > TAKEN_AFTER]:
            if ex.key[0] in self._fresh_limit:
                self._grow_fresh(ex.key[0], 1)
            self._guarded(self._uncount, ex)
        if self._young:
            self._at(now + SYN_CHECK, self._age, None)

    def _grow_fresh(self, key, by: float):
        """A limited host took more: room for `by` more requests; none past max_calls."""
        self._fresh_limit[key] += by
        if self._fresh_limit[key] >= self.max_calls:
            del self._fresh_limit[key]

    def _may_open(self, key) -> bool:
        return (self._connecting.get(key, 0) < self._connect_limit.get(key, MAX_CONNECTING)
                and self._fresh.get(key, 0) < self._fresh_limit.get(key, self.max_calls))

    def _unpark(self, key):
        parked = self._parked.get(key)
        while parked and self._may_open(key):
            self._open(parked.popleft())
        if parked is not None and not parked:
            del self._parked[key]

    def _address(self, key):
        known = self._addrs.get(key)
        if known is None or time.monotonic() - known[2] > DNS_TTL:
            # Blocks this loop for the lookup: once a minute per host, and "localhost" or an
            # address take no time.
            family, _, _, _, addr = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)[0]
            known = self._addrs[key] = (addr, family, time.monotonic())
        return known[0], known[1]

    def _step(self, ex: _Exchange):
        """The socket is ready: go as far as it allows."""
        if ex.done:
            return  # an event of this round for an exchange that ended earlier in the round
        try:
            if ex.state == _CONNECTING:
                err = ex.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                self._connect_ended(ex, ok=True)
                ex.state = _SENDING
                ex.deadline = time.monotonic() + ex.call.read_timeout
            if ex.state == _SENDING:
                while ex.out:
                    ex.out = ex.out[ex.sock.send(ex.out):]
                ex.state = _HEAD
                self.sel.modify(ex.sock, selectors.EVENT_READ, ex)
                if ex.counted:
                    ex.sent_at = time.monotonic()
                    if ex.key[0] in self._fresh_limit:
                        self._is_young(ex)
                _quick_ack(ex.sock)
                return
            while not ex.done:
                data = ex.sock.recv(RECV_SIZE)
                if not data:
                    return self._closed(ex)
                ex.got_any = True
                self._feed(ex, data)
                if not ex.done:  # more to come (an answer that came whole needs no more)
                    _quick_ack(ex.sock)
        except BlockingIOError:
            return
        except ActivityError as e:
            self._fail(ex, e)
        except OSError as e:
            if ex.reused and not ex.got_any:
                return self._again(ex)
            self._fail(ex, activity.connection_failed(e))

    def _feed(self, ex: _Exchange, data: bytes):
        if ex.state == _HEAD:
            ex.buf += data
            end = ex.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(ex.buf) > MAX_HEAD:
                    raise ActivityError(f"answer's headers exceed {MAX_HEAD} bytes")
                return
            head, data = bytes(ex.buf[:end]).decode("latin-1"), bytes(ex.buf[end + 4:])
            ex.buf = bytearray()
            self._head(ex, head)
            if ex.state == _HEAD:  # a 1xx interim answer: the real one follows
                return self._feed(ex, data) if data else None
            if ex.length == 0:
                ex.keep = ex.keep and not data  # bytes after an empty answer: not reusable
                return self._complete(ex)
        if ex.chunk is not None:
            complete = self._dechunk(ex, data)
        else:
            ex.body += data
            complete = ex.length is not None and len(ex.body) >= ex.length
            if complete:
                ex.keep = ex.keep and len(ex.body) == ex.length
                del ex.body[ex.length:]
        if len(ex.body) > ex.limit:
            if ex.status == 200:
                raise activity.too_large(ex.call.max_bytes)
            ex.keep = False  # the rest of a long error page: not worth reading
            complete = True
        if complete:
            self._complete(ex)

    def _head(self, ex: _Exchange, head: str):
        status_line, *lines = head.split("\r\n")
        try:
            version, status, *reason = status_line.split(" ", 2)
            ex.status, ex.reason = int(status), (reason[0] if reason else "")
            if not version.startswith("HTTP/"):
                raise ValueError
        except ValueError:
            raise activity.connection_failed(f"bad status line {status_line[:80]!r}") from None
        if 100 <= ex.status < 200:
            return
        headers = ex.headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        ex.keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        ex.limit = activity.body_limit(ex.status, ex.call.max_bytes)
        ex.state = _BODY
        if "chunked" in headers.get("transfer-encoding", "").lower():
            ex.chunk = -1
        elif "content-length" in headers:
            try:
                ex.length = int(headers["content-length"])
                if ex.length < 0:
                    raise ValueError
            except ValueError:
                raise activity.connection_failed("bad Content-Length") from None
        elif ex.status in (204, 304):
            ex.length = 0
        else:
            ex.keep = False  # the answer ends when the activity closes the connection

    def _dechunk(self, ex: _Exchange, data: bytes) -> bool:
        """Chunked transfer coding: the chunks' data to the body; True once the last is in."""
        buf = ex.buf
        buf += data
        pos, complete = 0, False
        while not complete:
            if ex.chunk > 0:  # chunk data, then its CRLF
                take = min(ex.chunk - 2, len(buf) - pos)
                ex.body += buf[pos:pos + take]
                pos += take
                ex.chunk -= take
                if ex.chunk > 2 or len(buf) - pos < 2:
                    break
                pos += 2
                ex.chunk = -1
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_HEAD:
                    raise activity.connection_failed("bad chunked answer")
                break
            line = bytes(buf[pos:nl])
            pos = nl + 2
            if ex.chunk == -2:  # the trailer: it ends with an empty line
                if not line:
                    ex.keep = ex.keep and pos == len(buf)
                    complete = True
                continue
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise activity.connection_failed("bad chunked answer") from None
            ex.chunk = size + 2 if size else -2
        del buf[:pos]
        return complete

    def _closed(self, ex: _Exchange):
        """The activity closed the connection."""
        if ex.state == _BODY and ex.chunk is None and ex.length is None:
            ex.keep = False
            return self._complete(ex)  # an answer that ends with the connection
        if ex.reused and not ex.got_any:
            return self._again(ex)  # it closed a kept-alive connection meanwhile
        reason = "remote end closed connection" if not ex.got_any else "answer cut short"
        self._fail(ex, activity.connection_failed(reason))

    def _again(self, ex: _Exchange):
        """A kept-alive connection turned out closed: the same attempt on a new one."""
        self._drop(ex, keep=False)
        self._open(ex.call, fresh=True)

    def _watch(self, ex: _Exchange, timeout: float):
        ex.deadline = time.monotonic() + timeout
        self._live.add(ex)
        if not self._ticking:
            self._ticking = True
            self._at(time.monotonic() + TICK, self._tick, None)

    def _tick(self, _):
        now = time.monotonic()
        for ex in [ex for ex in self._live if ex.deadline <= now]:
            self._guarded(self._expire, ex)
        self._ticking = bool(self._live)
        if self._ticking:
            self._at(now + TICK, self._tick, None)

    def _expire(self, ex: _Exchange):
        if ex.state == _CONNECTING:
            self._fail(ex, activity.connect_timed_out(ex.call.connect_timeout))
        else:
            self._fail(ex, activity.read_timed_out(ex.call.read_timeout))

    def _complete(self, ex: _Exchange):
        self._drop(ex, keep=ex.keep)
        body, ex.body = bytes(ex.body), None
        try:
            result = activity.answer(ex.status, ex.reason, ex.headers.get("retry-after"), body,
                                     max_fanout=ex.call.max_fanout)
        except ActivityError as e:
            return self._attempt_failed(ex.call, e)
        self._end(ex.call, result, None)

    def _fail(self, ex: _Exchange, error: ActivityError):
        self._drop(ex, keep=False)
        ex.body = None
        self._attempt_failed(ex.call, error)

    def _drop(self, ex: _Exchange, keep: bool):
        """The exchange is over: its connection goes back to the idle ones, or is closed."""
        ex.done = True
        self._live.discard(ex)
        if ex.state == _CONNECTING:
            self._connect_ended(ex, ok=False)
        if ex.counted:
            self._uncount(ex)
        try:
            self.sel.unregister(ex.sock)
        except (KeyError, ValueError):
            pass  # never registered: the connect failed at once
        if keep:
            self._idle.setdefault(ex.key, []).append((ex.sock, time.monotonic()))
        else:
            ex.sock.close()

    def _attempt_failed(self, call: Call, error: ActivityError):
        self.active -= 1
        wait = call.retry.wait_before(call.attempt, error)
        if wait is not None:
            self._at(time.monotonic() + wait, self._retry, call)
            self._next_waiting()
            return
        self._end(call, None, activity.final_error(error, call.attempt), counted=False)

    def _retry(self, call: Call):
        self._begin(call)

    def _end(self, call: Call, result, error, counted=True):
        if counted:
            self.active -= 1
        self._next_waiting()
        self.on_done(call, result, error)

    def _next_waiting(self):
        while self._waiting and self.active < self.max_calls:
            self._begin(self._waiting.popleft())

    def _sweep_idle(self, _):
        old = time.monotonic() - IDLE_KEEP
        for key, conns in list(self._idle.items()):
            for sock, since in conns:
                if since < old:
                    sock.close()
            kept = [(s, t) for s, t in conns if t >= old]
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        self._at(time.monotonic() + IDLE_KEEP, self._sweep_idle, None)
