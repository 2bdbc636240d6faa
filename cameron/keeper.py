"""The top of the supervision tree: the process that started the engine replaces a dead
Supervisor, as OTP's application master restarts its top supervisor.

Thespian's admin creates the Supervisor (a named actor) and never recreates it: after a
`kill -9` nothing would replace it until someone happened to look it up, and the jobs would
stall unseen. The Supervisor's children die with it (actors/base.py's link), so the new one
boots a whole new tree, which resumes every unfinished job from Redis. `cameron run` keeps
its engine from its own loop; `cameron start` leaves a `cameron keep` process behind to do it.
"""

import logging
import logging.config
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cameron import actorsys, procfs
from cameron import messages as m
from cameron.config import Config

#: How often the keeper looks at the Supervisor's process (a /proc read, no message).
EVERY = 0.25

log = logging.getLogger("cameron.keeper")


class Keeper:
    def __init__(self, config: Config):
        self.config = config
        self.asys = None
        self.pid = None  # the Supervisor's
        self.admin = None  # the admin's, as `start` recorded it
        self.replaced = 0

    def check(self) -> None:
        """Replace the Supervisor if its process is gone (EngineDown if the admin is)."""
        if self.admin is None:
            self.admin = actorsys.admin_pid(self.config)
        if self.admin is not None and not actorsys.alive(self.admin):
            # The whole system is gone (stopped, or killed): nothing to keep. Asking a system
            # that is not there would wait, and the keeper would outlive its engine.
            raise actorsys.EngineDown(f"the actor system's admin (pid {self.admin}) is gone")
        if self.pid is not None and actorsys.alive(self.pid):
            return
        if self.asys is None:
            self.asys = actorsys.join(self.config)
        with self.asys.private() as ctx:
            # Creates it when it is gone: the keeper alone may repair by looking.
            supervisor = actorsys.supervisor(self.asys)
            peers = ctx.ask(supervisor, m.WhereIs(self.config), 10)
            pong = ctx.ask(supervisor, m.Ping(), 10)
        if not isinstance(peers, m.Peers) or not isinstance(pong, m.Pong):
            return  # booting or busy: looked at again next time
        if self.pid is not None:
            self.replaced += 1
            log.warning("the Supervisor (pid %d) died; replaced by pid %d, which resumes the "
                        "unfinished jobs", self.pid, pong.pid)
        self.pid = pong.pid


def pidfile(config: Config) -> Path:
    return Path(config.data_dir) / "run" / f"keeper-{config.admin_port}.pid"


def spawn(config: Config, log_file: str, environ=None) -> int:
    """Start `cameron keep` in the background (its own session; its log beside the actors')."""
    with open(log_file, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cameron.keeper"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, env=environ, start_new_session=True)
    return proc.pid


def running_pid(config: Config) -> int | None:
    """The background keeper's pid, if it runs."""
    try:
        pid = int(pidfile(config).read_text())
    except (OSError, ValueError):
        return None
    return pid if b"cameron.keeper" in procfs.cmdline(pid) else None  # else the pid was reused


def stop(config: Config, timeout: float = 5.0) -> None:
    """Stop the background keeper first: it would bring back a Supervisor being shut down."""
    pid = running_pid(config)
    if pid is None:
        pidfile(config).unlink(missing_ok=True)
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while actorsys.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if actorsys.alive(pid):
        os.kill(pid, signal.SIGKILL)
    pidfile(config).unlink(missing_ok=True)


def main(argv=None) -> int:
    """`cameron keep`: keep the engine's Supervisor alive until SIGTERM or the admin is gone."""
    from cameron import logs
    from cameron.config import from_env
    config = from_env()
    logging.config.dictConfig(logs.log_config(config))
    keeper, stopping = Keeper(config), []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    pidfile(config).parent.mkdir(parents=True, exist_ok=True)
    pidfile(config).write_text(f"{os.getpid()}\n")
    try:
        while not stopping:
            try:
                keeper.check()
            except actorsys.EngineDown:
                log.warning("the actor system is gone; the keeper stops")
                return 1
            except Exception:
                log.exception("keeper: looking at the Supervisor failed")
            time.sleep(EVERY)
        return 0
    finally:
        pidfile(config).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
