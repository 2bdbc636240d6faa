"""Killing real engine processes mid-job: every accepted job still ends done."""

import json
import os
import signal
import subprocess
import sys

import pytest

from cameron import actorsys, keys
from cameron.redis_server import EmbeddedRedis
from conftest import start_engine, stop_engine, wait_until

pytestmark = pytest.mark.stack

SLOW_PATH = "/lab/sleep/2000"


@pytest.fixture
def own_engine(short_tmp, activities, request):
    """A disposable engine with a Redis of its own: these tests kill its processes, and its
    boot-time recovery must not touch other engines' jobs."""
    tmp = short_tmp / f"f{abs(hash(request.node.name)) % 10**6}"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    engine, web = start_engine(tmp, redis_server.url, activities)
    yield engine
    try:
        stop_engine(engine, web)
    finally:
        redis_server.stop()


def actor_pids(engine) -> dict:
    """Role -> pid of the actors that answer `cameron status` (a dead one has no pid)."""
    out = engine.cli("status", "--json")
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return {a["role"]: a.get("pid") for a in json.loads(out.stdout)["actors"]}


def children_of(pid: int) -> list[int]:
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(p))
            except OSError:
                pass
    return kids


def start_slow_jobs(engine, activities, count: int) -> list[str]:
    before = activities.calls().get(SLOW_PATH, 0)
    locations = []
    for i in range(count):
        resp = engine.start_job("slow", key=f"victim-{i}")
        assert resp.status_code == 201
        locations.append(resp.headers["Location"])
    wait_until(lambda: activities.calls().get(SLOW_PATH, 0) - before >= count, 15,
               "every slow job's activity call to be in flight")
    return locations


def assert_all_done_once(engine, locations):
    for location in locations:
        doc = engine.wait_done(location, timeout=30)
        assert [t["status"]["current"] for t in doc["tasks"]] == ["done"], doc["tasks"]


def test_jobs_survive_a_killed_task_actor(own_engine, activities):
    locations = start_slow_jobs(own_engine, activities, 10)
    for role, pid in actor_pids(own_engine).items():
        if role.startswith("runner:"):
            for task_actor in children_of(pid):
                os.kill(task_actor, signal.SIGKILL)
    assert_all_done_once(own_engine, locations)


def test_jobs_survive_killed_job_runners(own_engine, activities):
    locations = start_slow_jobs(own_engine, activities, 10)
    pids = actor_pids(own_engine)
    for role, pid in pids.items():
        if role.startswith("runner:"):
            os.kill(pid, signal.SIGKILL)
    # The supervisor replaced them, and the new runners took the jobs over from Redis.
    def replaced():
        now = actor_pids(own_engine)
        return all(now[r] not in (None, pids[r]) for r in pids if r.startswith("runner:"))
    wait_until(replaced, 15, "new runners", interval=0.2)
    assert_all_done_once(own_engine, locations)


def test_unfinished_jobs_resume_after_the_admin_is_killed_and_the_engine_restarted(own_engine, activities):
    locations = start_slow_jobs(own_engine, activities, 10)
    config = own_engine.config
    sid, admin = map(int, actorsys._pidfile(config).read_text().split())
    # kill -9 of the admin orphans every actor; they keep its port until cleared.
    os.kill(admin, signal.SIGKILL)
    restarted = own_engine.cli("start")
    assert restarted.returncode == 0, restarted.stderr
    assert "left by an engine that died" in restarted.stderr
    assert_all_done_once(own_engine, locations)


def kill_engine(engine, web):
    """kill -9 of every process of one engine: its actors, its admin and its gunicorn."""
    pids = actorsys.system_pids(engine.config)
    assert pids
    for pid in [web.pid] + children_of(web.pid) + pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    web.wait()
    actorsys.kill_and_wait(pids, engine.config)


def test_two_engines_on_one_redis_never_run_the_same_job_and_the_survivor_takes_over(short_tmp, activities):
    tmp = short_tmp / "lease"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    engines = []
    try:
        # Given two engines sharing one Redis, with leases of 1 s (renewed every 0.25 s)
        for name in ("a", "b"):
            engines.append(start_engine(tmp / name, redis_server.url, activities, CAMERON_LEASE_TTL="1"))
        (a, web_a), (b, web_b) = engines
        # When A runs jobs of 2 s, eight of B's lease checks long
        first = start_slow_jobs(a, activities, 5)
        assert_all_done_once(a, first)
        # Then B took none of them: each job's one task was called exactly once
        for location in first:
            assert len(activities.log(location.rsplit("/", 1)[1])) == 1

        # When A dies hard with jobs in flight
        second = start_slow_jobs(a, activities, 5)
        kill_engine(a, web_a)
        engines.remove((a, web_a))
        # Then B takes them over once A's lease expires, and ends them all
        for location in second:
            doc = b.wait_done(location.replace(a.base_url, b.base_url), timeout=30)
            assert [t["status"]["current"] for t in doc["tasks"]] == ["done"]
        assert not b.redis.exists(keys.engine_jobs(a.config.engine))
        assert b.redis.smembers(keys.ENGINES) == {b.config.engine}
        assert b.redis.scard(keys.engine_jobs(b.config.engine)) == 0
    finally:
        for engine, web in engines:
            stop_engine(engine, web)
        redis_server.stop()
