"""Jobs through the real stack: gunicorn, actor system, redis-server and HTTP activity servers."""

import json
import time
from urllib.parse import quote

import pytest

from cameron import keys
from conftest import TIME_FORMAT

pytestmark = pytest.mark.stack

ORIGINAL_REQUEST = {"key": "(id,007)", "data": "be careful with that data", "requestor": "bob_the_thin"}


def test_the_foo_job_runs_to_done_with_seven_tasks_in_start_order(engine):
    # Given the sample workflow, when a client starts it with the original request
    resp = engine.start_job("foo", **ORIGINAL_REQUEST)

    # Expect a 201 naming the job, with a Location on the request's own host, key encoded
    assert resp.status_code == 201
    body = resp.json()
    assert len(body["uuid"]) == 32 and int(body["uuid"], 16) >= 0
    assert resp.headers["Location"] == (
        f"{engine.base_url}/api/process/foo/key/%28id%2C007%29/job/{body['uuid']}")
    assert body["links"]["self"] == resp.headers["Location"]

    # and the job ends done, its seven tasks in start order, three levels deep
    doc = engine.wait_done(resp.headers["Location"])
    assert (doc["process"], doc["key"], doc["uuid"]) == ("foo", "(id,007)", body["uuid"])
    assert doc["requestor"] == "bob_the_thin"
    assert TIME_FORMAT.match(doc["status"]["time"])
    names = [t["name"] for t in doc["tasks"]]
    assert names[0] == "start" and names[-1] == "act_5_sub_1"
    assert sorted(names[1:6]) == [f"act_{i}" for i in range(1, 6)]
    assert all(t["status"]["current"] == "done" for t in doc["tasks"])
    assert doc["errors"] == 0


def test_activities_get_the_protocol_body_and_pass_data_on(engine):
    doc = engine.run_job("foo", **ORIGINAL_REQUEST)
    tasks = {t["name"]: t for t in doc["tasks"]}
    # The start task gets the job's own input as requestor.
    assert tasks["start"]["requestor"] == "bob_the_thin"
    assert tasks["start"]["data"]["who_id"] == "(id,007)"
    # Children get the parent's data as JSON (not a string) and its answer's name as requestor.
    for i in range(1, 6):
        assert tasks[f"act_{i}"]["requestor"] == "whois"
        assert tasks[f"act_{i}"]["data"] == {"act": str(i), "who_id": "(id,007)", "requestor": "whois"}
    assert tasks["act_5_sub_1"]["requestor"] == "foo_act_5"
    assert tasks["act_5_sub_1"]["data"] == {"sub": 1, "from": "foo_act_5"}


def test_redis_holds_the_original_schema_for_foo(engine):
    doc = engine.run_job("foo", **ORIGINAL_REQUEST)
    tag = keys.job_tag("foo", "(id,007)", doc["uuid"])
    h = engine.redis.hgetall(tag)

    job_fields = {"job.key", "job.data", "job.requestor", "job.status.current", "job.status.scheduled.time",
                  "job.status.running.time", "job.status.done.time", "job.tasks"}
    names = ["start", "act_1", "act_2", "act_3", "act_4", "act_5", "act_5_sub_1"]
    task_fields = {f"task.{name}.{f}" for name in names for f in (
        "requestor", "status.current", "status.running.time", "status.done.time",
        "output.data", "output.next_activities")}
    original = job_fields | task_fields
    assert len(original) == 50
    assert original <= set(h), sorted(original - set(h))
    assert h["job.key"] == "(id,007)" and h["job.data"] == "be careful with that data"
    assert h["job.requestor"] == "bob_the_thin" and h["job.status.current"] == "done"
    assert h["job.tasks"].split(",") == [t["name"] for t in doc["tasks"]]
    for field, value in h.items():
        if field.endswith(".time"):
            assert TIME_FORMAT.match(value), (field, value)
    assert json.loads(h["task.start.output.next_activities"])["definitions"][0]["name"] == "act_1"
    assert h["task.act_1.output.next_activities"] == "undefined"
    assert json.loads(h["task.act_1.output.data"])["act"] == "1"
    assert h["task.act_5_sub_1.parent"] == "act_5" and h["task.act_5_sub_1.requestor"] == "foo_act_5"

    # Markers: only the final ones are left.
    assert engine.redis.exists(f"{tag}:done")
    assert not engine.redis.exists(f"{tag}:pending") and not engine.redis.exists(f"{tag}:running")
    for name in names:
        assert engine.redis.exists(f"{tag}:{name}:done")
        assert not engine.redis.exists(f"{tag}:{name}:running")


def test_every_kind_of_activity_failure_ends_its_task_in_error_and_the_job_done(engine, activities):
    # Given a start activity whose children fail in every way (the 'mixed' process reads with
    # a 1 s timeout and calls at most twice), beside one good child
    doc = engine.run_job("mixed", timeout=30)
    tasks = {t["name"]: t for t in doc["tasks"]}
    assert tasks["start"]["status"]["current"] == "done"
    assert tasks["good"]["status"]["current"] == "done"
    assert tasks["good"]["data"] == "to the children"
    expected = {
        "status": "HTTP 500",
        "notjson": "not JSON",
        "shape": "must be a JSON object",
        "noname": "no 'name'",
        "badnext": "definitions[0] needs an http(s) 'url'",
        "sleep": "read timeout",
        "refused": "connection",
    }
    tag = keys.job_tag("mixed", "k1", doc["uuid"])
    for name, words in expected.items():
        task = tasks[name]
        assert task["status"]["current"] == "error", name
        assert words in task["data"]["error"], (name, task["data"])
        assert task["data"]["url"] == task["url"]
        assert engine.redis.exists(f"{tag}:{task['id']}:error")
        assert not engine.redis.exists(f"{tag}:{task['id']}:running")
    # Then only what calling again may cure was called again: 5xx, timeouts, refused connections
    retried = {"status", "sleep", "refused"}
    for name in expected:
        attempts = 2 if name in retried else 1
        assert tasks[name]["attempts"] == attempts, (name, tasks[name])
        assert engine.redis.hget(tag, f"task.{tasks[name]['id']}.attempts") == str(attempts)
        assert ("after 2 attempts" in tasks[name]["data"]["error"]) == (name in retried)
    assert tasks["good"]["attempts"] == 1
    assert doc["errors"] == len(expected)
    assert engine.redis.exists(f"{tag}:done")


def test_a_start_activity_nobody_listens_on_ends_the_job_done_with_one_error(engine):
    doc = engine.run_job("refused")
    [task] = doc["tasks"]
    assert task["status"]["current"] == "error"
    assert "connection" in task["data"]["error"]
    assert doc["errors"] == 1


def test_two_tasks_with_the_same_activity_name_are_both_recorded(engine):
    doc = engine.run_job("twins")
    twins = [t for t in doc["tasks"] if t["name"] == "twin"]
    assert len(twins) == 2
    assert [(t["index"], t["id"]) for t in twins] == [(1, "twin"), (2, "twin#2")]
    assert all(t["status"]["current"] == "done" for t in twins)
    h = engine.job_hash(doc)
    assert h["job.tasks"] == "start,twin,twin#2"
    assert h["task.twin.status.current"] == h["task.twin#2.status.current"] == "done"
    assert h["task.twin#2.name"] == "twin"


def test_five_siblings_of_one_second_run_at_the_same_time(engine):
    started = time.monotonic()
    doc = engine.run_job("fanout")
    elapsed = time.monotonic() - started
    children = doc["tasks"][1:]
    assert len(children) == 5 and all(t["status"]["current"] == "done" for t in children)
    assert all(t["duration_ms"] >= 1000 for t in children)
    # One after another they would take at least 5 s.
    assert elapsed < 3.5, f"five 1 s siblings took {elapsed:.2f} s"


def test_a_chain_runs_level_by_level(engine):
    doc = engine.run_job("chain")
    assert [t["name"] for t in doc["tasks"]] == ["start", "chain_2", "chain_1", "chain_0"]
    assert [t["parent"] for t in doc["tasks"]] == [None, 0, 1, 2]
    assert [t["requestor"] for t in doc["tasks"][1:]] == ["chain_3", "chain_2", "chain_1"]


@pytest.mark.parametrize("key", ["MixedCase", "with space", "a/b/c", "(id,007)", "ünï, (x/y) Z"])
def test_keys_round_trip_through_the_location(engine, key):
    resp = engine.start_job("foo", key=key)
    assert resp.status_code == 201
    assert f"/key/{quote(key, safe='')}/job/" in resp.headers["Location"]
    doc = engine.wait_done(resp.headers["Location"])
    assert doc["key"] == key
    assert doc["tasks"][0]["data"]["who_id"] == key


def test_a_flaky_activity_is_called_again_with_backoff_until_it_answers(engine, activities):
    # Given an activity that answers 503 twice, then well (retry_backoff 0.2 s)
    doc = engine.run_job("flaky")
    [task] = doc["tasks"]
    # Then the task ends done after three attempts, and says so
    assert task["status"]["current"] == "done", task
    assert task["attempts"] == 3
    calls = [c for c in activities.log(doc["uuid"])]
    assert [c["attempt"] for c in calls] == [1, 2, 3]
    assert {c["task"] for c in calls} == {"0:start"}
    # with exponential backoff and jitter in [d/2, d]: >= 0.1 s, then >= 0.2 s
    gaps = [b["time"] - a["time"] for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps
    assert gaps[0] < 1.0 and gaps[1] < 1.5, gaps


def test_a_4xx_answer_is_not_called_again(engine, activities):
    doc = engine.run_job("flaky404")
    [task] = doc["tasks"]
    assert task["status"]["current"] == "error"
    assert "HTTP 404" in task["data"]["error"] and "attempts" not in task["data"]["error"]
    assert task["attempts"] == 1
    assert [c["attempt"] for c in activities.log(doc["uuid"])] == [1]


def test_429_is_retried_up_to_the_process_maximum_then_recorded(engine, activities):
    doc = engine.run_job("throttled")
    [task] = doc["tasks"]
    assert task["status"]["current"] == "error"
    assert "HTTP 429" in task["data"]["error"] and "after 3 attempts" in task["data"]["error"]
    assert task["attempts"] == 3
    assert doc["errors"] == 1


@pytest.mark.parametrize("process, tasks, words", [
    ("toowide", 1, "21 next activities exceed the fan-out limit of 20"),
    ("toodeep", 8, "next activities would exceed the job depth limit of 8"),
    ("toobig", 1, "answer larger than the 100000-byte limit"),
])
def test_past_a_limit_the_task_ends_in_error_naming_it_and_the_engine_stays_healthy(engine, process, tasks, words):
    # Given the test engine's limits: fan-out 20, depth 8, answers of 100 kB
    doc = engine.run_job(process)
    # Then the task that went past the limit ends in error saying which, its ancestors are done
    *done, last = doc["tasks"]
    assert len(doc["tasks"]) == tasks
    assert all(t["status"]["current"] == "done" for t in done)
    assert last["status"]["current"] == "error" and words in last["data"]["error"], last
    assert last["attempts"] == 1  # calling again would go past it again
    assert doc["errors"] == 1
    # ... and the engine goes on serving jobs
    assert engine.run_job("foo")["errors"] == 0
