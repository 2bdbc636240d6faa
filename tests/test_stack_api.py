"""The HTTP API's answers to good and bad requests, through gunicorn and the actor system."""

import json

import pytest

pytestmark = pytest.mark.stack


def test_the_api_root_names_the_engine(engine):
    resp = engine.http.get(f"{engine.base_url}/api")
    assert resp.status_code == 200
    assert resp.text.startswith("Cameron Workflow Engine // Web API")
    as_json = engine.http.get(f"{engine.base_url}/api", headers={"Accept": "application/json"})
    assert as_json.json()["name"] == "Cameron Workflow Engine // Web API"


def test_the_catalog_is_listed(engine):
    resp = engine.http.get(f"{engine.base_url}/api/process")
    assert resp.status_code == 200
    names = {p["name"] for p in resp.json()["processes"]}
    assert {"foo", "mixed", "fanout"} <= names


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"data": "d", "requestor": "r"}', "'key' is missing"),
    (b'{"key": "k", "requestor": "r"}', "'data' is missing"),
    (b'{"key": "k", "data": "d"}', "'requestor' is missing"),
    (b'{"key": 7, "data": "d", "requestor": "r"}', "'key' must be a string"),
    (b'{"key": "k", "data": "d", "requestor": null}', "'requestor' must be a string"),
    (b'{"key": "", "data": "d", "requestor": "r"}', "'key' must not be empty"),
])
def test_a_bad_start_request_gets_a_400_saying_what_is_wrong(engine, body, words):
    resp = engine.http.post(f"{engine.base_url}/api/process/foo/start", data=body,
                            headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("application/json")
    assert words in resp.json()["description"]


def test_an_unknown_process_gets_a_json_404(engine):
    resp = engine.start_job("no_such_process")
    assert resp.status_code == 404
    assert "no_such_process" in resp.json()["description"]


@pytest.mark.parametrize("path", [
    "/api/process/foo/key/k1/job/0123456789abcdef0123456789abcdef",  # well-formed, unknown
    "/api/process/foo/key/k1/job/not-a-uuid",
    "/api/nothing/here",
    "/ui/nothing.js",  # "/" is the dashboard
])
def test_unknown_jobs_and_paths_get_json_404s(engine, path):
    resp = engine.http.get(engine.base_url + path, headers={"Accept": "text/html"})
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["title"]


def test_a_job_is_readable_as_soon_as_it_is_accepted(engine):
    # The 201 is sent only once the job is in Redis, so reading it right away never 404s.
    for i in range(20):
        resp = engine.start_job("slow", key=f"early-{i}")
        assert resp.status_code == 201
        got = engine.http.get(resp.headers["Location"])
        assert got.status_code == 200
        assert got.json()["status"]["current"] in ("scheduled", "running")


@pytest.mark.parametrize("data", ["{\"a\": 1}", {"a": [1, 2.5, None], "b": "é"}, [1, "x"], 42, True, None])
def test_data_may_be_any_json_value_and_comes_back_as_given(engine, data):
    # Given a job started with data of any JSON type (a string that looks like JSON included)
    doc = engine.run_job("echo", data=data)
    # Expect the job document, and the start activity's body (echoed as its output), to carry
    # it as it was given
    assert doc["data"] == data and type(doc["data"]) is type(data)
    assert doc["tasks"][0]["data"] == data
    # and Redis to keep a string exactly, anything else as JSON text with a flag
    h = engine.job_hash(doc)
    if isinstance(data, str):
        assert h["job.data"] == data and "job.data.json" not in h
    else:
        assert json.loads(h["job.data"]) == data and h["job.data.json"] == "1"
