"""The activity protocol: the request Cameron sends, the answer it accepts, and a blocking
client (http.client) for https activities."""

import hashlib
import heapq
import hmac
import http.client
import itertools
import json
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

from cameron.allow import host_port, name_problem, url_problem


class ActivityError(Exception):
    """The call did not give a usable answer; str() is what gets recorded on the task.

    `retriable` says whether calling again may help: the activity could not be reached, did
    not answer in time, or answered 5xx or 429. A 4xx or a malformed answer will not change.
    """

    def __init__(self, message: str, *, retriable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.retriable = retriable
        #: Seconds the activity asked us to wait (its Retry-After header), if it said.
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How often one task's activity is called and how long to wait between calls."""

    max_attempts: int = 3
    backoff: float = 0.5
    backoff_max: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed call number `attempt` (1-based): exponential backoff
        with jitter in [d/2, d] (so retries of many tasks spread out, yet never come early),
        and no sooner than the activity's Retry-After, within backoff_max."""
        d = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        d = random.uniform(d / 2, d)
        if retry_after is not None:
            d = max(d, min(retry_after, self.backoff_max))
        return d


@dataclass(frozen=True)
class Definition:
    """A next activity named in an answer."""

    name: str
    url: str


@dataclass(frozen=True)
class ActivityResult:
    name: str
    data: object
    #: The answer's `next_activities` object as sent, or None when it had none (a leaf).
    next_activities: object
    definitions: tuple


def request_target(url: str) -> str:
    """The path and query to put on the request line, characters beyond ASCII %-encoded."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return quote(target, safe="!#$%&'()*+,/:;=?@[]~")


def signature(key: bytes, body: bytes, now: float | None = None) -> str:
    """The X-Cameron-Signature header for `body`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">`, so that an activity can tell Cameron's calls (and their age) from others."""
    t = str(int(time.time() if now is None else now))
    return f"t={t},v1={hmac.new(key, t.encode() + b'.' + body, hashlib.sha256).hexdigest()}"


def signature_problem(key: bytes, header: str | None, body: bytes, *, tolerance: float = 300,
                      now: float | None = None) -> str | None:
    """Why an activity should refuse a call (a missing, forged or old signature), or None."""
    fields = dict(part.split("=", 1) for part in (header or "").split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return "no X-Cameron-Signature"
    expected = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields.get("v1", "")):
        return "bad signature"
    if abs((time.time() if now is None else now) - t) > tolerance:
        return "signature too old"
    return None


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


def _check(allow, host, port, ip, engine_ports):
    problem = allow.check(host, port, ip, engine_ports)
    if problem:
        raise ActivityError(f"request refused: {problem}")


def _checked_connect(conn, address, timeout):
    """http.client's connect, to the address the allow list was checked against (a name is
    looked up once here, so a second lookup cannot point the connection elsewhere)."""
    allow, engine_ports = conn.cameron_allow
    host, port = address
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    if allow is not None:
        _check(allow, host, port, sockaddr[0], engine_ports)
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


def call(url: str, body: dict, *, connect_timeout: float, read_timeout: float,
         max_bytes: int, max_fanout: int, headers: dict | None = None, allow=None,
         engine_ports=_no_ports, signing_key: bytes | None = None) -> ActivityResult:
    """POST `body` to the activity at `url`; return its checked answer or raise ActivityError.
    `allow` (an AllowList) is checked against the address connected to; `read_timeout`
    bounds the whole answer."""
    problem = url_problem(url)
    if problem:
        raise ActivityError(f"request failed: the URL {problem}: {url[:200]!r}")
    parts = urlsplit(url)
    host, port = host_port(url)
    path = request_target(url)
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    if signing_key:
        headers["X-Cameron-Signature"] = signature(signing_key, payload)
    # UTF-8, as the selector loop sends them: http.client would refuse names beyond Latin-1.
    headers = {k: str(v).encode() for k, v in headers.items()}
    while True:
        conn, reused = _connection(parts.scheme, parts.netloc, connect_timeout)
        conn.cameron_allow = (allow, engine_ports)
        try:
            if reused and allow is not None:
                _check(allow, host, port, conn.sock.getpeername()[0], engine_ports)
            status, reason, retry_after, raw = _exchange(conn, path, payload, headers,
                                                         connect_timeout, read_timeout, max_bytes)
            break
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
            _forget(parts.scheme, parts.netloc)
            if reused:
                continue  # the activity closed a kept-alive connection meanwhile: a new one
            raise ActivityError(f"connection failed: {_reason(e)}", retriable=True) from None
        except _ConnectTimeout:
            _forget(parts.scheme, parts.netloc)
            raise ActivityError(f"connect timed out after {connect_timeout:g} s", retriable=True) from None
        except TimeoutError:
            _forget(parts.scheme, parts.netloc)
            raise ActivityError(f"no answer within {read_timeout:g} s (read timeout)", retriable=True) from None
        except ActivityError:
            _forget(parts.scheme, parts.netloc)  # an answer read only in part: the connection is spent
            raise
        except (OSError, http.client.HTTPException) as e:
            _forget(parts.scheme, parts.netloc)
            raise ActivityError(f"connection failed: {_reason(e)}", retriable=True) from None
    if status != 200:
        raise ActivityError(f"activity answered HTTP {status} {reason or ''}".rstrip(),
                            retriable=status >= 500 or status == 429, retry_after=retry_after)
    return parse_answer(raw, max_fanout=max_fanout)


class _ConnectTimeout(Exception):
    pass


def _exchange(conn, path, payload, headers, connect_timeout, read_timeout, max_bytes):
    """One request and its whole answer: (status, reason, Retry-After seconds, body)."""
    if conn.sock is None:
        try:
            conn.connect()
        except TimeoutError:
            raise _ConnectTimeout() from None
    conn.sock.settimeout(read_timeout)  # this call's own: a kept-alive connection had another's
    deadline = _reaper.watch(conn.sock, read_timeout)
    try:
        conn.request("POST", path, payload, headers)
        # Acknowledge the answer's first segment at once (see activity_loop._quick_ack).
        conn.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", 12), 1)
        resp = conn.getresponse()
        raw = resp.read(max_bytes + 1) if resp.status == 200 else resp.read(65536)
    except Exception:
        if deadline[0]:
            raise TimeoutError() from None  # the reaper cut an answer that came too slowly
        raise
    finally:
        _reaper.done(deadline)
    if deadline[0]:
        raise TimeoutError()
    if len(raw) > max_bytes:
        raise ActivityError(f"answer larger than the {max_bytes}-byte limit")
    if resp.will_close or not resp.isclosed():
        conn.close()  # closing, or the rest of a long error page unread: not reusable
    return resp.status, resp.reason, _retry_after(resp.getheader("Retry-After")), raw


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _reason(e: Exception) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, http.client.RemoteDisconnected):
        return "remote end closed connection"
    if isinstance(e, socket.gaierror):
        return "name or service not known"
    return (str(e) or type(e).__name__)[:300]


def parse_answer(raw: bytes, *, max_fanout: int) -> ActivityResult:
    """Check an activity's answer against the protocol; raise ActivityError saying what is off."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        snippet = raw[:80].decode("utf-8", "replace")
        raise ActivityError(f"answer is not JSON: {snippet!r}") from None
    if not isinstance(doc, dict):
        raise ActivityError(f"answer must be a JSON object, got {type(doc).__name__}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ActivityError("answer has no 'name' string")
    if "data" not in doc:
        raise ActivityError("answer has no 'data'")
    nxt = doc.get("next_activities")
    definitions = ()
    if nxt is not None:
        if not isinstance(nxt, dict) or not isinstance(nxt.get("definitions", []), list):
            raise ActivityError("'next_activities' must be an object with a 'definitions' list")
        defs = nxt.get("definitions", [])
        if len(defs) > max_fanout:
            raise ActivityError(f"{len(defs)} next activities exceed the fan-out limit of {max_fanout}")
        checked = []
        for i, d in enumerate(defs):
            if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
                raise ActivityError(f"next_activities.definitions[{i}] needs a 'name' string")
            problem = name_problem(d["name"])
            if problem:
                raise ActivityError(f"next_activities.definitions[{i}] 'name' {problem}")
            if not isinstance(d.get("url"), str):
                raise ActivityError(f"next_activities.definitions[{i}] needs an http(s) 'url'")
            problem = url_problem(d["url"])
            if problem:
                raise ActivityError(f"next_activities.definitions[{i}] 'url' {problem}")
            checked.append(Definition(d["name"], d["url"]))
        definitions = tuple(checked)
    return ActivityResult(name=name, data=doc["data"], next_activities=nxt, definitions=definitions)
