"""The activity protocol: call one activity over HTTP and check its answer (README: The activity protocol)."""

import http.client
import json
import random
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from urllib.parse import urlsplit

from cameron.catalog import is_http_url


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
    return conn, False


def _forget(scheme: str, netloc: str):
    conn = _local.conns.pop((scheme, netloc), None)
    if conn is not None:
        conn.close()


def call(url: str, body: dict, *, connect_timeout: float, read_timeout: float,
         max_bytes: int, max_fanout: int, headers: dict | None = None) -> ActivityResult:
    """POST `body` to the activity at `url`; return its checked answer or raise ActivityError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ActivityError(f"request failed: not an http(s) URL: {url[:200]!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    while True:
        conn, reused = _connection(parts.scheme, parts.netloc, connect_timeout)
        try:
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
    conn.request("POST", path, payload, headers)
    resp = conn.getresponse()
    raw = resp.read(max_bytes + 1) if resp.status == 200 else resp.read(65536)
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
            if not is_http_url(d.get("url")):
                raise ActivityError(f"next_activities.definitions[{i}] needs an http(s) 'url'")
            checked.append(Definition(d["name"], d["url"]))
        definitions = tuple(checked)
    return ActivityResult(name=name, data=doc["data"], next_activities=nxt, definitions=definitions)
