"""Settings: every knob Cameron reads, its default, and the environment variable that sets it."""

import math
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

#: The checkout Cameron runs from; config/ and the embedded Redis data live under it.
ROOT = Path(__file__).resolve().parent.parent

ENVIRONMENTS = ("development", "test", "production")


class ConfigError(Exception):
    """A setting or a configuration file is unusable; the message says which and why."""


@dataclass(frozen=True)
class Config:
    """One engine's settings; pickled into the actors, so plain values only."""

    #: development, test or production: picks the catalog file under config/processes/.
    env: str = "development"
    #: The process catalog file (TOML).
    processes_file: str = ""
    #: redis:// or unix:// URL of an external Redis; empty means the embedded one.
    redis_url: str = ""
    #: Where the embedded Redis keeps its socket, its data and its log.
    data_dir: str = str(ROOT / ".cameron")
    #: The API's listening address and port.
    bind: str = "127.0.0.1"
    port: int = 8080
    #: Thespian's admin port: gunicorn workers and the CLI join the actor system through it.
    admin_port: int = 19500
    #: How many JobRunners share the jobs (each with its own TaskActor).
    runners: int = 2
    #: gunicorn worker processes and threads per worker.
    web_workers: int = 2
    web_threads: int = 8
    #: Default activity call timeouts, in seconds (connect, then waiting for the answer).
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Default retry policy (a process's catalog entry may set its own): calls per task at
    #: most, and the backoff before the second call, doubling up to the maximum (seconds).
    max_attempts: int = 3
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0
    #: Limits that keep one bad activity from hurting the engine.
    max_fanout: int = 1000
    max_depth: int = 100
    max_response_bytes: int = 10 * 1024 * 1024
    #: How long the web layer waits for the actor system before answering 503.
    ask_timeout: float = 10.0
    #: This engine's name among the engines sharing one Redis; empty means host:admin_port,
    #: which no other engine on this host can have while this one runs.
    engine_id: str = ""
    #: Seconds an engine's lease on its jobs lasts unless renewed (it is renewed four times per
    #: period); another engine takes over the jobs of an engine whose lease ran out.
    lease_ttl: float = 10.0

    @property
    def engine(self) -> str:
        return self.engine_id or f"{socket.gethostname()}:{self.admin_port}"

    @property
    def redis_socket(self) -> str:
        return str(Path(self.data_dir) / "redis" / "redis.sock")

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"

    def with_(self, **changes) -> "Config":
        return replace(self, **changes)


_INT = {"CAMERON_PORT": "port", "CAMERON_ADMIN_PORT": "admin_port",
        "CAMERON_RUNNERS": "runners", "CAMERON_WEB_WORKERS": "web_workers",
        "CAMERON_WEB_THREADS": "web_threads", "CAMERON_MAX_FANOUT": "max_fanout",
        "CAMERON_MAX_DEPTH": "max_depth", "CAMERON_MAX_RESPONSE_BYTES": "max_response_bytes",
        "CAMERON_MAX_ATTEMPTS": "max_attempts"}
_FLOAT = {"CAMERON_CONNECT_TIMEOUT": "connect_timeout", "CAMERON_READ_TIMEOUT": "read_timeout",
          "CAMERON_ASK_TIMEOUT": "ask_timeout", "CAMERON_RETRY_BACKOFF": "retry_backoff",
          "CAMERON_RETRY_BACKOFF_MAX": "retry_backoff_max", "CAMERON_LEASE_TTL": "lease_ttl"}
_KIND_NAMES = {int: "a whole number", float: "a number"}
_STR = {"CAMERON_REDIS_URL": "redis_url", "CAMERON_DATA_DIR": "data_dir", "CAMERON_BIND": "bind",
        "CAMERON_ENGINE_ID": "engine_id"}


def from_env(environ=None) -> Config:
    """Build the settings from the environment, refusing values that cannot work."""
    environ = os.environ if environ is None else environ
    env = environ.get("CAMERON_ENV") or "development"
    if env not in ENVIRONMENTS:
        raise ConfigError(f"CAMERON_ENV={env!r}: expected one of {', '.join(ENVIRONMENTS)}")
    values = {"env": env,
              "processes_file": environ.get("CAMERON_PROCESSES")
              or str(ROOT / "config" / "processes" / f"{env}.toml")}
    for var, name in _STR.items():
        if environ.get(var):
            values[name] = environ[var]
    for table, kind in ((_INT, int), (_FLOAT, float)):
        for var, name in table.items():
            if var in environ and environ[var] != "":
                try:
                    values[name] = kind(environ[var])
                except ValueError:
                    raise ConfigError(f"{var}={environ[var]!r}: expected {_KIND_NAMES[kind]}") from None
                if not 0 < values[name] < math.inf:
                    raise ConfigError(f"{var}={environ[var]!r}: must be greater than zero")
    if "data_dir" in values:
        # Absolute, so the embedded Redis's unix:// URL means the same in every process.
        values["data_dir"] = str(Path(values["data_dir"]).resolve())
    if values.get("redis_url") and not values["redis_url"].startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"CAMERON_REDIS_URL={values['redis_url']!r}: expected redis://, rediss:// or unix://")
    return Config(**values)
