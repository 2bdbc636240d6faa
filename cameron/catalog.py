"""The process catalog file: which processes exist, where each one starts, and its settings."""

import math
import re
from dataclasses import dataclass

from cameron.allow import AllowList, parse_rules, url_problem
from cameron.config import ConfigError, read_toml

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
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


def load(path: str, default_allow: str = "") -> dict[str, Process]:
    """Read and check a catalog file; any problem raises ConfigError naming the file.
    `default_allow` is the engine's `allow` setting, for processes without a list."""
    return parse(read_toml(path, "process catalog"), path, default_allow)


def parse(doc: dict, path: str = "<catalog>", default_allow: str = "") -> dict[str, Process]:
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
        if not isinstance(entry.get("start"), str):
            raise bad(f"[processes.{name}] needs start = \"http://...\" (the start activity's URL)")
        problem = url_problem(entry["start"])
        if problem:
            raise bad(f"[processes.{name}] start {problem}")
        settings = {}
        try:
            if "allow" in entry:
                if not isinstance(entry["allow"], list) or not entry["allow"]:
                    raise ValueError("allow must be a non-empty list of \"host:port\" strings")
                settings["allow"] = AllowList(name, parse_rules(entry["allow"], "allow"))
            elif default_allow:
                settings["allow"] = AllowList(name, parse_rules(default_allow.split(","), "the allow setting"))
            else:
                settings["allow"] = AllowList.of_start(name, entry["start"])
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
        catalog[name] = Process(name=name, start_url=entry["start"], **settings)
    return catalog
