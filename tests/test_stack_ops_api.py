"""The operations API through the real stack: listings, cancel, idempotent starts, health, and
every answer checked against the OpenAPI document the server serves."""

import uuid as uuidlib
from urllib.parse import quote

import pytest

import schema
from conftest import wait_until

pytestmark = pytest.mark.stack

JOB = "/api/process/{name}/key/{key}/job/{uuid}"


@pytest.fixture(scope="module")
def spec(engine):
    resp = engine.http.get(f"{engine.base_url}/api/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.") and JOB in doc["paths"]
    return doc


def unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:8]}"


def get(engine, path, **params):
    return engine.http.get(engine.base_url + path, params=params, timeout=15)


def test_the_catalog_root_and_health_answer_as_documented(engine, spec):
    schema.check(spec, "GET", "/api/process", get(engine, "/api/process"))
    health = get(engine, "/api/health")
    assert health.status_code == 200
    doc = health.json()
    assert doc["status"] == "ok" and doc["redis"] == {"ok": True} and doc["actors"]["ok"] is True
    # the whole tree reported, from the engine's health record
    assert doc["actors"]["children"] == doc["actors"]["expected"] == 5 and doc["actors"]["given_up"] == []
    schema.check(spec, "GET", "/api/health", health)


def test_a_key_listing_pages_through_its_jobs_newest_first(engine, spec):
    # Given five finished jobs for one key
    key = unique("paged")
    uuids = [engine.run_job("echo", key=key)["uuid"] for _ in range(5)]
    # When the client walks the listing two at a time, following the next links
    pages, url = [], f"{engine.base_url}/api/process/echo/key/{quote(key, safe='')}/job?limit=2"
    while url:
        resp = engine.http.get(url, timeout=15)
        schema.check(spec, "GET", "/api/process/{name}/key/{key}/job", resp)
        body = resp.json()
        pages.append([j["uuid"] for j in body["jobs"]])
        url = body["links"].get("next")
    # Expect every job once, newest first, in pages of 2, 2 and 1
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [u for p in pages for u in p] == list(reversed(uuids))
    job = get(engine, f"/api/process/echo/key/{quote(key, safe='')}/job", limit=1).json()["jobs"][0]
    assert job["status"]["current"] == "done" and job["key"] == key
    assert engine.http.get(job["links"]["self"]).json()["uuid"] == job["uuid"]


def test_a_process_listing_filters_by_state(engine, spec):
    # Given one job running (the 'slow' start sleeps 2 s) and one done
    running = engine.start_job("slow", key=unique("running")).json()["uuid"]
    done = engine.run_job("echo", key=unique("done"))["uuid"]
    wait_until(lambda: running in uuids_of(engine, "slow", "running"), 10, "the slow job to be listed running")
    resp = get(engine, "/api/process/echo/job", status="done", limit=500)
    schema.check(spec, "GET", "/api/process/{name}/job", resp)
    assert done in [j["uuid"] for j in resp.json()["jobs"]]
    assert all(j["status"]["current"] == "done" for j in resp.json()["jobs"])
    assert running not in uuids_of(engine, "slow", "done")
    # and a process that neither is in the catalog nor has jobs to be unknown, not empty
    unknown = get(engine, "/api/process/nothing_here/job")
    schema.check(spec, "GET", "/api/process/{name}/job", unknown)
    assert unknown.status_code == 404 and unknown.json()["title"] == "Unknown process"


def uuids_of(engine, process, state):
    return [j["uuid"] for j in get(engine, f"/api/process/{process}/job", status=state, limit=500).json()["jobs"]]


@pytest.mark.parametrize("query, words", [
    ("status=bogus", "'status' must be one of"),
    ("status=", "'status' must be one of"),
    ("limit=0", "'limit'"),
    ("limit=501", "'limit'"),
    ("limit=ten", "'limit'"),
    ("cursor=not-a-cursor", "'cursor'"),
    ("colour=blue", "unknown parameter 'colour'"),
    ("limit=1&limit=2", "more than once"),
])
def test_a_bad_listing_query_is_a_400_saying_what_is_wrong(engine, spec, query, words):
    resp = engine.http.get(f"{engine.base_url}/api/process/foo/job?{query}")
    assert resp.status_code == 400
    assert words in resp.json()["description"]
    schema.check(spec, "GET", "/api/process/{name}/job", resp)


def test_a_job_is_found_by_its_uuid_alone(engine, spec):
    doc = engine.run_job("echo", key="a/b c")
    resp = get(engine, f"/api/job/{doc['uuid']}")
    schema.check(spec, "GET", "/api/job/{uuid}", resp)
    assert resp.json()["key"] == "a/b c"
    assert resp.json()["links"]["self"].endswith(f"/key/a%2Fb%20c/job/{doc['uuid']}")
    assert get(engine, "/api/job/" + "0" * 32).status_code == 404


def test_cancel_in_the_middle_of_a_fan_out_lets_running_tasks_finish(engine, spec, activities):
    # Given a job whose four 1.5 s children are running
    before = activities.calls().get("/lab/sleep/1500", 0)
    location = engine.start_job("wide", key=unique("wide")).headers["Location"]
    wait_until(lambda: activities.calls().get("/lab/sleep/1500", 0) - before >= 4, 10, "the children to run")
    # When it is cancelled
    resp = engine.http.delete(location)
    # Expect a 202 saying it was running, and the job ending cancelled with its children done
    assert resp.status_code == 202
    schema.check(spec, "DELETE", JOB, resp)
    assert resp.json()["status"] == "running" and resp.json()["cancel_requested"]
    doc = wait_until(lambda: ended(engine, location), 15, "the job to end")
    assert doc["status"]["current"] == "cancelled"
    assert [t["status"]["current"] for t in doc["tasks"]] == ["done"] * 5
    assert doc["cancel_requested"] == resp.json()["cancel_requested"]
    schema.check(spec, "GET", JOB, engine.http.get(location))
    # and a second cancel of the finished job is a clear 409
    again = engine.http.post(location + "/cancel")
    assert again.status_code == 409
    assert "already ended cancelled" in again.json()["description"]
    schema.check(spec, "POST", JOB + "/cancel", again)


def test_no_new_task_starts_after_a_cancel(engine, spec, activities):
    # Given a job whose start activity (1.5 s) will name three children
    location = engine.start_job("delayed", key=unique("delayed")).headers["Location"]
    wait_until(lambda: engine.http.get(location).json()["status"]["current"] == "running", 10, "the job to run")
    # When it is cancelled (POST .../cancel) while the start task runs
    resp = engine.http.post(location + "/cancel")
    assert resp.status_code == 202
    schema.check(spec, "POST", JOB + "/cancel", resp)
    # Expect the start task to finish, recording its next activities, and none of them to start
    doc = wait_until(lambda: ended(engine, location), 15, "the job to end")
    assert doc["status"]["current"] == "cancelled"
    [start] = doc["tasks"]
    assert start["status"]["current"] == "done"
    h = engine.job_hash(doc)
    assert h["job.status.cancelled.time"] and "job.status.done.time" not in h
    assert engine.redis.exists(keys_of(doc) + ":cancelled") and not engine.redis.exists(keys_of(doc) + ":running")


def keys_of(doc):
    from cameron import keys
    return keys.job_tag(doc["process"], doc["key"], doc["uuid"])


def ended(engine, location):
    doc = engine.http.get(location, timeout=15).json()
    return doc if doc["status"]["current"] in ("done", "cancelled") else None


def test_cancelling_a_finished_or_unknown_job_is_refused(engine, spec):
    doc = engine.run_job("echo", key=unique("finished"))
    location = doc["links"]["self"]
    resp = engine.http.delete(location)
    assert resp.status_code == 409
    assert "already ended done" in resp.json()["description"]
    schema.check(spec, "DELETE", JOB, resp)
    unknown = engine.http.delete(location.replace(doc["uuid"], "f" * 32))
    assert unknown.status_code == 404
    schema.check(spec, "DELETE", JOB, unknown)
    assert engine.http.get(location).json()["status"]["current"] == "done"


def test_the_same_idempotency_key_and_body_give_the_same_job(engine, spec):
    key, idem = unique("idem"), unique("request")
    body = {"key": key, "data": "d", "requestor": "r"}
    url = f"{engine.base_url}/api/process/echo/start"
    first = engine.http.post(url, json=body, headers={"Idempotency-Key": idem})
    second = engine.http.post(url, json=body, headers={"Idempotency-Key": idem})
    assert first.status_code == 201 and second.status_code == 200
    schema.check(spec, "POST", "/api/process/{name}/start", first)
    schema.check(spec, "POST", "/api/process/{name}/start", second)
    assert second.headers["Location"] == first.headers["Location"]
    assert second.json()["uuid"] == first.json()["uuid"]
    assert second.headers["Idempotent-Replayed"] == "true"
    # Only one job was made.
    listed = get(engine, f"/api/process/echo/key/{key}/job").json()["jobs"]
    assert [j["uuid"] for j in listed] == [first.json()["uuid"]]
    # Without the header, the same body starts a new job.
    assert engine.http.post(url, json=body).json()["uuid"] != first.json()["uuid"]


def test_the_same_idempotency_key_with_another_body_is_a_422(engine, spec):
    idem = unique("request")
    url = f"{engine.base_url}/api/process/echo/start"
    assert engine.http.post(url, json={"key": "a", "data": "1", "requestor": "r"},
                            headers={"Idempotency-Key": idem}).status_code == 201
    resp = engine.http.post(url, json={"key": "a", "data": "2", "requestor": "r"},
                            headers={"Idempotency-Key": idem})
    assert resp.status_code == 422
    assert idem in resp.json()["description"]
    schema.check(spec, "POST", "/api/process/{name}/start", resp)
    bad = engine.http.post(url, json={"key": "a", "data": "1", "requestor": "r"},
                           headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["description"]


def test_errors_and_unknown_things_answer_as_documented(engine, spec):
    schema.check(spec, "POST", "/api/process/{name}/start", engine.start_job("no_such_process"))
    schema.check(spec, "POST", "/api/process/{name}/start",
                 engine.http.post(f"{engine.base_url}/api/process/foo/start", data=b"[]"))
    schema.check(spec, "GET", JOB, get(engine, "/api/process/foo/key/k/job/" + "0" * 32))
    started = engine.start_job("echo", key=unique("doc"))
    schema.check(spec, "POST", "/api/process/{name}/start", started)
    schema.check(spec, "GET", JOB, engine.http.get(started.headers["Location"]))
