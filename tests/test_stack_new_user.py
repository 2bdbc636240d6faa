"""A new user's first hour, as the README tells it, from a fresh copy of the checkout and on
ports of their own: start in the background, the sample job done, `cameron status` from a
shell without the engine's variables, stop, nothing left behind."""

import os
import shutil
import subprocess
import sys

import pytest
import requests

from cameron import actorsys, procfs
from cameron.config import ROOT
from conftest import free_port, wait_until

pytestmark = pytest.mark.stack


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_readme_path_on_ports_of_ones_own(short_tmp):
    # Given a fresh copy of the checkout (what a clone holds: no .cameron, no record) and a
    # shell whose environment names no Cameron setting
    clone = short_tmp / "clone"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cameron", "__pycache__", ".pytest_cache", "*.egg-info", "bench"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CAMERON_", "THESPIAN_"))}
    ports = {"CAMERON_PORT": free_port(), "CAMERON_ADMIN_PORT": free_port(), "CAMERON_FOO_PORT": free_port()}

    def cameron(*args, env=clean):
        # `cameron` of that copy: run from it, its own package comes first on the path.
        return subprocess.run([sys.executable, "-m", "cameron.cli", *args], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=90)

    # When the user starts everything in the background on their ports
    started = cameron("start", "--web", "--with-foo", env={**clean, **{k: str(v) for k, v in ports.items()}})
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert (clone / ".cameron" / "run" / "engine.json").exists()
        base = f"http://127.0.0.1:{ports['CAMERON_PORT']}"
        # and starts the sample job with the README's request
        resp = requests.post(f"{base}/api/process/foo/start", timeout=10, json={
            "key": "(id,007)", "data": "be careful with that data", "requestor": "bob_the_thin"})
        assert resp.status_code == 201, resp.text
        # Expect it done, every task done: the sample catalog called the sample server's own port
        doc = wait_until(lambda: (d := requests.get(resp.headers["Location"], timeout=10).json())
                         ["status"]["current"] == "done" and d, 30, "the sample job to be done")
        assert [t["status"]["current"] for t in doc["tasks"]] == ["done"] * 7

        # and `cameron status` from a shell without the engine's variables to find it
        status = cameron("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"admin 127.0.0.1:{ports['CAMERON_ADMIN_PORT']}" in status.stdout
        assert f"{base}/api (pid" in status.stdout
        assert "foo" in status.stdout and "1 unfinished" not in status.stdout
    finally:
        # When the user stops it from that shell too
        stopped = cameron("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for what in ("API server", "actor system", "sample server", "embedded Redis"):
        assert f"Cameron {what} stopped" in stopped.stdout
    # Expect nothing left: no listener on any of the ports, no process of the engine, no record
    assert not [name for name, port in ports.items() if _listening(port)]
    left = [pid for pid in procfs.all_pids() if pid != os.getpid() and _in(pid, clone)]
    assert not left, f"processes left after `cameron stop`: {left}"
    assert not (clone / ".cameron" / "run" / "engine.json").exists()
    assert cameron("status").returncode == 3


def _in(pid: int, folder) -> bool:
    """Whether a process runs from `folder` (its working directory or its command line)."""
    try:
        if os.readlink(f"/proc/{pid}/cwd").startswith(str(folder)):
            return actorsys.alive(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(folder).encode() in f.read() and actorsys.alive(pid)
    except OSError:
        return False
