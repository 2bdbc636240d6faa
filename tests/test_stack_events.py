"""The job event stream (Server-Sent Events) through gunicorn, the actors and Redis."""

import json
import signal
import time

import pytest
import requests
from conftest import Engine, free_port, start_web, wait_until

from cameron import keys

pytestmark = pytest.mark.stack


def read_events(response, stop_after: int | None = None) -> list[dict]:
    """Parse an SSE body into [{"id", "event", "data"}] until it ends (or `stop_after` events)."""
    events, current = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "event" in current:
                events.append(current)
                if stop_after is not None and len(events) >= stop_after:
                    break
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


def stream(engine, uuid: str, last_event_id: str | None = None, **kwargs):
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return requests.get(f"{engine.base_url}/api/job/{uuid}/events", headers=headers, stream=True,
                        timeout=30, **kwargs)


def started_uuid(engine, process: str) -> str:
    resp = engine.start_job(process)
    assert resp.status_code == 201, resp.text
    return resp.json()["uuid"]


def check_order(events: list[dict], final: str):
    """Every change once, in an order the job can have had them in."""
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert [e["data"]["status"] for e in events if e["event"] == "job"][-1] == final
    assert events[-1]["event"] == "job" and events[-1]["data"]["status"] == final
    assert events[0] == {**events[0], "event": "job"} and events[0]["data"]["status"] == "running"
    started, ended = {}, set()
    for e in events:
        d = e["data"]
        if e["event"] == "task" and d["status"] == "running":
            assert d["n"] not in started and d["n"] == len(started), "tasks start in index order"
            assert d["parent"] == -1 or d["parent"] in ended, "a child starts after its parent ended"
            started[d["n"]] = d["name"]
        elif e["event"] == "task":
            assert d["n"] in started and d["n"] not in ended
            assert d["duration_ms"] >= 0 and d["attempts"] >= 1
            ended.add(d["n"])
    return started, ended


def test_stream_tells_every_change_in_order_and_ends(engine):
    uuid = started_uuid(engine, "slowchain")
    resp = stream(engine, uuid)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = read_events(resp)  # returns only because the server ends the stream
    started, ended = check_order(events, "done")
    doc = engine.http.get(f"{engine.base_url}/api/job/{uuid}", timeout=10).json()
    assert doc["status"]["current"] == "done"
    assert [t["name"] for t in doc["tasks"]] == [started[n] for n in range(len(started))]
    assert ended == set(started) and len(started) == len(doc["tasks"]) == 6
    # Read again after the end: the same events with the same ids, then the end.
    assert read_events(stream(engine, uuid)) == events


def test_last_event_id_resumes_without_a_gap(engine):
    uuid = started_uuid(engine, "slowchain")
    first = stream(engine, uuid)
    head = read_events(first, stop_after=3)
    first.close()  # the client goes away mid-job
    rest = read_events(stream(engine, uuid, last_event_id=head[-1]["id"]))
    whole = read_events(stream(engine, uuid))
    assert head + rest == whole
    check_order(whole, "done")
    # Resuming from the last event: nothing more, the stream ends at once.
    assert read_events(stream(engine, uuid, last_event_id=whole[-1]["id"])) == []


def test_cancel_shows_in_the_stream(engine):
    uuid = started_uuid(engine, "slow")
    resp = stream(engine, uuid)
    lines = resp.iter_lines(decode_unicode=True)
    # Wait until the start task runs, then cancel it from elsewhere.
    for line in lines:
        if line.startswith("data: ") and '"type":"task"' in line:
            break
    doc = engine.http.get(f"{engine.base_url}/api/job/{uuid}", timeout=10).json()
    assert engine.http.delete(doc["links"]["self"], timeout=10).status_code == 202
    rest = read_events(resp)
    assert [e["event"] for e in rest][0] == "cancel"
    assert rest[-1]["event"] == "job" and rest[-1]["data"]["status"] == "cancelled"


def test_unknown_job_and_bad_ids(engine):
    assert stream(engine, "0" * 32).status_code == 404
    assert stream(engine, "not-a-uuid").status_code == 404
    uuid = engine.run_job("foo")["uuid"]
    resp = stream(engine, uuid, last_event_id="nonsense")
    assert resp.status_code == 400 and resp.json()["title"] == "Invalid Last-Event-ID"


def test_a_client_that_goes_away_ends_its_stream_at_once(engine):
    # A job that never moves: only its client's going can end its stream.
    uuid = "6" * 32
    tag = keys.job_tag("foo", "still", uuid)
    engine.redis.hset(tag, mapping={keys.JOB_STATUS: "running", keys.job_time("running"): "t"})
    engine.redis.set(keys.job_by_uuid(uuid), tag)
    watchers = lambda: engine.redis.pubsub_numsub(keys.job_events(uuid))[0][1]  # noqa: E731
    try:
        resp = stream(engine, uuid)
        lines = resp.iter_lines(decode_unicode=True)  # kept: dropping it would close the connection
        assert next(lines).startswith("retry:")
        wait_until(lambda: watchers() == 1, 5, "the stream's subscription")
        resp.close()
        # Not at the second keep-alive comment after, up to 30 s later.
        wait_until(lambda: watchers() == 0, 5, "the stream to end with its client")
    finally:
        engine.redis.delete(tag, keys.job_by_uuid(uuid))


def test_a_stopping_web_worker_ends_its_streams_at_once(engine):
    # A job that never moves: its stream would stay open for as long as the job.
    uuid = "5" * 32
    tag = keys.job_tag("foo", "still", uuid)
    engine.redis.hset(tag, mapping={keys.JOB_STATUS: "running", keys.job_time("running"): "t"})
    engine.redis.set(keys.job_by_uuid(uuid), tag)
    port = free_port()
    other = Engine({**engine.env, "CAMERON_PORT": str(port)}, f"http://127.0.0.1:{port}",
                   engine.env["CAMERON_REDIS_URL"])
    web = start_web(other)
    try:
        resp = stream(other, uuid)
        assert resp.status_code == 200
        lines = resp.iter_lines(decode_unicode=True)
        assert next(lines).startswith("retry:")
        began = time.monotonic()
        web.send_signal(signal.SIGTERM)
        assert list(lines) == [""], "the stream ends, with no event"
        web.wait(10)
        # Well inside gunicorn's graceful_timeout (10 s), which would otherwise run out.
        assert time.monotonic() - began < 5
    finally:
        if web.poll() is None:
            web.kill()
            web.wait()
        engine.redis.delete(tag, keys.job_by_uuid(uuid))


def jobs_stream(engine, last_event_id: str | None = None):
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return requests.get(f"{engine.base_url}/api/events", headers=headers, stream=True, timeout=30)


def events_until(response, done) -> list[dict]:
    """Events of a stream that does not end, read until `done(events)` is true."""
    events, current = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "event" in current:
                events.append(current)
                if done(events):
                    response.close()
                    return events
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    raise AssertionError(f"the stream ended: {events}")


def of_job(events: list[dict], uuid: str) -> list[tuple[str, str]]:
    return [(e["event"], e["data"]["status"]) for e in events if e["data"].get("uuid") == uuid]


def test_the_jobs_stream_tells_every_start_and_end_and_resumes(engine):
    resp = jobs_stream(engine)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    # Started once the stream has answered: its changes are in it.
    first, second = started_uuid(engine, "slowchain"), started_uuid(engine, "foo")
    events = events_until(resp, lambda ev: ("job", "done") in of_job(ev, first))
    assert of_job(events, first) == [("job", "running"), ("job", "done")]
    start, end = [e for e in events if e["data"]["uuid"] == first]
    assert {k: start["data"][k] for k in ("process", "key", "uuid")} == {"process": "slowchain", "key": "k1", "uuid": first}
    assert end["data"]["errors"] == 0 and end["data"]["time"] >= start["data"]["time"]
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    # foo is over long before the chain: its start and end came before the chain's end.
    assert of_job(events, second) == [("job", "running"), ("job", "done")]

    # Resumed after the chain's start: the same events from there on, nothing before.
    after_start = ids.index(start["id"])
    again = events_until(jobs_stream(engine, start["id"]), lambda ev: len(ev) >= len(events) - after_start - 1)
    assert again == events[after_start + 1:]


def test_the_jobs_stream_says_reset_when_what_followed_an_id_is_gone(engine):
    engine.run_job("foo")  # the stream holds something
    resp = jobs_stream(engine, "1-0.0")  # older than anything it keeps
    assert resp.status_code == 200
    reset = events_until(resp, lambda ev: True)[0]
    assert reset["event"] == "reset" and reset["data"]["reason"]
    # Its id is where the stream goes on from: resuming from it is no reset.
    resumed = jobs_stream(engine, reset["id"])
    uuid = started_uuid(engine, "foo")
    resumed_events = events_until(resumed, lambda ev: ("job", "done") in of_job(ev, uuid))
    assert of_job(resumed_events, uuid) == [("job", "running"), ("job", "done")]
    assert "reset" not in [e["event"] for e in resumed_events]
    bad = jobs_stream(engine, "nonsense")
    assert bad.status_code == 400 and bad.json()["title"] == "Invalid Last-Event-ID"
