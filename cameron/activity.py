"""The activity protocol, whatever carries it: the request Cameron sends (target, headers,
signature, JSON body), the answer it accepts, the error recorded when a call fails, which
failures are worth another call and how long to wait before it. The two transports,
activity_loop (plain http, one selector loop) and activity_blocking (https, http.client on
threads), only move the bytes and ask this module everything else."""

import functools
import hashlib
import hmac
import json
import random
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

from cameron.allow import host_port, name_problem, url_problem
from cameron.lane import per_task

#: Of an answer other than 200 at most this much is read: its text is not kept, only its status.
ERROR_BODY = 65536


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

    def wait_before(self, attempt: int, error: ActivityError) -> float | None:
        """Seconds to wait before the next call after attempt number `attempt` failed with
        `error`, or None: that failure is the task's (it will not change, or no attempt is left)."""
        if error.retriable and attempt < self.max_attempts:
            return self.delay(attempt, error.retry_after)
        return None


@per_task
class Definition:
    """A next activity named in an answer."""

    name: str
    url: str


@per_task
class ActivityResult:
    name: str
    data: object
    #: The answer's `next_activities` object as sent, or None when it had none (a leaf).
    next_activities: object
    definitions: tuple


# --- the request -----------------------------------------------------------------------

def task_headers(job_uuid: str, n: int, name: str, again: bool = False) -> dict:
    """The headers naming the job and task a call is for: an activity's key to tell a call it
    already handled (`N:name`, unique in the job); `X-Cameron-Again: 1` when the call is made
    again because an engine part died while an earlier one was in flight."""
    headers = {"X-Cameron-Job": job_uuid, "X-Cameron-Task": f"{n}:{name}"}
    if again:
        headers["X-Cameron-Again"] = "1"
    return headers


def call_options(call, config) -> dict:
    """What either transport takes besides the URL and body for one task's call (an
    ActivityCall), under the engine's settings."""
    return dict(connect_timeout=call.connect_timeout, read_timeout=call.read_timeout,
                max_bytes=config.max_response_bytes, max_fanout=config.max_fanout,
                retry=call.retry, allow=call.allow, signing_key=config.signing_key.encode() or None,
                headers=task_headers(call.job_uuid, call.n, call.name, call.again))


class Request:
    """One task's call as sent, the same for each attempt but for `attempt_headers`. Raises
    ActivityError for a URL that must not be called."""

    __slots__ = ("scheme", "netloc", "host", "port", "target", "payload", "headers", "signing_key")

    def __init__(self, url: str, body: dict, *, headers: dict | None = None,
                 signing_key: bytes | None = None):
        problem, self.scheme, self.netloc, self.host, self.port, self.target = _address(url)
        if problem:
            raise ActivityError(f"request failed: the URL {problem}: {url[:200]!r}")
        self.payload = json.dumps(body).encode()
        #: (name, value) pairs sent with every attempt. Task names come from activities'
        #: answers: no line breaks may reach the request.
        self.headers = [("Content-Type", "application/json")] + [
            (k, " ".join(str(v).splitlines())) for k, v in (headers or {}).items()]
        self.signing_key = signing_key

    def attempt_headers(self, attempt: int) -> list:
        """The headers of attempt number `attempt` only: X-Cameron-Attempt, and with a key the
        signature, fresh for each attempt (an activity may refuse an old one)."""
        out = [("X-Cameron-Attempt", str(attempt))]
        if self.signing_key:
            out.append(("X-Cameron-Signature", signature(self.signing_key, self.payload)))
        return out


@functools.lru_cache(maxsize=4096)
def _address(url: str) -> tuple:
    """(what is wrong with `url` or None, scheme, netloc, host, port, request target): the same
    for every call to one activity, so worked out once (a foo job's calls spent a third of
    their building on it)."""
    problem = url_problem(url)
    if problem:
        return problem, None, None, None, None, None
    parts = urlsplit(url)
    return (None, parts.scheme, parts.netloc, *host_port(url), request_target(url))


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


def refusal(allow, host: str, port: int, ip: str, engine_ports) -> ActivityError | None:
    """The error to record when the process's allow list forbids the address about to be
    used (checked on every connection, new or kept alive), or None."""
    problem = allow.check(host, port, ip, engine_ports)
    return ActivityError(f"request refused: {problem}") if problem else None


# --- what went wrong ------------------------------------------------------------------

def connection_failed(cause: Exception | str) -> ActivityError:
    """The activity could not be reached, or broke the exchange off: worth calling again."""
    return ActivityError(f"connection failed: {cause if isinstance(cause, str) else _reason(cause)}",
                         retriable=True)


def connect_timed_out(seconds: float) -> ActivityError:
    return ActivityError(f"connect timed out after {seconds:g} s", retriable=True)


def read_timed_out(seconds: float) -> ActivityError:
    """The whole answer did not come within the read timeout (not each read: a slow drip too)."""
    return ActivityError(f"no answer within {seconds:g} s (read timeout)", retriable=True)


def too_large(max_bytes: int) -> ActivityError:
    return ActivityError(f"answer larger than the {max_bytes}-byte limit")


def internal_error(e: Exception) -> ActivityError:
    """A bug of ours while calling: it must still end the task, not leave it running."""
    return ActivityError(f"internal error calling the activity: {type(e).__name__}: {e}")


def final_error(error: ActivityError, attempts: int) -> ActivityError:
    """The error recorded on the task: its last attempt's, saying how many were made."""
    if attempts > 1:
        return ActivityError(f"{error} (after {attempts} attempts)", retriable=error.retriable)
    return error


def _reason(e: Exception) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError):  # http.client's RemoteDisconnected too
        return "connection reset"
    if isinstance(e, socket.gaierror):
        return "name or service not known"
    return (str(e) or type(e).__name__)[:300]


# --- the answer -------------------------------------------------------------------------

def body_limit(status: int, max_bytes: int) -> int:
    """How much of an answer's body to read: a 200's is held to max_bytes; of another, no
    more than ERROR_BODY is read (then the connection goes), and its size is no error."""
    return max_bytes if status == 200 else ERROR_BODY


def answer(status: int, reason: str | None, retry_after: str | None, body: bytes, *,
           max_fanout: int) -> ActivityResult:
    """The result of an answer read whole (its status, reason phrase, Retry-After header and
    body), or ActivityError: 5xx and 429 are worth another call, other statuses are not."""
    if status != 200:
        raise ActivityError(f"activity answered HTTP {status} {reason or ''}".rstrip(),
                            retriable=status >= 500 or status == 429, retry_after=_retry_after(retry_after))
    return parse_answer(body, max_fanout=max_fanout)


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
