"""A job as its hash holds it: how values are encoded (times, data, a task's answer or error)
and how a hash is read back (the API's document and summary, the tasks to resume, cursors)."""

import base64
import binascii
import json
import math
import time

from cameron import keys


_second = (None, "")  # (a second since the epoch, now() for it): a job's moments ask many times


def now() -> str:
    """The time format of the original (`MM-DD-YYYY hh:mm:ss`), in UTC."""
    global _second
    second = int(time.time())
    if second != _second[0]:
        _second = (second, time.strftime("%m-%d-%Y %H:%M:%S", time.gmtime(second)))
    return _second[1]


def ms() -> int:
    """Index scores: milliseconds since the epoch."""
    return int(time.time() * 1000)


#: `output.next_activities` of a leaf (an answer without next_activities) and of an error,
#: as the original wrote it.
UNDEFINED = "undefined"


def encode_answer(data, next_activities) -> tuple[str, str]:
    """A task's answer as its hash keeps it: `output.data` and `output.next_activities`, as
    JSON text (UNDEFINED for a leaf)."""
    return json.dumps(data), UNDEFINED if next_activities is None else json.dumps(next_activities)


def encode_error(error: str, url: str) -> tuple[str, str]:
    """A task's error as its hash keeps it: `output.data` = {"error", "url"}, no next activities."""
    return json.dumps({"error": error, "url": url}), UNDEFINED


def encode_data(data) -> tuple[str, bool]:
    """A job's data as stored: a string as it is, any other JSON value as JSON text (flagged)."""
    return (data, False) if isinstance(data, str) else (json.dumps(data, ensure_ascii=False), True)


def decode_data(h: dict):
    """A job's data from its hash fields, as the client gave it."""
    data = h.get(keys.JOB_DATA)
    return json.loads(data) if data is not None and h.get(keys.JOB_DATA_JSON) == "1" else data


def document(process: str, key: str, uuid: str, h: dict) -> dict:
    """Turn a job hash into the API's job document (the original's field names), tasks in start order."""
    status = h.get(keys.JOB_STATUS, "")
    tasks = []
    for t in tasks_of(h):
        n, current = t["id"], t["status"]
        task = {
            "id": t["id"],
            "name": t["name"],
            "requestor": t["requestor"],
            "status": {"current": current, "time": h.get(keys.task_time(n, current))},
            "data": _json_or_text(t["output"]) if t["output"] is not None else None,
            "index": t["n"],
            "url": t["url"],
            "parent": t["parent"] if t["parent"] >= 0 else None,
        }
        duration = h.get(keys.task_field(n, "duration_ms"))
        if duration is not None:
            task["duration_ms"] = int(duration)
        attempts = h.get(keys.task_field(n, "attempts"))
        if attempts is not None:
            task["attempts"] = int(attempts)
        tasks.append(task)
    doc = {
        "process": process,
        "uuid": uuid,
        "key": key,
        "data": decode_data(h),
        "requestor": h.get(keys.JOB_REQUESTOR),
        "status": {"current": status, "time": h.get(keys.job_time(status))},
        "tasks": tasks,
    }
    if keys.JOB_ERRORS in h:
        doc["errors"] = int(h[keys.JOB_ERRORS])
    if keys.JOB_CANCEL_REQUESTED in h:
        doc["cancel_requested"] = h[keys.JOB_CANCEL_REQUESTED]
    return doc


SUMMARY_FIELDS = (keys.JOB_STATUS, keys.JOB_REQUESTOR, keys.job_time(keys.SCHEDULED), keys.JOB_ERRORS,
                   keys.JOB_CANCEL_REQUESTED) + tuple(keys.job_time(s) for s in keys.JOB_STATES[1:])


def summary(tag: str, h: dict) -> dict:
    """A job as the listings show it: who, when, and how it stands, without its tasks."""
    process, key, uuid = keys.parse_tag(tag)
    status = h.get(keys.JOB_STATUS, "")
    s = {"process": process, "key": key, "uuid": uuid, "requestor": h.get(keys.JOB_REQUESTOR),
         "status": {"current": status, "time": h.get(keys.job_time(status))},
         "scheduled": h.get(keys.job_time(keys.SCHEDULED))}
    if keys.JOB_ERRORS in h:
        s["errors"] = int(h[keys.JOB_ERRORS])
    if keys.JOB_CANCEL_REQUESTED in h:
        s["cancel_requested"] = h[keys.JOB_CANCEL_REQUESTED]
    return s


def encode_cursor(cursor: tuple | None) -> str | None:
    """The listing cursor as the API hands it out: opaque, URL-safe."""
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple:
    """Inverse of encode_cursor; ValueError for anything it did not make."""
    try:
        score, tag = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        keys.parse_tag(tag)
        # NaN or an infinity (Python's JSON reads them) would make Redis refuse the range.
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError, OverflowError):
        raise ValueError("not a cursor this server handed out") from None
    if not isinstance(tag, str) or not tag.startswith(keys.PREFIX):
        raise ValueError("not a cursor this server handed out")
    return float(score), tag


def tasks_of(h: dict) -> list[dict]:
    """The tasks recorded in a job hash, in start order, as a runner needs them to resume:
    `n` its start order, `parent` its parent's n (-1 for the start task)."""
    tasks = []
    for t in keys.task_ids(h):
        f = lambda name: h.get(keys.task_field(t, name))  # noqa: E731
        tasks.append({"n": int(f("index")), "id": t, "name": f("name"), "url": f("url"),
                      "requestor": f("requestor"), "parent": f("parent") or "",
                      "status": f("status.current"), "output": f("output.data"),
                      "next": f("output.next_activities")})
    tasks.sort(key=lambda task: task["n"])
    index = {task["id"]: task["n"] for task in tasks}
    for task in tasks:
        task["parent"] = index[task["parent"]] if task["parent"] else -1
    return tasks


def _json_or_text(s: str):
    try:
        return json.loads(s)
    except ValueError:
        return s
