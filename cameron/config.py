"""Settings: every knob Cameron reads, its default, its line in config/<env>.toml and the
environment variable that overrides it."""

import json
import hashlib
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

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
    #: Plain-http activity calls in flight at once per runner; more wait their turn. Each
    #: holds a socket: the TaskActor takes fewer if its open-file limit would not hold them.
    calls_in_flight: int = 16384
    #: gunicorn worker processes, connections each serves at once, and seconds before a
    #: silent worker is restarted.
    web_workers: int = 2
    web_connections: int = 1000
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
    #: Tasks one job may have, and bytes of answers it may store; past either, the task whose
    #: answer would go beyond ends `error` naming the limit.
    max_tasks: int = 10000
    max_job_bytes: int = 100 * 1024 * 1024
    #: Where activities may live, for processes whose catalog entry has no `allow` list:
    #: "host:port" entries, comma-separated; empty means each process's start URL's host and port.
    allow: str = ""
    #: With a key, every activity call carries X-Cameron-Signature (HMAC-SHA256 of the body).
    signing_key: str = field(default="", repr=False)  # a secret: never in a log line
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
    #: Where the sample activity server listens (`cameron run`, `cameron start --with-foo`); the
    #: sample catalogs call it through ${CAMERON_FOO_PORT:-9292}.
    foo_port: int = 9292
    # --- the API's front door: what a client may send, how long it may take, who may ask ---
    #: The API's address as clients reach it (behind a proxy: the proxy's); the base of every
    #: Location and link. Empty: http://bind:port (127.0.0.1 for 0.0.0.0).
    public_url: str = ""
    #: Comma-separated bearer tokens, each optionally `name:token`; empty: no token needed.
    #: Kept out of repr so that no log line or error message ever shows one.
    api_tokens: str = field(default="", repr=False)
    #: Seconds a connection may take to send a request's line and headers (and may stay idle
    #: between requests), and to send its body.
    web_header_timeout: int = 10
    web_body_timeout: int = 30
    #: Sizes a start request may have, in bytes: the whole body, and its key, data and requestor
    #: (UTF-8). A key is at most 2048 bytes, so its URL-encoded job path fits a request line.
    max_body_bytes: int = 1024 * 1024
    max_key_bytes: int = 1024
    max_data_bytes: int = 512 * 1024
    max_requestor_bytes: int = 1024
    #: Redis stalls: seconds one Redis command of the engine or of a start may take before
    #: it counts as failed (a start then answers 503 saying its outcome is unknown), and
    #: seconds /api/health waits for all its checks together.
    redis_timeout: float = 2.0
    health_timeout: float = 1.0
    #: Seconds between two checks that every unfinished job this engine owns in Redis is
    #: driven by one of its runners (one that is not is handed out again).
    reconcile_every: float = 10.0
    #: Seconds unfinished jobs may go without any of them moving (a task started or ended)
    #: before /api/health and `cameron status` say they are stuck: above the slowest
    #: activity's read_timeout times its attempts.
    stall_after: float = 120.0

    @property
    def engine(self) -> str:
        return self.engine_id or f"{socket.gethostname()}:{self.admin_port}"

    @property
    def redis_socket(self) -> str:
        return str(Path(self.data_dir) / "redis" / "redis.sock")

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"

    @property
    def redis_url_shown(self) -> str:
        """The Redis URL without its password, for messages and `cameron status`."""
        return redact_url(self.effective_redis_url)

    @property
    def listen_url(self) -> str:
        """Where this machine reaches the API server (loopback when it listens everywhere)."""
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The base of the API's links: public_url, or where it listens."""
        return self.public_url.rstrip("/") if self.public_url else self.listen_url

    @property
    def tokens(self) -> dict[str, str]:
        """api_tokens as name -> token (see parse_tokens)."""
        return parse_tokens(self.api_tokens)

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
    "calls_in_flight": ("CAMERON_CALLS_IN_FLIGHT", int, POSITIVE),
    "web_workers": ("CAMERON_WEB_WORKERS", int, POSITIVE),
    "web_connections": ("CAMERON_WEB_CONNECTIONS", int, POSITIVE),
    "web_timeout": ("CAMERON_WEB_TIMEOUT", int, POSITIVE),
    "connect_timeout": ("CAMERON_CONNECT_TIMEOUT", float, POSITIVE),
    "read_timeout": ("CAMERON_READ_TIMEOUT", float, POSITIVE),
    "ask_timeout": ("CAMERON_ASK_TIMEOUT", float, POSITIVE),
    "max_fanout": ("CAMERON_MAX_FANOUT", int, POSITIVE),
    "max_depth": ("CAMERON_MAX_DEPTH", int, POSITIVE),
    "max_response_bytes": ("CAMERON_MAX_RESPONSE_BYTES", int, POSITIVE),
    "max_tasks": ("CAMERON_MAX_TASKS", int, POSITIVE),
    "max_job_bytes": ("CAMERON_MAX_JOB_BYTES", int, POSITIVE),
    "allow": ("CAMERON_ALLOW", str, None),
    "signing_key": ("CAMERON_SIGNING_KEY", str, None),
    "max_attempts": ("CAMERON_MAX_ATTEMPTS", int, POSITIVE),
    "retry_backoff": ("CAMERON_RETRY_BACKOFF", float, POSITIVE),
    "retry_backoff_max": ("CAMERON_RETRY_BACKOFF_MAX", float, POSITIVE),
    "engine_id": ("CAMERON_ENGINE_ID", str, None),
    "lease_ttl": ("CAMERON_LEASE_TTL", float, POSITIVE),
    "redis_timeout": ("CAMERON_REDIS_TIMEOUT", float, POSITIVE),
    "health_timeout": ("CAMERON_HEALTH_TIMEOUT", float, POSITIVE),
    "reconcile_every": ("CAMERON_RECONCILE_EVERY", float, POSITIVE),
    "stall_after": ("CAMERON_STALL_AFTER", float, POSITIVE),
    "job_retention": ("CAMERON_JOB_RETENTION", int, NOT_NEGATIVE),
    "idempotency_ttl": ("CAMERON_IDEMPOTENCY_TTL", int, POSITIVE),
    "log_level": ("CAMERON_LOG_LEVEL", str, None),
    "log_syslog": ("CAMERON_LOG_SYSLOG", str, None),
    "foo_port": ("CAMERON_FOO_PORT", int, POSITIVE),
    "public_url": ("CAMERON_PUBLIC_URL", str, None),
    "api_tokens": ("CAMERON_API_TOKENS", str, None),
    "web_header_timeout": ("CAMERON_WEB_HEADER_TIMEOUT", int, POSITIVE),
    "web_body_timeout": ("CAMERON_WEB_BODY_TIMEOUT", int, POSITIVE),
    "max_body_bytes": ("CAMERON_MAX_BODY_BYTES", int, POSITIVE),
    "max_key_bytes": ("CAMERON_MAX_KEY_BYTES", int, POSITIVE),
    "max_data_bytes": ("CAMERON_MAX_DATA_BYTES", int, POSITIVE),
    "max_requestor_bytes": ("CAMERON_MAX_REQUESTOR_BYTES", int, POSITIVE),
}
#: The most max_key_bytes may be: a key URL-encodes to up to 3 characters a byte, and the job's
#: path must fit the request line the API server accepts (8190 characters).
KEY_BYTES_CEILING = 2048
#: How deep arrays and objects may nest in a request body: deeper is no job's data, and would
#: cost recursion to parse and to write back out.
MAX_JSON_DEPTH = 64
_KIND_NAMES = {int: "a whole number", float: "a number", str: "a string"}
_DEFAULTS = {f.name: f.default for f in fields(Config)}


def redact_url(url: str) -> str:
    """`url` with the password of its user part replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def settings_file(env: str, environ) -> Path:
    """config/<env>.toml, or the file CAMERON_CONFIG names."""
    return Path(environ.get("CAMERON_CONFIG") or ROOT / "config" / f"{env}.toml")


def from_env(environ=None, recorded: bool = False) -> Config:
    """Build the settings from config/<env>.toml overridden by the environment, refusing
    values that cannot work. An empty variable puts its setting back to the built-in default
    (`CAMERON_LOG_SYSLOG=` switches syslog off). With `recorded`, the settings of the engine
    that runs from the data folder (its record, see write_record) come before the file's:
    the CLI finds the engine without the variables it was started with."""
    environ = os.environ if environ is None else environ
    record = _read_record(environ) if recorded else None
    if record and not environ.get("CAMERON_ENV") and not environ.get("CAMERON_CONFIG"):
        environ = {**environ, "CAMERON_ENV": record["env"],
                   **({"CAMERON_CONFIG": record["config_file"]} if record.get("config_file") else {})}
    env = environ.get("CAMERON_ENV") or "development"
    if env not in ENVIRONMENTS:
        raise ConfigError(f"CAMERON_ENV={env!r}: expected one of {', '.join(ENVIRONMENTS)}")
    path = settings_file(env, environ)
    env_catalog = str(ROOT / "config" / "processes" / f"{env}.toml")
    values = {"env": env, "processes_file": env_catalog}
    if path.exists() or environ.get("CAMERON_CONFIG"):
        values["config_file"] = str(path)
        values.update(_read_file(path))
    if record:
        values.update({name: record[name] for name in SETTINGS if name in record})
    for name, (var, kind, bounds) in SETTINGS.items():
        if var not in environ:
            continue
        if environ[var] == "":
            values[name] = env_catalog if name == "processes_file" else _DEFAULTS[name]
            continue
        values[name] = _parse(kind, bounds, environ[var], f"{var}={environ[var]!r}")
        if name == "data_dir":
            # Absolute, so the embedded Redis's unix:// URL means the same in every process.
            values[name] = str(Path(values[name]).resolve())
    _check(values, lambda name: f"{SETTINGS[name][0]}={values[name]!r}"
           if environ.get(SETTINGS[name][0]) else f"{path}: {name} = {values[name]!r}")
    return Config(**values)


# --- the running engine's record ----------------------------------------------
# `cameron run` and `cameron start` write the settings they run with into the data folder;
# the other commands read them back, so a new shell needs none of the engine's variables.

def record_file(data_dir: str) -> Path:
    return Path(data_dir) / "run" / "engine.json"


def write_record(config: Config, **extra):
    """Record where this engine runs (admin port, API address, Redis, every setting)."""
    path = record_file(config.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The signing key stays out: the commands that read this record never sign a call.
    doc = {f.name: getattr(config, f.name) for f in fields(Config) if f.name != "signing_key"}
    doc.update(engine=config.engine, **extra)
    tmp = path.with_suffix(".tmp")
    # Only its owner reads it: the Redis URL may carry a password.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def remove_record(config: Config):
    record_file(config.data_dir).unlink(missing_ok=True)


def _read_record(environ) -> dict | None:
    """The record in the data folder that CAMERON_DATA_DIR, or else the default settings
    file, names; None when there is none or it cannot be read."""
    data_dir = environ.get("CAMERON_DATA_DIR")
    if not data_dir:
        try:
            base = {k: v for k, v in environ.items() if k in ("CAMERON_ENV", "CAMERON_CONFIG")}
            data_dir = from_env(base).data_dir
        except ConfigError:
            return None
    try:
        doc = json.loads(record_file(str(Path(data_dir).resolve())).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("env") in ENVIRONMENTS else None


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
        if name == "allow" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)  # a TOML list, as in the catalog
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
    if values.get("allow"):
        from cameron.allow import parse_rules
        try:
            parse_rules(values["allow"].split(","), where("allow"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    level = values.get("log_level", _DEFAULTS["log_level"])
    if level not in LOG_LEVELS:
        raise ConfigError(f"{where('log_level')}: expected one of {', '.join(LOG_LEVELS)}")
    _check_front_door(values, where)


def _check_front_door(values: dict, where):
    url = values.get("public_url")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"{where('public_url')}: expected http(s)://host[:port][/path]")
    if values.get("max_key_bytes", 0) > KEY_BYTES_CEILING:
        raise ConfigError(f"{where('max_key_bytes')}: at most {KEY_BYTES_CEILING} (a job's URL "
                          "must fit in a request line)")
    try:
        parse_tokens(values.get("api_tokens", ""))
    except ValueError as e:
        # Never quote the value: it holds secrets.
        raise ConfigError(f"{SETTINGS['api_tokens'][0]} (or api_tokens): {e}") from None


def parse_tokens(text: str) -> dict[str, str]:
    """Comma-separated `token` or `name:token` entries as name -> token; a token given without
    a name is named by the start of its SHA-256, which says nothing of the token. ValueError
    saying what is wrong, never quoting a token."""
    named = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, token = entry.partition(":")
        if not sep:
            name, token = hashlib.sha256(entry.encode()).hexdigest()[:12], entry
        elif not name or not token:
            raise ValueError("an entry is `name:` or `:token`; expected token or name:token")
        elif name in named:
            raise ValueError(f"the name {name!r} is given twice")
        if not all(33 <= ord(c) < 127 for c in token):
            raise ValueError("a token holds a space or a character that is not printable ASCII")
        named[name] = token
    return named
