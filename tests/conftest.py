"""Fixtures that bring up the real stack: redis-server, activity servers, actor system, gunicorn."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from cameron import actorsys, keeper, procfs, store
from cameron.activity_server import ActivityServer
from cameron.config import ROOT, from_env
from cameron.redis_server import EmbeddedRedis
from bench.stack import free_port, wait_for  # noqa: F401 (free_port: the tests import it from here)

TIME_FORMAT = re.compile(r"^\d\d-\d\d-\d{4} \d\d:\d\d:\d\d$")


def descendants(root: int, parents: dict | None = None) -> set[int]:
    """The processes below `root`, by `parents` (pid -> parent pid; all of /proc by default)."""
    if parents is None:
        parents = {p: procfs.ppid(p) for p in procfs.all_pids()}
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    try:
        return wait_for(predicate, timeout, what, interval)
    except TimeoutError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def short_tmp():
    # Unix socket paths are limited to ~100 bytes: pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="cam", dir="/tmp")
    yield Path(path)
    subprocess.run(["rm", "-rf", path], check=False)


@pytest.fixture(scope="session")
def redis_server(short_tmp):
    server = EmbeddedRedis(str(short_tmp / "data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def activities():
    server = ActivityServer("127.0.0.1", 0).start_in_thread()
    yield server
    server.stop()


class Engine:
    """A running Cameron: actor system started by `cameron start`, API served by gunicorn."""

    def __init__(self, env: dict, base_url: str, redis_url: str):
        self.env = env
        self.config = from_env(env)
        self.base_url = base_url
        self.redis = store.connect(redis_url)
        self.http = requests.Session()

    def cli(self, *args, timeout=60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cameron.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start_job(self, process: str, key: str = "k1", data: str = "some data",
                  requestor: str = "tester") -> requests.Response:
        return self.http.post(f"{self.base_url}/api/process/{process}/start",
                              json={"key": key, "data": data, "requestor": requestor}, timeout=15)

    def run_job(self, process: str, timeout: float = 20, **fields) -> dict:
        """Start a job and return its document once it is done."""
        resp = self.start_job(process, **fields)
        assert resp.status_code == 201, resp.text
        return self.wait_done(resp.headers["Location"], timeout)

    def wait_done(self, location: str, timeout: float = 20) -> dict:
        def done():
            resp = self.http.get(location, timeout=15)
            if resp.status_code == 503:
                return None  # Redis was away a moment ago: the engine answers again shortly
            doc = resp.json()
            return doc if doc["status"]["current"] == "done" else None
        return wait_until(done, timeout, f"job {location} to be done")

    def job_hash(self, doc: dict) -> dict:
        from cameron import keys
        return self.redis.hgetall(keys.job_tag(doc["process"], doc["key"], doc["uuid"]))


def _catalog(activities: ActivityServer, closed_port: int) -> str:
    lab = f"{activities.url}/lab"
    return f"""
[processes.foo]
start = "{activities.url}/foo/v0.0.1/start"

[processes.mixed]
start = "{lab}/mixed"
allow = ["127.0.0.1:*"]            # its "refused" child calls port 9
read_timeout = 1
max_attempts = 2
retry_backoff = 0.1

[processes.flaky]
start = "{lab}/flaky/2"
retry_backoff = 0.2

[processes.flaky404]
start = "{lab}/flaky/2/404"

[processes.throttled]
start = "{lab}/flaky/9/429"
max_attempts = 3
retry_backoff = 0.1
retry_backoff_max = 0.4

[processes.fanout]
start = "{lab}/fanout/5/1000"

[processes.wider]
start = "{lab}/fanout/5/2000"

[processes.twins]
start = "{lab}/twins"

[processes.chain]
start = "{lab}/chain/3"

[processes.slowchain]
start = "{lab}/chain/5/300"

[processes.toowide]
start = "{lab}/fanout/21/0"

[processes.toodeep]
start = "{lab}/chain/12"

[processes.toobig]
start = "{lab}/big/200000"

[processes.slow]
start = "{lab}/sleep/2000"

[processes.refused]
start = "http://127.0.0.1:{closed_port}/nothing"

[processes.echo]
start = "{lab}/echo"

[processes.wide]
start = "{lab}/fanout/4/1500"

[processes.delayed]
start = "{lab}/delayed/1500/3/10"
"""


def start_engine(tmp: Path, redis_url: str, activities: ActivityServer, *, catalog=None,
                 **extra_env) -> tuple:
    """Start actors and gunicorn on free ports; returns (Engine, gunicorn process).
    `catalog(api_port)` gives the catalog's text; the lab's processes by default."""
    tmp.mkdir(parents=True, exist_ok=True)
    catalog_file = tmp / "processes.toml"
    env = {**os.environ, "CAMERON_ENV": "test", "CAMERON_PROCESSES": str(catalog_file),
           "CAMERON_REDIS_URL": redis_url, "CAMERON_DATA_DIR": str(tmp),
           "CAMERON_ADMIN_PORT": str(free_port()), "CAMERON_PORT": str(free_port()),
           "THESPIAN_BASE_IPADDR": "127.0.0.1", **extra_env}
    catalog_file.write_text(catalog(int(env["CAMERON_PORT"])) if catalog else _catalog(activities, free_port()))
    engine = Engine(env, f"http://127.0.0.1:{env['CAMERON_PORT']}", redis_url)
    try:
        started = engine.cli("start")
    except BaseException:
        _force_stop(engine)
        raise
    if started.returncode != 0:
        _force_stop(engine)
        pytest.fail(f"cameron start failed: {started.stderr}")
    try:
        return engine, start_web(engine)
    except BaseException:
        _force_stop(engine)
        raise


def start_web(engine: Engine, log=None) -> subprocess.Popen:
    """gunicorn for an engine whose actor system runs, its output to `log` (a file) if given;
    returns once it serves /api (401 too: with tokens on, /api wants one)."""
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"),
                            "cameron.wsgi:app"], env=engine.env, stdin=subprocess.DEVNULL,
                           stdout=log, stderr=log)

    def serving():
        try:
            return requests.get(f"{engine.base_url}/api", timeout=1).status_code in (200, 401)
        except requests.RequestException:
            assert web.poll() is None, "gunicorn exited at start"
            return False
    try:
        wait_until(serving, 30, "gunicorn to serve /api", interval=0.05)
    except BaseException:
        web.kill()
        web.wait()
        raise
    return web


@contextlib.contextmanager
def another_api_server(engine, log_dir, **env):
    """A second gunicorn on the engine's actor system, with settings of its own."""
    port = free_port()
    server = Engine({**engine.env, "CAMERON_PORT": str(port), **env}, f"http://127.0.0.1:{port}",
                    engine.config.effective_redis_url)
    server.log = log_dir / "web.log"
    with open(server.log, "wb") as log:
        server.web = start_web(server, log)
    try:
        yield server
    finally:
        if server.web.poll() is None:
            server.web.kill()
            server.web.wait()


def stop_web(server) -> float:
    """SIGTERM the server's gunicorn; how long it took to exit."""
    began = time.monotonic()
    server.web.send_signal(signal.SIGTERM)
    try:
        server.web.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail("gunicorn did not stop on SIGTERM")
    return time.monotonic() - began


def _force_stop(engine: Engine):
    """After a failed start: whatever of the actor system came up must not outlive the test."""
    try:
        engine.cli("stop", timeout=30)
    finally:
        actorsys.kill_and_wait(actorsys.system_pids(engine.config), engine.config)


def stop_engine(engine: Engine, web: subprocess.Popen):
    """Stop gunicorn and the actor system; fail if anything had to be killed or stays behind."""
    web.send_signal(signal.SIGTERM)
    try:
        web.wait(20)
    except subprocess.TimeoutExpired:
        web.kill()
        web.wait()
        pytest.fail("gunicorn did not stop on SIGTERM")
    pids = actorsys.system_pids(engine.config)
    stopped = engine.cli("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    left = [p for p in pids if actorsys.alive(p)]
    assert not left, f"actor processes left after `cameron stop`: {left}"
    assert not keeper.pidfile(engine.config).exists(), "the keeper still runs after `cameron stop`"


@pytest.fixture(scope="session")
def engine(short_tmp, redis_server, activities):
    # Small limits, so that the tests can go past them.
    engine, web = start_engine(short_tmp / "engine", redis_server.url, activities,
                               CAMERON_MAX_FANOUT="20", CAMERON_MAX_DEPTH="8",
                               CAMERON_MAX_RESPONSE_BYTES="100000")
    yield engine
    stop_engine(engine, web)

