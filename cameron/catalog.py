"""The process catalog file: which processes exist, where each one starts, and its settings."""

import math
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cameron.config import ConfigError, read_toml

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
#: `${NAME}` or `${NAME:-default}` in a start URL: an environment variable; `$$` is a `$`.
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SETTINGS = {"connect_timeout": float, "read_timeout": float,
             "max_attempts": int, "retry_backoff": float, "retry_backoff_max": float}


@dataclass(frozen=True)
class Process:
    """A workflow definition; settings left None fall back to the engine's defaults."""

    name: str
    start_url: str
    connect_timeout: float | None = None
    read_timeout: float | None = None
    #: Calls of one task at most (1 = never retry), and the backoff before the 2nd, doubling
    #: up to retry_backoff_max (seconds).
    max_attempts: int | None = None
    retry_backoff: float | None = None
    retry_backoff_max: float | None = None


def is_http_url(url) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def load(path: str, environ=None) -> dict[str, Process]:
    """Read and check a catalog file; any problem raises ConfigError naming the file."""
    return parse(read_toml(path, "process catalog"), path, environ)


def expand(text: str, environ) -> str:
    """`text` with its `${NAME}` and `${NAME:-default}` replaced from `environ` (an empty
    variable takes the default, as in the shell); KeyError names a variable unset without one."""
    def value(match):
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if environ.get(name):
            return environ[name]
        if default is None:
            raise KeyError(name)
        return default
    return _VARIABLE.sub(value, text)


def parse(doc: dict, path: str = "<catalog>", environ=None) -> dict[str, Process]:
    environ = os.environ if environ is None else environ

    def bad(problem):
        return ConfigError(f"process catalog {path}: {problem}")

    unknown = set(doc) - {"processes"}
    if unknown:
        raise bad(f"unknown top-level entry {sorted(unknown)[0]!r} (only [processes.NAME] tables)")
    tables = doc.get("processes", {})
    if not isinstance(tables, dict):
        raise bad("'processes' must be a table of [processes.NAME] tables")
    catalog = {}
    for name, entry in tables.items():
        if not _NAME.fullmatch(name):
            raise bad(f"process name {name!r} must be 1-100 letters, digits, '_', '.' or '-'")
        if not isinstance(entry, dict):
            raise bad(f"[processes.{name}] must be a table")
        start = entry.get("start")
        if isinstance(start, str):
            try:
                start = expand(start, environ)
            except KeyError as e:
                raise bad(f"[processes.{name}] start refers to ${{{e.args[0]}}}, which is not set "
                          f"(give a default: ${{{e.args[0]}:-...}})") from None
        if not is_http_url(start):
            raise bad(f"[processes.{name}] needs start = \"http://...\" (the start activity's URL)")
        settings = {}
        for key, value in entry.items():
            if key == "start":
                continue
            if key not in _SETTINGS:
                raise bad(f"[processes.{name}] unknown setting {key!r} (known: start, {', '.join(_SETTINGS)})")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise bad(f"[processes.{name}] {key} must be a number greater than zero")
            if _SETTINGS[key] is int and value != int(value):
                raise bad(f"[processes.{name}] {key} must be a whole number")
            settings[key] = _SETTINGS[key](value)
        catalog[name] = Process(name=name, start_url=start, **settings)
    return catalog
