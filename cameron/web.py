"""The API server (gunicorn) and the sample activity server as background processes:
`cameron start --web --with-foo` starts them, `cameron stop` stops them, `cameron status`
reports them. Each one's pid file under data_dir/run names it (gunicorn: its master)."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cameron import actorsys, procfs
from cameron.config import ROOT, Config


class WebError(Exception):
    """The API server did not start; the message says why and where its log is."""


def pidfile(config: Config) -> Path:
    return Path(config.data_dir) / "run" / f"web-{config.port}.pid"


def log_file(config: Config) -> Path:
    return Path(config.data_dir) / "log" / "web.log"


def running_pid(config: Config) -> int | None:
    """The gunicorn master this engine started, if it still runs."""
    return _running(pidfile(config), b"gunicorn")


def _running(path: Path, marker: bytes) -> int | None:
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    # The pid may have been reused by another program since.
    return pid if marker in procfs.cmdline(pid) and procfs.alive(pid) else None


# --- the sample activity server -----------------------------------------------
_FOO = b"cameron.activity_server"


def foo_pidfile(config: Config) -> Path:
    return Path(config.data_dir) / "run" / "foo.pid"


def foo_log_file(config: Config) -> Path:
    return Path(config.data_dir) / "log" / "foo.log"


def foo_running_pid(config: Config) -> int | None:
    return _running(foo_pidfile(config), _FOO)


def start_foo(config: Config, timeout: float = 15.0) -> int:
    """Serve the sample workflow on foo_port, detached, and wait until it answers."""
    log = foo_log_file(config)
    log.parent.mkdir(parents=True, exist_ok=True)
    foo_pidfile(config).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # With a signing key (from the settings file too), the sample server checks every call.
        proc = subprocess.Popen([sys.executable, "-m", "cameron.activity_server", "--port", str(config.foo_port)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                env={**os.environ, "CAMERON_SIGNING_KEY": config.signing_key})
    foo_pidfile(config).write_text(f"{proc.pid}\n")
    return _wait_serving(proc, f"http://127.0.0.1:{config.foo_port}/calls", timeout, "the sample server",
                         log, foo_pidfile(config), lambda: stop_foo(config))


def stop_foo(config: Config, timeout: float = 10.0) -> bool:
    return _stop(foo_pidfile(config), foo_running_pid(config), timeout)


def start(config: Config, environ=None, timeout: float = 30.0) -> int:
    """Start gunicorn detached (own session, log to data_dir/log/web.log) and wait until it serves."""
    if running_pid(config):
        raise WebError(f"the API server already runs (pid {running_pid(config)})")
    log = log_file(config)
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile(config).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"),
                                 "cameron.wsgi:app"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=environ, start_new_session=True)
    pidfile(config).write_text(f"{proc.pid}\n")
    # /api/health needs no token; any HTTP answer (a 503 too) means it serves.
    return _wait_serving(proc, f"{config.listen_url}/api/health", timeout, "gunicorn", log,
                         pidfile(config), lambda: stop(config))


def _wait_serving(proc, url: str, timeout: float, what: str, log: Path, pid_path: Path, stop_it) -> int:
    """The pid of `proc` once `url` gives any HTTP answer; WebError when it exits first (its pid
    file goes) or does not answer within `timeout` (it is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_path.unlink(missing_ok=True)
            raise WebError(f"{what} exited at start (code {proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=3):
                return proc.pid
        except urllib.error.HTTPError:
            return proc.pid
        except OSError:
            time.sleep(0.05)
    stop_it()
    raise WebError(f"{what} did not answer at {url} within {timeout:g} s; see {log}")


def stop(config: Config, timeout: float = 20.0) -> bool:
    """SIGTERM the master and wait until it and its workers are gone; False if none ran."""
    return _stop(pidfile(config), running_pid(config), timeout)


def _stop(path: Path, pid: int | None, timeout: float) -> bool:
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    family = [pid] + actorsys.children(pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(procfs.alive(p) for p in family):
        time.sleep(0.05)
    for p in family:
        if procfs.alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    path.unlink(missing_ok=True)
    return True
