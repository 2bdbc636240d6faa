"""The API server (gunicorn) as a background process: `cameron start --web` starts it,
`cameron stop` stops it, `cameron status` reports it. Its pid file names the master."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cameron import actorsys
from cameron.config import ROOT, Config


class WebError(Exception):
    """The API server did not start; the message says why and where its log is."""


def base_url(config: Config) -> str:
    host = "127.0.0.1" if config.bind in ("0.0.0.0", "") else config.bind
    return f"http://{host}:{config.port}"


def pidfile(config: Config) -> Path:
    return Path(config.data_dir) / "run" / f"web-{config.port}.pid"


def log_file(config: Config) -> Path:
    return Path(config.data_dir) / "log" / "web.log"


def running_pid(config: Config) -> int | None:
    """The gunicorn master this engine started, if it still runs."""
    try:
        pid = int(pidfile(config).read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    # The pid may have been reused by another program since.
    return pid if b"gunicorn" in cmdline and _state(pid) not in ("Z", None) else None


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pidfile(config).unlink(missing_ok=True)
            raise WebError(f"gunicorn exited at start (code {proc.returncode}); see {log}")
        try:
            # /api/health needs no token; any HTTP answer (a 503 too) means it serves.
            with urllib.request.urlopen(f"{base_url(config)}/api/health", timeout=3):
                return proc.pid
        except urllib.error.HTTPError:
            return proc.pid
        except OSError:
            time.sleep(0.05)
    stop(config)
    raise WebError(f"gunicorn did not answer at {base_url(config)}/api within {timeout:g} s; see {log}")


def stop(config: Config, timeout: float = 20.0) -> bool:
    """SIGTERM the master and wait until it and its workers are gone; False if none ran."""
    pid = running_pid(config)
    if pid is None:
        pidfile(config).unlink(missing_ok=True)
        return False
    family = [pid] + actorsys.children(pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_state(p) not in (None, "Z") for p in family):
        time.sleep(0.05)
    for p in family:
        if _state(p) not in (None, "Z"):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pidfile(config).unlink(missing_ok=True)
    return True


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
