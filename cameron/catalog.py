"""The process catalog file: which processes exist, where each one starts, and its settings."""

import math
import os
import re
from dataclasses import dataclass

from cameron.allow import AllowList, parse_rules, url_problem
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
    #: Where its activities may live (`allow` in the catalog, else the engine's `allow`
    #: setting, else the start URL's host and port); None only for a Process built by hand.
    allow: AllowList | None = None


def is_http_url(url) -> bool:
    return url_problem(url) is None


def load(path: str, environ=None, *, default_allow: str = "") -> dict[str, Process]:
    """Read and check a catalog file; any problem raises ConfigError naming the file.
    `default_allow` is the engine's `allow` setting, for processes without a list."""
    return parse(read_toml(path, "process catalog"), path, environ, default_allow=default_allow)


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


def parse(doc: dict, path: str = "<catalog>", environ=None, *, default_allow: str = "") -> dict[str, Process]:
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
        if not isinstance(start, str):
            raise bad(f"[processes.{name}] needs start = \"http://...\" (the start activity's URL)")
        problem = url_problem(start)
        if problem:
            raise bad(f"[processes.{name}] start {problem}")
        settings = {}
        try:
            if "allow" in entry:
                if not isinstance(entry["allow"], list) or not entry["allow"]:
                    raise ValueError("allow must be a non-empty list of \"host:port\" strings")
                try:
                    entries = [expand(e, environ) if isinstance(e, str) else e for e in entry["allow"]]
                except KeyError as e:
                    raise ValueError(f"allow refers to ${{{e.args[0]}}}, which is not set") from None
                settings["allow"] = AllowList(name, parse_rules(entries, "allow"))
            elif default_allow:
                settings["allow"] = AllowList(name, parse_rules(default_allow.split(","), "the allow setting"))
            else:
                settings["allow"] = AllowList.of_start(name, start)
        except ValueError as e:
            raise bad(f"[processes.{name}] {e}") from None
        for key, value in entry.items():
            if key in ("start", "allow"):
                continue
            if key not in _SETTINGS:
                raise bad(f"[processes.{name}] unknown setting {key!r} (known: start, allow, {', '.join(_SETTINGS)})")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
                raise bad(f"[processes.{name}] {key} must be a number greater than zero")
            if _SETTINGS[key] is int and value != int(value):
                raise bad(f"[processes.{name}] {key} must be a whole number")
            settings[key] = _SETTINGS[key](value)
        catalog[name] = Process(name=name, start_url=start, **settings)
    return catalog
