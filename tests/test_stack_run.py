"""`cameron run` (what ./run.sh runs): embedded Redis, actors, foo server and gunicorn, then SIGTERM."""

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from cameron import actorsys
from cameron.config import from_env
from conftest import free_port, wait_until

pytestmark = pytest.mark.stack


def descendants(pid: int) -> set[int]:
    parents = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    parents[int(p)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_cameron_run_serves_foo_end_to_end_and_sigterm_leaves_no_process(short_tmp):
    data = short_tmp / "run"
    foo_port = free_port()
    # The shipped catalog, whose sample start URL follows the sample server's port.
    env = {**os.environ, "CAMERON_DATA_DIR": str(data), "CAMERON_PORT": str(free_port()),
           "CAMERON_ADMIN_PORT": str(free_port()), "CAMERON_ENV": "development"}
    for name in ("CAMERON_REDIS_URL", "CAMERON_PROCESSES", "CAMERON_CONFIG", "CAMERON_FOO_PORT"):
        env.pop(name, None)  # the embedded Redis and the shipped settings, as a new user gets them
    base = f"http://127.0.0.1:{env['CAMERON_PORT']}"
    run = subprocess.Popen([sys.executable, "-m", "cameron.cli", "run", "--foo-port", str(foo_port)],
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    actor_pids = []
    try:
        def serving():
            assert run.poll() is None, "cameron run exited at start"
            try:
                return requests.get(f"{base}/api", timeout=1).ok
            except requests.RequestException:
                return False
        wait_until(serving, 60, "cameron run to serve the API", interval=0.1)

        resp = requests.post(f"{base}/api/process/foo/start", timeout=10, json={
            "key": "(id,007)", "data": "be careful with that data", "requestor": "bob_the_thin"})
        assert resp.status_code == 201
        wait_until(lambda: requests.get(resp.headers["Location"], timeout=10).json()["status"]["current"]
                   == "done", 20, "the foo job to be done")
        assert (data / "redis" / "appendonlydir").exists() or (data / "redis" / "appendonly.aof").exists()
        assert json.loads((data / "run" / "engine.json").read_text())["foo_port"] == foo_port

        children = descendants(run.pid)
        actor_pids = actorsys.system_pids(from_env(env))
        assert children and actor_pids
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            code = run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            actorsys.kill_and_wait(actorsys.system_pids(from_env(env)), from_env(env))
            pytest.fail("cameron run did not stop on SIGTERM")
    assert code == 0
    assert not (data / "run" / "engine.json").exists()
    left = [p for p in children | set(actor_pids) if actorsys.alive(p)]
    assert not left, f"processes left after SIGTERM: {left}"
