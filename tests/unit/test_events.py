"""Event streams and the dashboard's files, without the stack: ids, the events a write batch
adds to a job's Redis stream, a stream rebuilt from a hash, files open with tokens on."""

import json
import shutil
import tempfile

import falcon
import falcon.testing
import pytest

from cameron import api, events, keys, metrics, store
from cameron import messages as m
from cameron.config import Config
from cameron.redis_server import EmbeddedRedis

UUID = "ab" * 16
TAG = keys.job_tag("foo", "k", UUID)


@pytest.mark.parametrize("given, position", [
    (None, ("0-0", -1)), ("", ("0-0", -1)), ("1732912345678-0.2", ("1732912345678-0", 2)),
    ("0-0.5", ("0-0", 5)), (" 17-3.0 ", ("17-3", 0)),
])
def test_last_event_id_is_a_stream_entry_and_a_place_in_it(given, position):
    assert events._position(given) == position


@pytest.mark.parametrize("bad", ["nonsense", "17-3", "17.2", "-1-0.2", "17-0.-1", "١٧-0.1", "1" * 70 + "-0.1"])
def test_last_event_id_that_was_never_handed_out_is_a_400(bad):
    with pytest.raises(falcon.HTTPBadRequest):
        events._position(bad)


@pytest.fixture
def redis_client():
    folder = tempfile.mkdtemp(prefix="ce", dir="/tmp")
    server = EmbeddedRedis(folder).start()
    try:
        yield store.connect(server.url)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_write_batch_adds_one_entry_per_job_and_wakes_listeners(redis_client):
    jobs = store.JobStore(redis_client, "e1")
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.job_events(UUID))
    other = keys.job_tag("bar", "k", "cd" * 16)
    jobs.apply([m.JobStarted(TAG, "t0"), m.TaskStarted(TAG, 0, "start", "start", "http://a", "bob", -1, "", "start", "t1"),
                m.JobStarted(other, "t0")])
    jobs.apply([m.TaskEnded(TAG, 0, "start", "done", "{}", "undefined", "t2", 12, 2),
                m.JobEnded(TAG, "t3", 0, ("start",))])
    entries = redis_client.xrange(keys.job_events(UUID))
    assert [json.loads(f["e"]) for _, f in entries] == [
        [{"type": "job", "status": "running", "time": "t0"},
         {"type": "task", "n": 0, "id": "start", "name": "start", "status": "running", "time": "t1",
          "parent": -1, "requestor": "bob"}],
        [{"type": "task", "n": 0, "id": "start", "status": "done", "time": "t2", "duration_ms": 12,
          "attempts": 2},
         {"type": "job", "status": "done", "time": "t3", "errors": 0}]]
    assert 0 < redis_client.ttl(keys.job_events(UUID)) <= keys.EVENTS_TTL
    assert redis_client.ttl(keys.job_events("cd" * 16)) == -1  # still running: kept
    heard = []
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message:
            heard.append((message["channel"], message["data"]))
        if len(heard) == 2:
            break
    assert heard == [(keys.job_events(UUID), "")] * 2  # a wake-up per batch that changed the job


def test_a_batch_adds_its_job_starts_and_ends_to_the_jobs_stream_in_one_entry(redis_client):
    jobs = store.JobStore(redis_client, "e1")
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.JOBS_EVENTS)
    other = keys.job_tag("bar", "a:key", "cd" * 16)
    jobs.apply([m.JobStarted(TAG, "t0"), m.TaskStarted(TAG, 0, "start", "start", "http://a", "bob", -1, "", "start", "t1"),
                m.JobStarted(other, "t0")])
    jobs.apply([m.TaskEnded(TAG, 0, "start", "done", "{}", "undefined", "t2", 12, 2)])  # no job-level change
    jobs.apply([m.JobEnded(TAG, "t3", 1, ("start",)), m.JobEnded(other, "t4", 0, status="cancelled")])
    entries = [json.loads(f["e"]) for _, f in redis_client.xrange(keys.JOBS_EVENTS)]
    assert entries == [
        [{"type": "job", "status": "running", "time": "t0", "process": "foo", "key": "k", "uuid": UUID},
         {"type": "job", "status": "running", "time": "t0", "process": "bar", "key": "a:key", "uuid": "cd" * 16}],
        [{"type": "job", "status": "done", "time": "t3", "errors": 1, "process": "foo", "key": "k", "uuid": UUID},
         {"type": "job", "status": "cancelled", "time": "t4", "errors": 0, "process": "bar", "key": "a:key",
          "uuid": "cd" * 16}]]
    assert redis_client.ttl(keys.JOBS_EVENTS) == -1  # capped by length, not by time
    heard = []
    for _ in range(10):  # the subscription's answer first, which reads as None
        message = pubsub.get_message(timeout=0.1)
        if message:
            heard.append((message["channel"], message["data"]))
    assert heard == [(keys.JOBS_EVENTS, "")] * 2  # none for the batch of task changes


def test_the_jobs_stream_is_capped():
    pipe = _Recorder()
    store.job_list_changes(pipe, [m.JobStarted(TAG, "t0")])
    (name, args, kwargs), _ = pipe.calls
    assert name == "xadd" and kwargs == {"maxlen": keys.JOBS_EVENTS_KEEP, "approximate": True}
    store.job_list_changes(pipe := _Recorder(), [m.TaskStarted(TAG, 0, "start", "start", "u", "bob", -1, "", "start", "t1")])
    assert pipe.calls == []


class _Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_a_finished_job_without_a_stream_is_rebuilt_from_its_hash():
    h = {keys.JOB_STATUS: "done", keys.job_time("running"): "t0", keys.job_time("done"): "t9", "job.errors": "1",
         "task.start.status.current": "done", "task.start.name": "start", "task.start.parent": "",
         "task.start.index": "0", "task.start.requestor": "bob", "task.start.status.running.time": "t1",
         "task.start.status.done.time": "t2", "task.start.duration_ms": "5", "task.start.attempts": "1",
         "task.a.b.status.current": "error", "task.a.b.name": "a.b", "task.a.b.parent": "start",
         "task.a.b.index": "1", "task.a.b.requestor": "start", "task.a.b.status.running.time": "t3",
         "task.a.b.status.error.time": "t4", "task.a.b.duration_ms": "7", "task.a.b.attempts": "3"}
    changes = events._from_hash(h)
    assert [(c["type"], c.get("n"), c["status"]) for c in changes] == [
        ("job", None, "running"), ("task", 0, "running"), ("task", 0, "done"), ("task", 1, "running"),
        ("task", 1, "error"), ("job", None, "done")]
    assert changes[4]["attempts"] == 3 and changes[-1]["errors"] == 1
    assert (changes[3]["id"], changes[3]["parent"]) == ("a.b", 0)  # a name with a dot in it


def test_dashboard_files_need_no_token_but_data_does():
    client = falcon.testing.TestClient(api.create_app(None, config=Config(api_tokens="alice:tok-a")))
    page = client.simulate_get("/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'src="ui/app.js"' in page.text  # relative: works under a proxy's path too
    for name, kind in [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")]:
        resp = client.simulate_get(f"/ui/{name}")
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(kind)
    for path in ["/api/process/foo/counts", f"/api/job/{UUID}/events", "/metrics"]:
        assert client.simulate_get(path).status_code == 401, path
    open_client = falcon.testing.TestClient(api.create_app(None))
    assert open_client.simulate_get("/ui/nothing.js").status_code == 404


@pytest.mark.parametrize("error, limit", [
    ("21 next activities exceed the fan-out limit of 20", "fanout"),
    ("next activities would exceed the job depth limit of 8", "depth"),
    ("answer larger than the 100000-byte limit", "response_bytes"),
    ("connection failed: refused", None),
])
def test_limit_errors_are_told_apart(error, limit):
    assert metrics.limit_of(error) == limit
