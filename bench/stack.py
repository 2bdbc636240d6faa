"""The real stack under test, started and stopped by the benchmark: embedded Redis, the bench
activity server, the actor system (`cameron start`) and gunicorn, on free loopback ports in a
temp dir; plus what the figures read from it (job completions, memory of its processes)."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import hiredis

from bench.activities import GUNICORN_WORKERS
from cameron import actorsys, keys, store
from cameron.config import ROOT, from_env
from cameron.redis_server import EmbeddedRedis

#: Every job the bench starts has this key prefix; processes are named below in catalog().
KEY = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy, and return that; TimeoutError
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def catalog(acts: str, sizes: dict) -> str:
    """One process per figure; the lab paths carry the sizes (fan-out width, sleep times)."""
    # A long sleep must not outlast the default read timeout (30 s): it would be cut and
    # called again, and the retries would weigh on what is measured meanwhile.
    long_sleep = f"read_timeout = {sizes['inflight_ms'] // 1000 + 30}\n" if sizes["inflight_ms"] > 20_000 else ""
    return "\n".join(f'[processes.{name}]\nstart = "{acts}{path}"\n{extra}' for name, path, extra in [
        ("chain", f"/lab/chain/{sizes['chain'] - 1}", ""),  # start + (chain - 1) more tasks
        ("chain1", "/lab/chain/0", ""),  # one task: the fixed cost of a job, for the marginal hop
        ("foo", "/foo/v0.0.1/start", ""),
        ("fanout", f"/lab/fanout/{sizes['fanout_n']}/{sizes['fanout_ms']}", ""),
        ("inflight", f"/lab/sleep/{sizes['inflight_ms']}", long_sleep),
        ("accept", "/lab/echo", ""),
    ])


class JobTimeout(RuntimeError):
    """A job the bench started was not done in time: the engine lost it, or is stuck."""

    def __init__(self, uuid: str, timeout: float):
        super().__init__(f"job {uuid} not done within {timeout:g} s")
        self.uuid = uuid


class DoneWatcher:
    """Learns the moment each job is done from Redis keyspace notifications on the
    `JOBTAG:done` marker, which the engine sets in the same MULTI/EXEC as
    `job.status.current=done`: exact to the millisecond, and no polling load on the engine
    (the hash's own times are only to the second)."""

    def __init__(self, redis_socket: str):
        # Our own embedded Redis: enabling notifications touches nobody else's server.
        with store.connect(f"unix://{redis_socket}") as redis:
            redis.config_set("notify-keyspace-events", "K$")
        # A bare socket and hiredis's reader rather than redis-py's PubSub, whose layers cost
        # ~40 µs per notification: at 10,000 jobs in a few seconds that is CPU the engine
        # under test would not get.
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(redis_socket)
        pattern = f"__keyspace@0__:{keys.PREFIX}:process:*:job:{'?' * 32}:done".encode()
        self.sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(pattern), pattern))
        self.reader = hiredis.Reader()
        self.lock = threading.Lock()
        self.done = {}  # uuid -> time.perf_counter() when seen
        self.waiting = {}  # uuid -> Event of the thread waiting for it
        self.thread = threading.Thread(target=self._listen, daemon=True, name="done-watcher")
        self.thread.start()

    def _listen(self):
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:  # closed while stopping
                return
            if not chunk:
                return
            now = time.perf_counter()
            self.reader.feed(chunk)
            seen = []
            while (msg := self.reader.gets()) is not False:
                # [b"pmessage", pattern, channel, event]; the channel ends with ":<uuid>:done"
                if msg[0] == b"pmessage" and msg[3] == b"set":
                    seen.append(msg[2][-37:-5].decode())
            if seen:
                with self.lock:
                    for uuid in seen:
                        self.done[uuid] = now
                        event = self.waiting.pop(uuid, None)
                        if event:
                            event.set()

    def wait(self, uuid: str, timeout: float) -> float:
        """The perf_counter() time job `uuid` was done; raises if not done within `timeout`.
        A job may be done before its 201 reached us: its time is then already known."""
        with self.lock:
            if uuid in self.done:
                return self.done[uuid]
            event = self.waiting[uuid] = threading.Event()
        if not event.wait(timeout):
            raise JobTimeout(uuid, timeout)
        return self.done[uuid]

    def wait_all(self, uuids, timeout: float) -> list[float]:
        deadline = time.monotonic() + timeout
        return [self.wait(u, max(0.0, deadline - time.monotonic())) for u in uuids]

    def close(self):
        with contextlib.suppress(OSError):  # Redis may be gone already
            self.sock.shutdown(socket.SHUT_RDWR)  # ends the thread's recv
        self.thread.join(2)
        self.sock.close()


class Stack:
    """Use as a context manager: everything started is stopped on the way out, by pid,
    whatever happened (an error, Ctrl-C, SIGTERM)."""

    def __init__(self, sizes: dict, server: str = "fast", acts_url: str | None = None):
        self.sizes = sizes
        self.server = server  # which kind of activity server (bench.activities.KINDS)
        self.acts_url = acts_url  # an activity server the caller runs, if given
        self.tmp = None
        self.redis = self.acts = self.web = self.watcher = None
        self.actors_started = False
        self.env = self.config = None

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _start(self):
        # A short path: unix socket names are limited to ~100 bytes.
        self.tmp = Path(tempfile.mkdtemp(prefix="cambench", dir="/tmp"))
        # The activity server holds a socket per call in flight: 10,000 of them in one figure.
        actorsys.more_open_files()
        self.redis = EmbeddedRedis(str(self.tmp / "data")).start()
        if self.acts_url is None:
            self._start_activities()
        (self.tmp / "processes.toml").write_text(catalog(self.acts_url, self.sizes))
        self.env = {**os.environ, "CAMERON_ENV": "test", "CAMERON_PROCESSES": str(self.tmp / "processes.toml"),
                    "CAMERON_REDIS_URL": self.redis.url, "CAMERON_DATA_DIR": str(self.tmp),
                    "CAMERON_ADMIN_PORT": str(free_port()), "CAMERON_PORT": str(free_port()),
                    "CAMERON_BIND": "127.0.0.1", "THESPIAN_BASE_IPADDR": "127.0.0.1"}
        self.config = from_env(self.env)
        self.actors_started = True  # from here on, stop() must look for actor processes
        started = self._cli("start")
        if started.returncode != 0:
            raise RuntimeError(f"cameron start failed: {started.stdout}{started.stderr}")
        self.web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"),
                                     "cameron.wsgi:app"], env=self.env, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.api = f"http://127.0.0.1:{self.config.port}"
        wait_for(lambda: self._alive(self.web, "gunicorn") and _http_ok(f"{self.api}/api"), 30, "gunicorn")
        self.watcher = DoneWatcher(self.redis.socket)
        self.store = store.connect(self.redis.url)

    def _start_activities(self):
        # A free port can be taken between our look and the server's bind (any connection made
        # meanwhile may get it as its local port): a server that exits at start gets another.
        for attempt in (1, 2, 3):
            acts_port = free_port()
            # Own sessions: Ctrl-C reaches only the bench, which then stops everything in order.
            if self.server == "gunicorn":
                command = ["-m", "gunicorn", "-k", "sync", "-w", str(GUNICORN_WORKERS), "--preload",
                           "-b", f"127.0.0.1:{acts_port}", "--log-level", "warning", "bench.activities:wsgi_app"]
            else:
                command = ["-m", "bench.activities", "--kind", self.server, "--port", str(acts_port)]
            self.acts = subprocess.Popen([sys.executable, *command], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, start_new_session=True)
            self.acts_url = f"http://127.0.0.1:{acts_port}"
            try:
                wait_for(lambda: self._alive(self.acts, "activity server") and _http_ok(f"{self.acts_url}/stats"),
                         15, "the activity server")
                return
            except RuntimeError:
                if attempt == 3:
                    raise

    @staticmethod
    def _alive(proc, what):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {proc.returncode})")
        return True

    def _cli(self, *args, timeout=60):
        return subprocess.run([sys.executable, "-m", "cameron.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self):
        # A second Ctrl-C must not cut the clean-up short and leave processes behind.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if self.watcher:
                self.watcher.close()
            actorsys.stop_child(self.web, 20)
            if self.actors_started:
                pids = actorsys.system_pids(self.config)
                try:
                    self._cli("stop", timeout=30)
                finally:
                    actorsys.kill_and_wait([p for p in pids if actorsys.alive(p)], self.config)
            actorsys.stop_child(self.acts, 20)
            if self.redis:
                self.redis.stop()
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old)
            self.web = self.acts = self.redis = self.watcher = self.tmp = None
            self.actors_started = False

    # --- what the figures read --------------------------------------------

    def activity_stats(self) -> dict:
        import json
        with urllib.request.urlopen(f"{self.acts_url}/stats", timeout=5) as resp:
            return json.load(resp)

    def wait_idle(self, timeout: float = 60):
        """Until no job is unfinished: each figure starts on a quiet engine."""
        wait_for(lambda: self.store.scard(keys.engine_jobs(self.config.engine)) == 0, timeout, "the engine to finish its jobs")

    def job_state(self, uuid: str) -> str:
        """What Redis holds of a job, in a line: for the message when a job is not done in time."""
        tags = [t for t in self.store.scan_iter(f"{keys.PREFIX}:process:*:key:{KEY}:job:{uuid}")]
        if not tags:
            return f"job {uuid}: not in Redis"
        h = self.store.hgetall(tags[0])
        tasks = [f"{t['id']}={t['status']}" for t in store.tasks_of(h)]
        return (f"job {tags[0]}: {h.get(keys.JOB_STATUS)}, unfinished set: "
                f"{self.store.sismember(keys.engine_jobs(self.config.engine), tags[0])}, tasks: {' '.join(tasks)}")

    def job_errors(self, process: str, uuids) -> int:
        """Tasks that ended `error` in these jobs: a figure made of failed calls is worthless."""
        pipe = self.store.pipeline(transaction=False)
        for u in uuids:
            pipe.hget(keys.job_tag(process, KEY, u), "job.errors")
        return sum(int(e or 0) for e in pipe.execute())

    def engine_pids(self) -> list[int]:
        """Every Cameron process: the actor system's, and gunicorn's master and workers."""
        web = [self.web.pid] + actorsys.children(self.web.pid) if self.web else []
        return actorsys.system_pids(self.config) + web

    def all_pids(self) -> list[int]:
        """Every process the bench started, so a test can check that none outlives it."""
        acts = [self.acts.pid] + actorsys.children(self.acts.pid) if self.acts else []
        return self.engine_pids() + [self.redis.proc.pid] + acts


def _proc_kib(path: str, field: str) -> int:
    """A `field:  N kB` line of a /proc file; 0 when the process is gone."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:")


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages split among the processes sharing them, so a sum
    over forked processes does not count the shared interpreter many times, as RSS does."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")
