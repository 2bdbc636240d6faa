"""Supervision all the way up, through the real stack: a killed Supervisor takes its tree with
it, and the process that started the engine replaces it without anyone asking."""

import json
import os
import signal

import pytest

from cameron import actorsys, keeper, keys, procfs
from conftest import descendants, start_engine, stop_engine, wait_until

pytestmark = pytest.mark.stack


def tree(engine) -> dict:
    """The actor system's processes: pid -> parent pid."""
    return {p: procfs.ppid(p) for p in actorsys.system_pids(engine.config)}


def test_a_killed_supervisor_takes_its_tree_along_and_is_replaced_unasked(short_tmp, redis_server, activities):
    engine, web = start_engine(short_tmp / "supervision", redis_server.url, activities)
    try:
        # `cameron start` left its keeper, and says so
        status = json.loads(engine.cli("status", "--json").stdout)
        assert status["keeper"]["pid"] and actorsys.alive(status["keeper"]["pid"])
        before = tree(engine)
        admin = next(p for p, parent in before.items() if parent not in before)
        supervisor = max((p for p, parent in before.items() if parent == admin),
                         key=lambda p: len(descendants(p, before)))
        old_tree = {supervisor} | descendants(supervisor, before)
        assert len(old_tree) >= 6  # catalog, JobData, scheduler, runners and their TaskActors
        # Given a job under way (five activities of 300 ms, one after the other)
        resp = engine.start_job("slowchain", key="through-a-kill")
        assert resp.status_code == 201
        uuid = resp.json()["uuid"]
        tag = keys.job_tag("slowchain", "through-a-kill", uuid)
        wait_until(lambda: engine.redis.hget(tag, keys.JOB_STATUS) == "running", 10, "the job to run")

        # When the Supervisor is killed, and nobody looks (no API call, no `cameron status`)
        os.kill(supervisor, signal.SIGKILL)

        # Expect its whole tree gone at once (no orphan keeps working), a new Supervisor with
        # a new tree in its place, as many processes as before
        wait_until(lambda: not any(actorsys.alive(p) for p in old_tree), 5, "the old tree to be gone")
        wait_until(lambda: len(tree(engine)) == len(before), 10, "as many actor processes as before")
        after = tree(engine)
        assert not old_tree & set(after)
        assert admin in after
        # and the job finished by the new tree, read from Redis alone
        wait_until(lambda: engine.redis.hget(tag, keys.JOB_STATUS) == "done", 30, "the job to be done")
        assert engine.redis.hget(tag, "job.errors") in (None, "0")
    finally:
        stop_engine(engine, web)
    # `cameron stop` stopped the keeper first: nothing brought a Supervisor back meanwhile
    assert not any(actorsys.alive(p) for p in tree(engine))


def health(engine) -> tuple[int, dict]:
    resp = engine.http.get(f"{engine.base_url}/api/health", timeout=10)
    return resp.status_code, resp.json()


def test_health_tells_the_truth_without_repairing_by_looking(short_tmp, redis_server, activities):
    engine, web = start_engine(short_tmp / "health", redis_server.url, activities, CAMERON_STALL_AFTER="1")
    try:
        # A whole engine, idle: healthy
        wait_until(lambda: health(engine)[0] == 200, 10, "a healthy engine")
        assert health(engine)[1]["actors"]["children"] == health(engine)[1]["actors"]["expected"]
        # Unfinished jobs that do not move for stall_after (1 s here): 503 saying so, then 200
        # once they have ended
        resp = engine.start_job("slow", key="stalls")  # one activity of 2 s
        assert resp.status_code == 201
        status, doc = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(health(engine)), 10,
                                 "health to see the job stand still")
        assert "1 unfinished job has not moved for" in doc["actors"]["error"], doc
        engine.wait_done(resp.headers["Location"])
        wait_until(lambda: health(engine)[0] == 200, 10, "health again once the job ended")

        # Without its keeper, a killed Supervisor stays dead: health says so, again and again,
        # and looking does not bring it back
        keeper.stop(engine.config)
        supervisor = health(engine)[1]["actors"]["supervisor_pid"]
        os.kill(supervisor, signal.SIGKILL)
        wait_until(lambda: "has not reported" in health(engine)[1]["actors"].get("error", ""), 10,
                   "health to see the tree gone")
        for _ in range(5):
            assert health(engine)[0] == 503
        assert len(tree(engine)) <= 2  # the admin and its logger: nobody made a Supervisor
    finally:
        stop_engine(engine, web)
