"""`cameron run` (what ./run.sh runs): embedded Redis, actors, foo server and gunicorn, then SIGTERM."""

import ipaddress
import json
import os
import socket
import stat
import signal
import subprocess
import sys

import pytest
import requests

from cameron import actorsys, procfs
from cameron.config import from_env
from conftest import descendants, free_port, wait_until

pytestmark = pytest.mark.stack


def assert_only_loopback(pids, run_pid, env):
    """Every socket any process of the engine listens on is bound to loopback: Thespian's
    transport unpickles what reaches it, so one open to the network runs strangers' code."""
    sockets = procfs.listening(pids)
    ports = {port for _, _, port in sockets}
    # The scan must see what it checks: the API, the admin, the sample server, the actors.
    assert {int(env["CAMERON_PORT"]), int(env["CAMERON_ADMIN_PORT"])} <= ports, sockets
    assert len(sockets) >= 8, sockets
    assert [s for s in sockets if b"gunicorn" in procfs.cmdline(s[0]) and s[2] != int(env["CAMERON_PORT"])], \
        f"no gunicorn worker's Thespian endpoint among {sockets}"
    exposed = [s for s in sockets if not ipaddress.ip_address(s[1]).is_loopback]
    assert not exposed, f"listening beyond loopback (pid, address, port): {exposed}"
    # And no other address of this machine reaches the admin port.
    for address in procfs.local_addresses() - {"0.0.0.0", "::"}:
        if ipaddress.ip_address(address).is_loopback or ipaddress.ip_address(address).is_link_local:
            continue
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
            s.settimeout(2)
            assert s.connect_ex((address, int(env["CAMERON_ADMIN_PORT"]))) != 0, \
                f"the admin port answers on {address}"


def leave_readable(redis_dir):
    """The embedded Redis's folder as an older version left it: readable by every local user."""
    (redis_dir / "old").mkdir(parents=True)
    for path in (redis_dir / "redis.log", redis_dir / "old" / "dump.rdb"):
        path.write_text("")
        path.chmod(0o644)
    for path in (redis_dir, redis_dir / "old"):
        path.chmod(0o755)


def assert_private(redis_dir):
    """The embedded Redis's data (every job's data) is readable by its owner alone: folders
    and its socket 0700, files 0600."""
    paths = [redis_dir, *redis_dir.rglob("*")]
    assert any(p.is_socket() for p in paths) and len(paths) >= 6, paths  # it sees Redis's files
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() or path.is_socket() else 0o600), f"{path} has mode {oct(mode)}"


def test_cameron_run_serves_foo_end_to_end_on_loopback_only_and_sigterm_leaves_no_process(short_tmp):
    data = short_tmp / "run"
    leave_readable(data / "redis")
    foo_port = free_port()
    # The shipped catalog, whose sample start URL follows the sample server's port; calls
    # signed, which the sample server checks.
    env = {**os.environ, "CAMERON_DATA_DIR": str(data), "CAMERON_PORT": str(free_port()),
           "CAMERON_ADMIN_PORT": str(free_port()), "CAMERON_ENV": "development",
           "CAMERON_SIGNING_KEY": "run-signing-key"}
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
        unsigned = requests.post(f"http://127.0.0.1:{foo_port}/foo/v0.0.1/start", timeout=10,
                                 json={"key": "k", "data": "d", "requestor": "r"})
        assert unsigned.status_code == 401, unsigned.text
        assert json.loads((data / "run" / "engine.json").read_text())["foo_port"] == foo_port

        # Asking the actors (the catalog) makes a gunicorn worker open its Thespian endpoint.
        assert requests.get(f"{base}/api/process", timeout=10).ok
        children = descendants(run.pid)
        actor_pids = actorsys.system_pids(from_env(env))
        assert children and actor_pids
        assert_only_loopback(children | set(actor_pids), run.pid, env)
        assert_private(data / "redis")
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
