"""Supervision all the way up, through the real stack: a killed Supervisor takes its tree with
it, and the process that started the engine replaces it without anyone asking."""

import json
import os
import signal

import pytest

from cameron import actorsys, keys
from conftest import start_engine, stop_engine, wait_until

pytestmark = pytest.mark.stack


def tree(engine) -> dict:
    """The actor system's processes: pid -> parent pid."""
    return {p: actorsys._ppid(p) for p in actorsys.system_pids(engine.config)}


def descendants(parents: dict, root: int) -> set:
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_a_killed_supervisor_takes_its_tree_along_and_is_replaced_unasked(short_tmp, redis_server, activities):
    engine, web = start_engine(short_tmp / "supervision", redis_server.url, activities)
    try:
        # `cameron start` left its keeper, and says so
        status = json.loads(engine.cli("status", "--json").stdout)
        assert status["keeper"]["pid"] and actorsys.alive(status["keeper"]["pid"])
        before = tree(engine)
        admin = next(p for p, parent in before.items() if parent not in before)
        supervisor = max((p for p, parent in before.items() if parent == admin),
                         key=lambda p: len(descendants(before, p)))
        old_tree = {supervisor} | descendants(before, supervisor)
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
