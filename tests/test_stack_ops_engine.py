"""Engines of their own for what the shared one cannot show: `cameron start --web` / `stop`
leaving no process, a catalog reload under running jobs, health with Redis down, finished
jobs expiring, and a cancel that outlives the runner it was sent to."""

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from cameron import actorsys, keys, web
from cameron import messages as m
from cameron.config import from_env
from cameron.redis_server import EmbeddedRedis
from conftest import free_port, start_engine, stop_engine, wait_until

pytestmark = pytest.mark.stack


def cli(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "cameron.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def catalog(activities, **processes) -> str:
    return "".join(f'[processes.{name}]\nstart = "{activities.url}/lab/{path}"\n\n'
                   for name, path in processes.items())


@pytest.fixture
def own_redis(short_tmp, request):
    tmp = short_tmp / f"o{abs(hash(request.node.name)) % 10**6}"
    server = EmbeddedRedis(str(tmp / "data")).start()
    yield tmp, server
    server.stop()


def test_start_web_reload_health_and_stop_leave_no_process(own_redis, activities):
    tmp, redis_server = own_redis
    processes = tmp / "processes.toml"
    processes.write_text(catalog(activities, slow="sleep/2000", echo="echo"))
    env = {**os.environ, "CAMERON_ENV": "test", "CAMERON_PROCESSES": str(processes),
           "CAMERON_REDIS_URL": redis_server.url, "CAMERON_DATA_DIR": str(tmp),
           "CAMERON_ADMIN_PORT": str(free_port()), "CAMERON_PORT": str(free_port()),
           "THESPIAN_BASE_IPADDR": "127.0.0.1"}
    config = from_env(env)
    base = config.listen_url
    started = cli(env, "start", "--web")
    try:
        # Given the engine started in the background with its API server
        assert started.returncode == 0, started.stderr
        assert f"Cameron API on {base}/api" in started.stdout
        pids = actorsys.system_pids(config) + [web.running_pid(config)]
        assert requests.get(f"{base}/api/health", timeout=10).status_code == 200
        status = json.loads(cli(env, "status", "--json").stdout)
        assert status["running"] and status["web"]["pid"] == web.running_pid(config)

        # When the catalog is reloaded under a running job
        slow = requests.post(f"{base}/api/process/slow/start", timeout=10,
                             json={"key": "k", "data": "d", "requestor": "r"}).headers["Location"]
        processes.write_text(catalog(activities, echo="echo", added="chain/2"))
        reloaded = cli(env, "processes", "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "2 processes; added: added; removed: slow" in reloaded.stdout
        # Expect new jobs to see the new catalog at once, and the running job to end as it began
        assert requests.post(f"{base}/api/process/slow/start", timeout=10,
                             json={"key": "k", "data": "d", "requestor": "r"}).status_code == 404
        added = requests.post(f"{base}/api/process/added/start", timeout=10,
                              json={"key": "k", "data": "d", "requestor": "r"})
        assert added.status_code == 201
        wait_until(lambda: requests.get(slow, timeout=10).json()["status"]["current"] == "done", 20,
                   "the slow job to end done")
        assert requests.get(slow, timeout=10).json()["tasks"][0]["status"]["current"] == "done"

        # and a broken file to change nothing, saying why
        processes.write_text("[processes.broken]\nstart = 7\n")
        refused = cli(env, "processes", "reload")
        assert refused.returncode == 2 and "keeps the previous one" in refused.stderr
        assert "added" in cli(env, "processes").stdout

        # With Redis down, health says which part is down
        redis_server.stop()
        health = requests.get(f"{base}/api/health", timeout=20)
        assert health.status_code == 503
        assert health.json()["redis"]["ok"] is False
        # the engine's own health record is in Redis: it says it cannot tell
        assert health.json()["actors"]["ok"] is False
        assert "health record cannot be read" in health.json()["actors"]["error"]
        assert cli(env, "status").returncode == 1
    finally:
        stopped = cli(env, "stop")
    # Expect stop to leave no process behind, and to say so with its exit codes
    assert stopped.returncode == 0, stopped.stderr
    assert "API server stopped" in stopped.stdout and "actor system stopped" in stopped.stdout
    left = [p for p in pids if actorsys.alive(p)]
    assert not left, f"processes left after `cameron stop`: {left}"
    assert cli(env, "stop").returncode == 1
    assert cli(env, "status").returncode == 3


@pytest.fixture(scope="module")
def retaining_engine(short_tmp, activities):
    """An engine that keeps finished jobs 2 s, with a start activity of 4 s that names children."""
    tmp = short_tmp / "retaining"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    processes = tmp / "retaining.toml"  # start_engine writes its own processes.toml
    processes.write_text(catalog(activities, echo="echo", delayed="delayed/4000/3/10"))
    try:
        engine, gunicorn = start_engine(tmp, redis_server.url, activities, CAMERON_JOB_RETENTION="2",
                                        CAMERON_PROCESSES=str(processes))
        yield engine
        stop_engine(engine, gunicorn)
    finally:
        redis_server.stop()


def test_a_cancel_survives_the_restart_of_the_jobs_runner(retaining_engine, activities):
    engine = retaining_engine
    path = "/lab/delayed/4000/3/10"
    before = activities.calls().get(path, 0)
    resp = engine.start_job("delayed", key="survivor")
    uuid, location = resp.json()["uuid"], resp.headers["Location"]
    wait_until(lambda: activities.calls().get(path, 0) > before, 10, "the start activity to be called")
    # Given a cancel recorded while the start task runs
    assert engine.http.delete(location).status_code == 202
    # When the job's runner is killed before that task ends
    slot = m.runner_slot(uuid, engine.config.runners)
    actors = json.loads(engine.cli("status", "--json").stdout)["actors"]
    os.kill(next(a["pid"] for a in actors if a["role"] == f"runner:{slot}"), signal.SIGKILL)
    # Expect the new runner to resume it (calling the start again) and still end it cancelled
    def ended():
        doc = engine.http.get(location, timeout=15).json()
        return doc if doc["status"]["current"] in ("done", "cancelled") else None
    doc = wait_until(ended, 30, "the job to end")
    assert doc["status"]["current"] == "cancelled"
    assert [t["name"] for t in doc["tasks"]] == ["start"]
    assert activities.calls().get(path, 0) - before == 2


def test_finished_jobs_expire_after_the_retention_and_leave_the_listings(retaining_engine):
    engine = retaining_engine
    doc = engine.run_job("echo", key="short-lived")
    tag = keys.job_tag("echo", "short-lived", doc["uuid"])
    assert 0 < engine.redis.ttl(tag) <= 2 and 0 < engine.redis.ttl(f"{tag}:start:done") <= 2
    wait_until(lambda: not engine.redis.exists(tag), 10, "the job hash to expire", interval=0.2)
    listing = engine.http.get(f"{engine.base_url}/api/process/echo/key/short-lived/job").json()
    assert listing["jobs"] == []
    assert engine.redis.zcard(keys.key_jobs("echo", "short-lived")) == 0
    assert engine.http.get(doc["links"]["self"]).status_code == 404
