"""Settings: every knob Cameron reads, its default, its line in config/<env>.toml and the
environment variable that overrides it."""

import math
import os
import socket
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

#: The checkout Cameron runs from; config/ and the embedded Redis data live under it.
ROOT = Path(__file__).resolve().parent.parent

ENVIRONMENTS = ("development", "test", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """A setting or a configuration file is unusable; the message says which and why."""


@dataclass(frozen=True)
class Config:
    """One engine's settings; pickled into the actors, so plain values only."""

    #: development, test or production: picks config/<env>.toml and the catalog under config/processes/.
    env: str = "development"
    #: The settings file that was read ("" when none).
    config_file: str = ""
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
    #: gunicorn worker processes, threads per worker, and seconds before a silent worker is restarted.
    web_workers: int = 2
    web_threads: int = 8
    web_timeout: int = 60
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
    #: Seconds a finished job stays in Redis; 0 keeps it for ever.
    job_retention: int = 0
    #: Seconds an Idempotency-Key keeps naming the job it started.
    idempotency_ttl: int = 86400
    #: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    #: Send the log to syslog too: a socket path ("/dev/log") or "host:port" (UDP); "" for no.
    log_syslog: str = ""
    #: This engine's name among the engines sharing one Redis; empty means host:admin_port,
    #: which no other engine on this host can have while this one runs.
    engine_id: str = ""
    #: Seconds an engine's lease on its jobs lasts unless renewed (it is renewed four times per
    #: period); another engine takes over the jobs of an engine whose lease ran out.
    lease_ttl: float = 10.0
    #: Redis stalls: seconds one Redis command of the engine or of a start may take before
    #: it counts as failed (a start then answers 503 saying its outcome is unknown), and
    #: seconds /api/health waits for all its checks together.
    redis_timeout: float = 2.0
    health_timeout: float = 1.0
    #: Seconds between two checks that every unfinished job this engine owns in Redis is
    #: driven by one of its runners (one that is not is handed out again).
    reconcile_every: float = 10.0

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


#: setting -> (environment variable, kind, range); kinds are str, int, float, ranges POSITIVE,
#: NOT_NEGATIVE or None.
POSITIVE, NOT_NEGATIVE = "positive", "not negative"
SETTINGS = {
    "processes_file": ("CAMERON_PROCESSES", str, None),
    "redis_url": ("CAMERON_REDIS_URL", str, None),
    "data_dir": ("CAMERON_DATA_DIR", str, None),
    "bind": ("CAMERON_BIND", str, None),
    "port": ("CAMERON_PORT", int, POSITIVE),
    "admin_port": ("CAMERON_ADMIN_PORT", int, POSITIVE),
    "runners": ("CAMERON_RUNNERS", int, POSITIVE),
    "web_workers": ("CAMERON_WEB_WORKERS", int, POSITIVE),
    "web_threads": ("CAMERON_WEB_THREADS", int, POSITIVE),
    "web_timeout": ("CAMERON_WEB_TIMEOUT", int, POSITIVE),
    "connect_timeout": ("CAMERON_CONNECT_TIMEOUT", float, POSITIVE),
    "read_timeout": ("CAMERON_READ_TIMEOUT", float, POSITIVE),
    "ask_timeout": ("CAMERON_ASK_TIMEOUT", float, POSITIVE),
    "max_fanout": ("CAMERON_MAX_FANOUT", int, POSITIVE),
    "max_depth": ("CAMERON_MAX_DEPTH", int, POSITIVE),
    "max_response_bytes": ("CAMERON_MAX_RESPONSE_BYTES", int, POSITIVE),
    "max_attempts": ("CAMERON_MAX_ATTEMPTS", int, POSITIVE),
    "retry_backoff": ("CAMERON_RETRY_BACKOFF", float, POSITIVE),
    "retry_backoff_max": ("CAMERON_RETRY_BACKOFF_MAX", float, POSITIVE),
    "engine_id": ("CAMERON_ENGINE_ID", str, None),
    "lease_ttl": ("CAMERON_LEASE_TTL", float, POSITIVE),
    "redis_timeout": ("CAMERON_REDIS_TIMEOUT", float, POSITIVE),
    "health_timeout": ("CAMERON_HEALTH_TIMEOUT", float, POSITIVE),
    "reconcile_every": ("CAMERON_RECONCILE_EVERY", float, POSITIVE),
    "job_retention": ("CAMERON_JOB_RETENTION", int, NOT_NEGATIVE),
    "idempotency_ttl": ("CAMERON_IDEMPOTENCY_TTL", int, POSITIVE),
    "log_level": ("CAMERON_LOG_LEVEL", str, None),
    "log_syslog": ("CAMERON_LOG_SYSLOG", str, None),
}
_KIND_NAMES = {int: "a whole number", float: "a number", str: "a string"}
_DEFAULTS = {f.name: f.default for f in fields(Config)}


def settings_file(env: str, environ) -> Path:
    """config/<env>.toml, or the file CAMERON_CONFIG names."""
    return Path(environ.get("CAMERON_CONFIG") or ROOT / "config" / f"{env}.toml")


def from_env(environ=None) -> Config:
    """Build the settings from config/<env>.toml overridden by the environment, refusing
    values that cannot work."""
    environ = os.environ if environ is None else environ
    env = environ.get("CAMERON_ENV") or "development"
    if env not in ENVIRONMENTS:
        raise ConfigError(f"CAMERON_ENV={env!r}: expected one of {', '.join(ENVIRONMENTS)}")
    path = settings_file(env, environ)
    values = {"env": env, "processes_file": str(ROOT / "config" / "processes" / f"{env}.toml")}
    if path.exists() or environ.get("CAMERON_CONFIG"):
        values["config_file"] = str(path)
        values.update(_read_file(path))
    for name, (var, kind, bounds) in SETTINGS.items():
        if environ.get(var, "") != "":
            values[name] = _parse(kind, bounds, environ[var], f"{var}={environ[var]!r}")
            if name == "data_dir":
                # Absolute, so the embedded Redis's unix:// URL means the same in every process.
                values[name] = str(Path(values[name]).resolve())
    _check(values, lambda name: f"{SETTINGS[name][0]}={values[name]!r}"
           if environ.get(SETTINGS[name][0]) else f"{path}: {name} = {values[name]!r}")
    return Config(**values)


def read_toml(path, what: str) -> dict:
    """A TOML file's document; any problem raises ConfigError naming `what` and the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{what} {path}: {e}") from None


def _read_file(path: Path) -> dict:
    doc = read_toml(path, "settings file")
    values = {}
    for name, value in doc.items():
        if name not in SETTINGS:
            raise ConfigError(f"settings file {path}: unknown setting {name!r} "
                              f"(known: {', '.join(SETTINGS)})")
        _, kind, bounds = SETTINGS[name]
        where = f"settings file {path}: {name} = {value!r}"
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise ConfigError(f"{where}: expected {_KIND_NAMES[kind]}")
        values[name] = _parse(kind, bounds, value, where)
        if name in ("data_dir", "processes_file"):
            # Relative to the checkout, wherever the command runs from.
            values[name] = str((ROOT / value).resolve())
    return values


def _parse(kind, bounds, raw, where: str):
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{where}: expected {_KIND_NAMES[kind]}") from None
    if bounds == POSITIVE and not 0 < value < math.inf:
        raise ConfigError(f"{where}: must be greater than zero")
    if bounds == NOT_NEGATIVE and not 0 <= value < math.inf:
        raise ConfigError(f"{where}: must be zero or more")
    return value


def _check(values: dict, where):
    """Checks that span a value's meaning rather than its type."""
    url = values.get("redis_url")
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{where('redis_url')}: expected redis://, rediss:// or unix://")
    level = values.get("log_level", _DEFAULTS["log_level"])
    if level not in LOG_LEVELS:
        raise ConfigError(f"{where('log_level')}: expected one of {', '.join(LOG_LEVELS)}")
