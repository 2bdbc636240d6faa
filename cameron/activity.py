"""The activity protocol: call one activity over HTTP and check its answer (SPEC.md)."""

import json
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import requests

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


def _session() -> requests.Session:
    # One session per thread: keep-alive connections without sharing a Session across threads.
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
        s.trust_env = False  # activities are called directly, never through a proxy from the environment
    return s


def call(url: str, body: dict, *, connect_timeout: float, read_timeout: float,
         max_bytes: int, max_fanout: int, headers: dict | None = None) -> ActivityResult:
    """POST `body` to the activity at `url`; return its checked answer or raise ActivityError."""
    try:
        with _session().post(url, data=json.dumps(body), stream=True,
                             headers={"Content-Type": "application/json", **(headers or {})},
                             timeout=(connect_timeout, read_timeout)) as resp:
            if resp.status_code != 200:
                code = resp.status_code
                raise ActivityError(f"activity answered HTTP {code} {resp.reason or ''}".rstrip(),
                                    retriable=code >= 500 or code == 429,
                                    retry_after=_retry_after(resp.headers.get("Retry-After")))
            raw = _read_capped(resp, max_bytes)
    except requests.exceptions.ConnectTimeout:
        raise ActivityError(f"connect timed out after {connect_timeout:g} s", retriable=True) from None
    except requests.exceptions.ReadTimeout:
        raise ActivityError(f"no answer within {read_timeout:g} s (read timeout)", retriable=True) from None
    except requests.exceptions.ConnectionError as e:
        if "Read timed out" in str(e):  # a stall while streaming the body comes out this way
            raise ActivityError(f"no answer within {read_timeout:g} s (read timeout)", retriable=True) from None
        raise ActivityError(f"connection failed: {_reason(e)}", retriable=True) from None
    except requests.exceptions.RequestException as e:
        # Bad URLs, redirect loops and the like: calling again gives the same.
        raise ActivityError(f"request failed: {_reason(e)}") from None
    return parse_answer(raw, max_fanout=max_fanout)


def _read_capped(resp, max_bytes: int) -> bytes:
    chunks, size = [], 0
    for chunk in resp.iter_content(65536):
        size += len(chunk)
        if size > max_bytes:
            raise ActivityError(f"answer larger than the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


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
    # requests nests the useful part (e.g. "[Errno 111] Connection refused") a few levels down.
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "Connection reset",
                   "Remote end closed connection"):
        if marker in text:
            return marker.lower()
    return text[:300]


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
