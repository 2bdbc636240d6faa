"""The operator's commands against a running engine: processes, jobs, job (--watch), cancel,
start-job (--wait), status; their output, --json and exit codes."""

import json
import uuid as uuidlib

import pytest

from conftest import wait_until

pytestmark = pytest.mark.stack


def unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:8]}"


def test_processes_lists_the_catalog_as_a_table_and_as_json(engine):
    table = engine.cli("processes")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "START"]
    assert any(r.split()[0] == "foo" and "/foo/v0.0.1/start" in r for r in rows)
    as_json = json.loads(engine.cli("processes", "--json").stdout)
    assert {"foo", "echo", "wide"} <= {p["name"] for p in as_json["processes"]}
    mixed = next(p for p in as_json["processes"] if p["name"] == "mixed")
    assert mixed["read_timeout"] == 1.0


def test_start_job_wait_shows_the_job_to_its_end_with_its_task_tree(engine):
    key = unique("cli")
    out = engine.cli("start-job", "foo", "--key", key, "--data", "d", "--wait")
    assert out.returncode == 0, out.stderr
    assert "accepted" in out.stdout
    assert "[" + "#" * 30 + "] 7/7" in out.stdout  # the progress bar, full at the end
    assert f"key {key!r}" in out.stdout and "done" in out.stdout
    tree = [line.strip() for line in out.stdout.splitlines() if ":act_" in line or ":start" in line]
    assert tree[0].startswith("0:start") and any("└─" in line and "act_5_sub_1" in line for line in tree)


def test_start_job_wait_exits_1_when_a_task_failed(engine):
    out = engine.cli("start-job", "refused", "--key", unique("bad"), "--wait", "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["status"]["current"] == "done" and doc["tasks"][0]["status"]["current"] == "error"


def test_job_shows_one_job_by_url_or_id_and_jobs_lists_them(engine):
    key = unique("show")
    doc = engine.run_job("foo", key=key)
    for ref in (doc["uuid"], doc["links"]["self"]):
        out = engine.cli("job", ref)
        assert out.returncode == 0, out.stderr
        assert doc["uuid"] in out.stdout and "act_5_sub_1" in out.stdout
    assert json.loads(engine.cli("job", doc["uuid"], "--json").stdout)["tasks"] == doc["tasks"]
    listed = engine.cli("jobs", "foo", "--key", key)
    assert listed.returncode == 0 and doc["uuid"] in listed.stdout
    assert listed.stdout.splitlines()[0].split()[:2] == ["UUID", "STATUS"]
    by_state = json.loads(engine.cli("jobs", "foo", "--key", key, "--status", "running", "--json").stdout)
    assert by_state["jobs"] == []


def test_jobs_pages_with_a_cursor(engine):
    key = unique("pages")
    uuids = {engine.run_job("echo", key=key)["uuid"] for _ in range(3)}
    first = json.loads(engine.cli("jobs", "echo", "--key", key, "--limit", "2", "--json").stdout)
    assert len(first["jobs"]) == 2 and first["next_cursor"]
    text = engine.cli("jobs", "echo", "--key", key, "--limit", "2")
    assert f"--cursor {first['next_cursor']}" in text.stdout
    rest = json.loads(engine.cli("jobs", "echo", "--key", key, "--limit", "2", "--cursor",
                                 first["next_cursor"], "--json").stdout)
    assert {j["uuid"] for j in first["jobs"] + rest["jobs"]} == uuids and rest["next_cursor"] is None


def test_job_watch_follows_a_running_job_until_it_ends(engine):
    resp = engine.start_job("wide", key=unique("watch"))
    out = engine.cli("job", resp.headers["Location"], "--watch")
    assert out.returncode == 0, out.stderr
    # Not a terminal: one line per change, the last with every task finished.
    bars = [line for line in out.stdout.splitlines() if "] " in line and "tasks" in line]
    assert len(bars) >= 2 and "5/5 tasks" in bars[-1]
    assert "done" in bars[-1]


def test_cancel_by_id_then_again_exits_5(engine):
    uuid = engine.start_job("slow", key=unique("cancel")).json()["uuid"]
    out = engine.cli("cancel", uuid)
    assert out.returncode == 0, out.stderr
    assert "cancel requested" in out.stdout
    wait_until(lambda: engine.cli("job", uuid, "--json").stdout and
               json.loads(engine.cli("job", uuid, "--json").stdout)["status"]["current"] == "cancelled",
               20, "the job to end cancelled", interval=0.3)
    again = engine.cli("cancel", uuid)
    assert again.returncode == 5
    assert again.stderr.strip() == f"cameron: error: job {uuid} already ended cancelled; nothing to cancel"


@pytest.mark.parametrize("args, code, words", [
    (["job", "not-a-job"], 2, "neither a job URL"),
    (["job", "0" * 32], 4, "no job 00000000"),
    (["cancel", "0" * 32], 4, "no job"),
    (["start-job", "no_such_process", "--key", "k"], 4, "no process named 'no_such_process'"),
    (["jobs", "foo", "--cursor", "garbage"], 2, "--cursor"),
    (["jobs", "foo", "--limit", "0"], 2, "--limit"),
])
def test_errors_are_one_line_and_a_useful_exit_code(engine, args, code, words):
    out = engine.cli(*args)
    assert out.returncode == code, out.stdout + out.stderr
    assert words in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_start_job_with_an_idempotency_key_starts_one_job(engine):
    key, idem = unique("idem"), unique("req")
    first = json.loads(engine.cli("start-job", "echo", "--key", key, "--idempotency-key", idem, "--json").stdout)
    again = json.loads(engine.cli("start-job", "echo", "--key", key, "--idempotency-key", idem, "--json").stdout)
    assert again["uuid"] == first["uuid"] and again["replayed"]
    other = engine.cli("start-job", "echo", "--key", key, "--data", "other", "--idempotency-key", idem)
    assert other.returncode == 5


def test_status_shows_every_actor_redis_and_jobs_by_state(engine):
    engine.run_job("echo", key=unique("status"))
    out = engine.cli("status", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["running"] and report["redis"]["ok"]
    actors = {a["role"]: a for a in report["actors"]}
    assert actors["supervisor"]["class"] == "Supervisor" and actors["supervisor"]["parent"] == "actor system"
    assert actors["scheduler"]["class"] == "JobScheduler" and actors["scheduler"]["parent"] == "supervisor"
    assert actors["task_actor:0"]["class"] == "TaskActor" and actors["task_actor:0"]["parent"] == "runner:0"
    assert {"catalog", "job_data", "runner:0", "runner:1", "task_actor:1"} <= set(actors)
    assert all(a["alive"] and a["pid"] > 0 and a["messages"] > 0 for a in actors.values())
    assert report["jobs"]["echo"]["done"] >= 1
    text = engine.cli("status")
    assert "actor system running" in text.stdout and "JobRunner" in text.stdout
    assert "PROCESS" in text.stdout and "cancelled" in text.stdout
