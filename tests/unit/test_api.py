"""The HTTP API as a client sees it, with a fake engine behind the gateway (no actors)."""

import contextlib
import hashlib
import json
import time

import falcon
import falcon.testing
import pytest

import redis

from cameron import api, keys, store
from cameron import messages as m
from cameron.catalog import Process
from cameron.config import Config
from cameron.gateway import ActorGateway, EngineUnavailable

UUID = "0123456789abcdef0123456789abcdef"
FOO = Process(name="foo", start_url="http://127.0.0.1:9292/foo/v0.0.1/start")
REQUEST = {"key": "(id,007)", "data": "be careful with that data", "requestor": "bob_the_thin"}


class FakeGateway:
    """Answers each ask with what the test set for that role, and remembers what was asked."""

    def __init__(self, **replies):
        self.replies = replies
        self.asked = []

    def ask(self, role, msg, timeout=None):
        self.asked.append((role, msg))
        reply = self.replies[role]
        if isinstance(reply, Exception):
            raise reply
        return reply(msg) if callable(reply) else reply


class FakeJobs:
    """The job store's start, answering what the test set; remembers what was started."""

    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    @contextlib.contextmanager
    def lend(self):
        yield "lent"

    def start(self, process, key, data, requestor, *, idempotency_key="", fingerprint="", client="", job_id="",
              via=None):
        assert via == "lent"  # the API starts on a client lent for the request
        self.asked.append((process, key, data, requestor, idempotency_key))
        self.job_id = job_id
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(process, key)


class StoredJobs:
    """The job store's reads: `answer(*args)` for each, or the exception it is; remembers
    what was read."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def _read(self, *args):
        self.asked.append(args)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer(*args)

    def get(self, process, key, uuid):
        return self._read("get", process, key, uuid)

    def request_cancel(self, process, key, uuid):
        return self._read("request_cancel", process, key, uuid)


def accept(process, key):
    """The store's answer: the job accepted, for the process the catalog knows."""
    return store.Created(process, key, UUID, status="scheduled", replayed=False)


PUBLIC = "http://cameron.example:8080"


def client_for(gateway, jobs=None, **settings) -> falcon.testing.TestClient:
    config = Config(public_url=PUBLIC, **settings)
    return falcon.testing.TestClient(api.create_app(gateway, jobs=jobs, config=config))


def post_start(client, body, name="foo", raw_name=None, headers=None, **kwargs):
    path = f"/api/process/{name}/start"
    extras = {"RAW_URI": f"/api/process/{raw_name}/start"} if raw_name else None
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    return client.simulate_post(path, body=body, headers={"Content-Type": "application/json", **(headers or {})},
                                extras=extras, **kwargs)


def assert_json_error(resp, status, title):
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json["title"] == title
    return resp.json.get("description", "")


# --- GET /api -------------------------------------------------------------------

def test_the_api_root_answers_the_banner_text():
    # When a client opens /api
    resp = client_for(FakeGateway()).simulate_get("/api")
    # Expect 200 text starting with the original's banner
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.text.splitlines()[0] == "Cameron Workflow Engine // Web API"


def test_the_api_root_answers_json_to_a_client_that_asks_for_it():
    resp = client_for(FakeGateway()).simulate_get("/api", headers={"Accept": "application/json"})
    assert resp.status_code == 200
    assert resp.json["name"] == "Cameron Workflow Engine // Web API"
    assert resp.json["links"]["start"] == "/api/process/{name}/start"


# --- POST /api/process/{name}/start -------------------------------------------------

def test_starting_a_job_answers_201_with_its_location_and_a_json_body():
    # Given an engine that accepts the job
    jobs = FakeJobs(accept)
    client = client_for(FakeGateway(), jobs)
    # When the original docs' request is posted with a Host header of the client's choosing
    resp = post_start(client, REQUEST, host="evil.example", port=8080)
    # Expect 201, Location from the public address (not the Host header) with the key URL-encoded
    location = f"http://cameron.example:8080/api/process/foo/key/%28id%2C007%29/job/{UUID}"
    assert resp.status_code == 201
    assert resp.headers["location"] == location
    # ... a JSON body naming the job
    assert resp.json["uuid"] == UUID
    assert resp.json["links"]["self"] == location
    assert (resp.json["process"], resp.json["key"], resp.json["status"]) == ("foo", "(id,007)", "scheduled")
    # ... and the scheduler asked to start exactly what was posted
    assert jobs.asked == [("foo", "(id,007)", "be careful with that data", "bob_the_thin", "")]


@pytest.mark.parametrize("key, encoded", [("a/b", "a%2Fb"), ("Bob Smith", "Bob%20Smith"),
                                          ("50%", "50%25"), ("é?#&", "%C3%A9%3F%23%26")])
def test_the_location_encodes_every_special_character_of_the_key(key, encoded):
    resp = post_start(client_for(FakeGateway(), FakeJobs(accept)), {**REQUEST, "key": key})
    assert resp.status_code == 201
    assert resp.headers["location"].endswith(f"/api/process/foo/key/{encoded}/job/{UUID}")


def test_an_encoded_process_name_is_decoded_before_the_engine_sees_it():
    # Given a client that encodes the process name in the path
    jobs = FakeJobs(accept)
    resp = post_start(client_for(FakeGateway(), jobs), REQUEST, name="my.proc", raw_name="my%2Eproc")
    # Expect the scheduler asked about the decoded name
    assert resp.status_code == 201
    assert jobs.asked[0][0] == "my.proc"


@pytest.mark.parametrize("body", ["{not json", "", b"\xff\xfe", '{"key": "k", "data": "d", "requestor": "r"'])
def test_a_body_that_is_not_json_is_a_400_saying_so(body):
    jobs = FakeJobs(accept)
    resp = post_start(client_for(FakeGateway(), jobs), body)
    assert "not valid JSON" in assert_json_error(resp, 400, "Invalid JSON")
    assert jobs.asked == []


@pytest.mark.parametrize("body", [[REQUEST], '"a string"', "42", "null"])
def test_a_body_that_is_not_an_object_is_a_400_saying_so(body):
    resp = post_start(client_for(FakeGateway(), FakeJobs(accept)), body)
    assert "must be a JSON object" in assert_json_error(resp, 400, "Invalid job request")


@pytest.mark.parametrize("field", ["key", "data", "requestor"])
def test_a_missing_field_is_a_400_naming_it(field):
    body = {k: v for k, v in REQUEST.items() if k != field}
    jobs = FakeJobs(accept)
    resp = post_start(client_for(FakeGateway(), jobs), body)
    assert assert_json_error(resp, 400, "Invalid job request") == f"'{field}' is missing"
    assert jobs.asked == []


@pytest.mark.parametrize("field", ["key", "requestor"])  # data may be any JSON value
@pytest.mark.parametrize("value", [7, None, {"a": 1}, ["x"], True])
def test_a_non_string_field_is_a_400_naming_it(field, value):
    resp = post_start(client_for(FakeGateway(), FakeJobs(accept)), {**REQUEST, field: value})
    assert assert_json_error(resp, 400, "Invalid job request") == f"'{field}' must be a string"


def test_an_empty_key_is_a_400():
    resp = post_start(client_for(FakeGateway(), FakeJobs(accept)), {**REQUEST, "key": ""})
    assert assert_json_error(resp, 400, "Invalid job request") == "'key' must not be empty"


def test_a_body_over_the_size_limit_is_a_413():
    jobs = FakeJobs(accept)
    resp = post_start(client_for(FakeGateway(), jobs), {**REQUEST, "data": "x" * Config().max_body_bytes})
    assert_json_error(resp, 413, "Body too large")
    assert jobs.asked == []


def test_an_unknown_process_is_a_json_404():
    # Given an engine whose catalog has no process "nope"
    resp = post_start(client_for(FakeGateway(), FakeJobs(store.UnknownProcess("nope"))), REQUEST, name="nope")
    # Expect a JSON 404 naming it
    assert "'nope'" in assert_json_error(resp, 404, "Unknown process")
    assert "location" not in resp.headers


def test_an_unavailable_engine_is_a_json_503_with_retry_after():
    # Given a Redis that is down, or an engine that has not published its catalog yet
    for failure, reason in [(redis.ConnectionError("Error 111 connecting"),
                             "job store unavailable, job not created: Error 111 connecting"),
                            (store.EngineStarting("the engine has not published its catalog yet"),
                             "the engine has not published its catalog yet")]:
        resp = post_start(client_for(FakeGateway(), FakeJobs(failure)), REQUEST)
        # Expect 503 with Retry-After and the reason
        assert assert_json_error(resp, 503, "Engine unavailable") == reason
        assert resp.headers["retry-after"] == "1"


@pytest.mark.parametrize("idempotency_key", ["", "order-17"])
def test_a_start_whose_redis_answer_is_lost_is_a_503_saying_the_outcome_is_unknown_and_how_to_find_out(
        idempotency_key):
    # Given a Redis that took the start's script but did not answer in time
    jobs = FakeJobs(redis.TimeoutError("Timeout reading from socket"))
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    resp = client_for(FakeGateway(), jobs).simulate_post("/api/process/foo/start", json=REQUEST,
                                                         headers=headers)
    # Expect a 503 that names the job the script would have made, and says how to find it
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    body = resp.json
    assert body["outcome"] == "unknown" and body["uuid"] == jobs.job_id
    assert body["links"]["self"].endswith(f"/api/process/foo/key/%28id%2C007%29/job/{jobs.job_id}")
    assert "may or may not have been created" in body["description"]
    if idempotency_key:
        assert "retry with the same Idempotency-Key (order-17)" in body["description"]
    else:
        assert f"GET {body['links']['self']} tells (404: it was not created)" in body["description"]


def test_a_bug_behind_the_gateway_is_a_json_500_that_keeps_its_details_in_the_log():
    resp = post_start(client_for(FakeGateway(), FakeJobs(RuntimeError("secret internals"))), REQUEST)
    description = assert_json_error(resp, 500, "Internal error")
    assert "RuntimeError" in description
    assert "secret internals" not in resp.text


def test_errors_are_json_even_for_a_client_that_prefers_xml():
    resp = post_start(client_for(FakeGateway(), FakeJobs(accept)), "{bad",
                      headers={"Accept": "application/xml"})
    assert_json_error(resp, 400, "Invalid JSON")


# --- GET /api/process/{name}/key/{key}/job/{uuid} ------------------------------

DOC = {"process": "foo", "uuid": UUID, "key": "(id,007)", "requestor": "bob_the_thin",
       "status": {"current": "done", "time": "01-02-2025 03:04:09"},
       "tasks": [{"name": "start", "requestor": "bob_the_thin",
                  "status": {"current": "done", "time": "01-02-2025 03:04:08"}, "data": {"who_id": "(id,007)"}}]}


def get_job(client, raw_path, **kwargs):
    # The path as a client would send it: RAW_URI carries it encoded, PATH_INFO decoded.
    from urllib.parse import unquote
    return client.simulate_get(unquote(raw_path), extras={"RAW_URI": raw_path}, **kwargs)


def test_reading_a_job_returns_its_document_with_a_self_link():
    # Given a stored job
    jobs = StoredJobs(lambda *args: dict(DOC))
    # When the Location of the original docs' request is read
    raw = f"/api/process/foo/key/%28id%2C007%29/job/{UUID}"
    resp = get_job(client_for(FakeGateway(), jobs), raw)
    # Expect 200 with the documented fields, and the job read by its decoded key
    assert resp.status_code == 200
    assert {k: resp.json[k] for k in DOC} == DOC
    assert resp.json["links"]["self"] == f"http://cameron.example:8080{raw}"
    assert jobs.asked == [("get", "foo", "(id,007)", UUID)]


@pytest.mark.parametrize("raw_key, key", [("a%2Fb", "a/b"), ("Bob%20Smith", "Bob Smith"),
                                          ("MiXeD", "MiXeD"), ("%28id%2C007%29", "(id,007)"),
                                          ("(id,007)", "(id,007)"), ("50%25", "50%")])
def test_a_job_is_read_back_by_its_exact_key(raw_key, key):
    # Given a key with a slash, a space, capitals or an escaped percent sign, encoded in the path
    jobs = StoredJobs(lambda method, process, key, uuid: {**DOC, "key": key})
    resp = get_job(client_for(FakeGateway(), jobs), f"/api/process/foo/key/{raw_key}/job/{UUID}")
    # Expect that exact key read (not lowercased, not split at the slash)
    assert resp.status_code == 200
    assert jobs.asked == [("get", "foo", key, UUID)]


def test_a_job_path_works_without_raw_uri_too():
    # Given a WSGI server that does not pass the raw path (only the decoded PATH_INFO)
    jobs = StoredJobs(lambda *args: dict(DOC))
    resp = client_for(FakeGateway(), jobs).simulate_get(f"/api/process/foo/key/Bob Smith/job/{UUID}")
    assert resp.status_code == 200
    assert jobs.asked == [("get", "foo", "Bob Smith", UUID)]


@pytest.mark.parametrize("uuid", ["123", UUID.upper(), UUID + "0", UUID[:-1] + "g", "../../etc"])
def test_a_uuid_that_is_not_32_lowercase_hex_is_a_json_404_without_reading_redis(uuid):
    jobs = StoredJobs(lambda *args: dict(DOC))
    resp = get_job(client_for(FakeGateway(), jobs), f"/api/process/foo/key/k/job/{uuid}")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/json")
    assert jobs.asked == []


def test_an_unknown_job_is_a_json_404():
    resp = get_job(client_for(FakeGateway(), StoredJobs(lambda *args: None)), f"/api/process/foo/key/k/job/{UUID}")
    description = assert_json_error(resp, 404, "Job not found")
    assert UUID in description and "'k'" in description


def test_reading_a_job_while_redis_does_not_answer_is_a_503():
    jobs = StoredJobs(redis.TimeoutError("Timeout reading from socket"))
    resp = get_job(client_for(FakeGateway(), jobs), f"/api/process/foo/key/k/job/{UUID}")
    assert assert_json_error(resp, 503, "Engine unavailable") == "job store unavailable: Timeout reading from socket"
    assert resp.headers["retry-after"] == "1"


# --- GET /api/process ----------------------------------------------------------------

def test_the_catalog_is_listable():
    gateway = FakeGateway(catalog=m.ProcessList([FOO, Process(name="my.proc", start_url="https://b/s")]))
    resp = client_for(gateway).simulate_get("/api/process")
    assert resp.status_code == 200
    assert resp.json["processes"] == [
        {"name": "foo", "start": FOO.start_url,
         "links": {"start": "http://cameron.example:8080/api/process/foo/start"}},
        {"name": "my.proc", "start": "https://b/s",
         "links": {"start": "http://cameron.example:8080/api/process/my.proc/start"}}]
    assert gateway.asked == [("catalog", m.ListProcesses())]


# --- anything else ------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("GET", "/ui/nothing.js"), ("GET", "/nothing"), ("GET", "/api/unknown"), ("POST", "/api/process/foo"),
    ("GET", "/api/process/foo/key/k"), ("GET", f"/api/process/foo/key/a/b/job/{UUID}"),
    ("DELETE", "/x/y"),
])
def test_any_other_path_is_a_json_404(method, path):
    gateway = FakeGateway()
    resp = client_for(gateway).simulate_request(method, path)
    assert_json_error(resp, 404, "Page not found")
    assert gateway.asked == []


class DownRedis:
    def ping(self):
        import redis
        raise redis.ConnectionError("Connection refused")

    def pipeline(self, transaction=True):
        return self

    def hgetall(self, key):
        pass  # a real pipeline only queues: it fails at execute()

    def scard(self, key):
        pass

    def execute(self):
        self.ping()


class UpRedis:
    """A Redis that answers, holding the engine's health record (None: no record)."""

    def __init__(self, record=None, unfinished=0):
        self.record = {"supervisor_pid": "7", "children": "5", "expected": "5", "given_up": "",
                       "progress": str(time.time()), "at": str(time.time())} if record is None else record
        self.unfinished = unfinished
        self.queued = []

    def ping(self):
        return True

    def pipeline(self, transaction=True):
        self.queued = []
        return self

    def hgetall(self, key):
        self.queued.append(self.record)

    def scard(self, key):
        self.queued.append(self.unfinished)

    def execute(self):
        return self.queued


def test_health_says_which_part_is_down_reading_the_engines_record_not_asking_actors():
    # Given a Redis that answers and holds a fresh health record of a whole engine
    gateway = FakeGateway()
    resp = falcon.testing.TestClient(api.create_app(gateway, UpRedis())).simulate_get("/api/health")
    assert resp.status_code == 200 and resp.json["actors"]["ok"] is True
    assert resp.json["actors"]["children"] == resp.json["actors"]["expected"] == 5
    assert gateway.asked == []  # no actor asked: asking one by name would create it
    # Given no record (no Supervisor for a few seconds): 503 saying so
    resp = falcon.testing.TestClient(api.create_app(gateway, UpRedis(record={}))).simulate_get("/api/health")
    assert resp.status_code == 503 and resp.json["redis"] == {"ok": True}
    assert "has not reported" in resp.json["actors"]["error"]
    # Given a Redis that refuses
    resp = falcon.testing.TestClient(api.create_app(gateway, DownRedis())).simulate_get("/api/health")
    assert resp.status_code == 503
    assert "Connection refused" in resp.json["redis"]["error"]
    assert "cannot be read" in resp.json["actors"]["error"]


@pytest.mark.parametrize("record, unfinished, words", [
    ({"children": "4", "expected": "5", "given_up": ""}, 0, "1 of the Supervisor's 5 children missing"),
    ({"children": "4", "expected": "5", "given_up": "runner:1"}, 0, "given up restarting runner:1"),
    ({"children": "5", "expected": "5", "given_up": "", "progress": "0"}, 3,
     "3 unfinished jobs have not moved for"),
])
def test_health_says_when_the_tree_is_incomplete_or_jobs_do_not_move(record, unfinished, words):
    full = {"supervisor_pid": "7", "progress": str(time.time()), "at": str(time.time()), **record}
    resp = falcon.testing.TestClient(api.create_app(FakeGateway(), UpRedis(full, unfinished))).simulate_get(
        "/api/health")
    assert resp.status_code == 503 and words in resp.json["actors"]["error"], resp.json


def test_idle_unfinished_jobs_are_fine_until_stall_after():
    from cameron.health import judge
    record = {"supervisor_pid": "7", "children": "5", "expected": "5", "given_up": "", "progress": "100"}
    assert judge(record, 2, stall_after=120, now=200)["ok"] is True
    assert judge(record, 2, stall_after=60, now=200)["ok"] is False
    assert judge(record, 0, stall_after=60, now=200)["ok"] is True  # nothing unfinished: nothing stuck


def test_health_answers_within_its_timeout_when_a_part_hangs():
    import threading
    release = threading.Event()

    class HangingRedis(UpRedis):
        def ping(self):
            release.wait(5)  # a frozen Redis, as long as the test lets it
            return True
    client = falcon.testing.TestClient(api.create_app(FakeGateway(), HangingRedis(), config=Config(health_timeout=0.3)))
    try:
        began = time.monotonic()
        resp = client.simulate_get("/api/health")
        took = time.monotonic() - began
    finally:
        release.set()
    assert resp.status_code == 503 and took < 2, took
    assert resp.json["redis"] == {"ok": False, "error": "no answer within 0.3 s"}
    assert resp.json["actors"]["ok"] is True


def test_every_route_of_the_app_is_in_the_openapi_document():
    from cameron import openapi
    app = api.create_app(FakeGateway())
    routes = set()

    def walk(nodes):
        for node in nodes:
            if node.resource is not None:
                routes.add(node.uri_template)
            walk(node.children)
    walk(app._router._roots)
    assert routes == set(openapi.PATHS)


# --- the front door: tokens, limits, malformed input ----------------------------------------

TOKENS = "alice:tok-a,tok-b"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "tok-a"},
                                     {"Authorization": "Bearer tok-ab"}, {"Authorization": "Bearer tök"}])
def test_with_tokens_a_request_without_a_valid_one_is_a_401_with_a_challenge(headers):
    jobs = FakeJobs(accept)
    client = client_for(FakeGateway(), jobs, api_tokens=TOKENS)
    resp = post_start(client, REQUEST, headers=headers)
    assert_json_error(resp, 401, "Token required")
    assert resp.headers["www-authenticate"] == 'Bearer realm="cameron"'
    assert jobs.asked == []


def test_with_tokens_health_is_open_and_a_token_scopes_the_idempotency_key():
    started = []

    class ScopedJobs(FakeJobs):
        def start(self, *args, client="", **kwargs):
            started.append(client)
            return super().start(*args, **kwargs)
    client = client_for(FakeGateway(scheduler=m.Pong("s", 1, 1, {}), job_data=m.Pong("j", 2, 1, {})),
                        ScopedJobs(accept), api_tokens=TOKENS)
    assert client.simulate_get("/api/health").status_code != 401
    assert post_start(client, REQUEST, headers={"Authorization": "Bearer tok-a"}).status_code == 201
    assert post_start(client, REQUEST, headers={"Authorization": "bearer  tok-b "}).status_code == 201
    # An unnamed token is named by the start of its SHA-256, which says nothing of the token.
    assert started == ["alice", hashlib.sha256(b"tok-b").hexdigest()[:12]]


def test_a_token_is_compared_with_every_configured_one_in_constant_time(monkeypatch):
    compared = []

    def compare_digest(given, token):
        compared.append(token)
        return given == token
    monkeypatch.setattr("cameron.api.hmac.compare_digest", compare_digest)
    client = client_for(FakeGateway(), FakeJobs(accept), api_tokens=TOKENS)
    # Whether the first token matches, or none: every token is compared, and only that way
    for given in ("tok-a", "tok-b", "nope"):
        compared.clear()
        client.simulate_get("/api/process", headers={"Authorization": f"Bearer {given}"})
        assert sorted(compared) == [b"tok-a", b"tok-b"]


@pytest.mark.parametrize("body, words", [
    ('{"key": "k", "data": "d", "requestor": "r", "x": ' + "[" * 65 + "]" * 65 + "}", "nests deeper than 64"),
    ("[" * 5000 + "]" * 5000, "nests deeper than 64"),
    ('{"key": "\\udc00", "data": "d", "requestor": "r"}', "'key' is not valid Unicode"),
    ('{"key": "k", "data": "x\\ud800", "requestor": "r"}', "'data' is not valid Unicode"),
    ('{"key": "kkk", "data": "d", "requestor": "r"}', "'key' is over 2 bytes (max_key_bytes)"),
    ('{"key": "k", "data": "ddd", "requestor": "r"}', "'data' is over 2 bytes (max_data_bytes)"),
    ('{"key": "k", "data": "d", "requestor": "ééé"}', "'requestor' is over 4 bytes (max_requestor_bytes)"),
])
def test_malformed_or_oversized_fields_are_400s_naming_the_problem(body, words):
    client = client_for(FakeGateway(), FakeJobs(accept), max_key_bytes=2, max_data_bytes=2,
                        max_requestor_bytes=4)
    assert words in assert_json_error(post_start(client, body), 400, "Invalid JSON"
                                      if "nests" in words else "Invalid job request")


@pytest.mark.parametrize("limit", ["²", "٣", "+5", " 5", "1_0"])
def test_a_limit_in_anything_but_ascii_digits_is_a_400(limit):
    resp = client_for(FakeGateway()).simulate_get("/api/process/foo/job", params={"limit": limit})
    assert "'limit'" in assert_json_error(resp, 400, "Invalid query")


@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_cursor_whose_score_is_not_a_finite_number_is_refused(score):
    import base64
    text = base64.urlsafe_b64encode(f'[{score}, "cameron:process:foo:key:k:job:{UUID}"]'.encode()).decode()
    with pytest.raises(ValueError):
        store.decode_cursor(text)


# --- cancel ----------------------------------------------------------------------------

class CancellingGateway(FakeGateway):
    """The real cancel (record, then tell the runner) over a runner the test plays."""

    cancel = ActorGateway.cancel

    def ask_runner(self, job_uuid, msg, timeout=None):
        return self.ask("runner", msg, timeout)


@pytest.mark.parametrize("recorded, code", [(None, 404), (("done", None), 409), (("cancelled", None), 409)])
def test_a_cancel_of_no_job_or_of_a_finished_one_is_refused_without_telling_the_engine(recorded, code):
    gateway = CancellingGateway(runner=m.Stopping(UUID))
    resp = client_for(gateway, StoredJobs(lambda *args: recorded)).simulate_delete(
        f"/api/process/foo/key/k/job/{UUID}")
    assert resp.status_code == code and resp.headers["content-type"].startswith("application/json")
    assert gateway.asked == []


def test_a_cancel_is_recorded_in_redis_then_told_to_the_jobs_runner():
    jobs = StoredJobs(lambda *args: ("running", "11-30-2026 01:02:03"))
    gateway = CancellingGateway(runner=m.Stopping(UUID))
    resp = client_for(gateway, jobs).simulate_post(f"/api/process/foo/key/k/job/{UUID}/cancel")
    assert resp.status_code == 202
    assert (resp.json["status"], resp.json["cancel_requested"]) == ("running", "11-30-2026 01:02:03")
    assert jobs.asked == [("request_cancel", "foo", "k", UUID)]
    assert gateway.asked == [("runner", m.StopJob(UUID, keys.job_tag("foo", "k", UUID)))]


def test_a_cancel_the_engine_does_not_confirm_is_a_503_that_says_it_is_recorded():
    jobs = StoredJobs(lambda *args: ("running", "t"))
    gateway = CancellingGateway(runner=EngineUnavailable("the job's runner did not answer"))
    resp = client_for(gateway, jobs).simulate_delete(f"/api/process/foo/key/k/job/{UUID}")
    assert "the cancel is recorded" in assert_json_error(resp, 503, "Engine unavailable")
