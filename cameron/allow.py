"""Where a process's activities may live: its allow list, checked against the address the
engine is about to connect to, and the checks every activity URL and name must pass."""

import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cameron import procfs

#: Task names longer than this are refused: each one is spelled in several Redis field names.
MAX_NAME = 256
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def url_problem(url) -> str | None:
    """What makes `url` unusable as an activity's address, or None. Whitespace or control
    characters would add words or lines to the request; credentials would travel in the clear
    and end up in Redis beside the task."""
    if not isinstance(url, str):
        return "is not a string"
    if _CONTROL_OR_SPACE.search(url):
        return "holds whitespace or control characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    if "@" in parts.netloc:
        return "holds credentials (user:password@); activities are told apart by signed calls instead"
    try:
        parts.port
    except ValueError:
        return "has a port that is no number from 0 to 65535"
    return None


def name_problem(name) -> str | None:
    """What makes `name` unusable as a task's name, or None."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if _CONTROL.search(name):
        return "holds control characters"
    return None


def host_port(url: str) -> tuple[str, int]:
    """The host name (lower case) and port a checked URL names, the scheme's port if none."""
    parts = urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class Rule:
    """One allow-list entry: `host:port`. The host is a name, `*.domain`, `*`, an IP address
    or a network (`10.0.0.0/8`); the port a number or `*`."""

    text: str
    host: str  # a lower-case name or pattern; "" when `network` says it
    network: object  # ipaddress network, or None
    port: int | None  # None: any port
    #: One host and one port, written out: it may name even one of the engine's own ports.
    exact: bool = False
    address: str | None = None  # the one address of a one-address network, as text

    def matches(self, host: str, port: int, ip: str) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.network is not None:
            return ip == self.address or _address(ip) in self.network  # the first: no parsing
        if self.host == "*":
            return not is_local(ip)
        if self.host.startswith("*."):
            # A pattern of names never covers this machine's own addresses: a name under it
            # that resolves to 127.0.0.1 must not open the engine's back door.
            return host.endswith(self.host[1:]) and not is_local(ip)
        return host == self.host


def parse_rule(text: str) -> Rule:
    """`host:port` as a Rule; ValueError says what is wrong."""
    if not isinstance(text, str) or _CONTROL_OR_SPACE.search(text):
        raise ValueError(f"allow entry {text!r} must be \"host:port\"")
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"allow entry {text!r} must be \"host:port\" (port a number or *)")
    if port == "*":
        port_number = None
    elif port.isdigit() and 0 < int(port) < 65536:
        port_number = int(port)
    else:
        raise ValueError(f"allow entry {text!r}: the port must be a number from 1 to 65535 or *")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        network = None
    if network is None:
        name = host.lower()
        if "*" in name[1:] or (name.startswith("*") and name != "*" and not name.startswith("*.")):
            raise ValueError(f"allow entry {text!r}: a wildcard may only start the name, as in *.example.com")
        return Rule(text, name, None, port_number, exact=port_number is not None and "*" not in name)
    single = network.num_addresses == 1
    return Rule(text, "", network, port_number, exact=single and port_number is not None,
                address=str(network.network_address) if single else None)


def parse_rules(entries, where: str) -> tuple:
    try:
        return tuple(parse_rule(e) for e in entries)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


@dataclass(frozen=True)
class AllowList:
    """A process's allow list. `check` answers None (go ahead) or the reason to refuse."""

    process: str
    rules: tuple

    @classmethod
    def of_start(cls, process: str, start_url: str) -> "AllowList":
        host, port = host_port(start_url)
        return cls(process, (parse_rule(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"),))

    def check(self, host: str, port: int, ip: str, engine_ports) -> str | None:
        """`engine_ports()` gives the ports the engine itself listens on (asked only when a
        pattern lets a call reach this machine)."""
        host = host.lower()
        for rule in self.rules:
            if not rule.matches(host, port, ip):
                continue
            if rule.exact or not is_local(ip) or port not in engine_ports():
                return None
            return (f"{host}:{port} ({ip}) is one of the engine's own ports: refused unless "
                    f"the allow list of process {self.process} names it exactly")
        return f"{host}:{port} ({ip}) is not in the allow list of process {self.process}"

    def __reduce__(self):
        # A runner's every batch of calls to its TaskActor carries the allow list: pickled as
        # its entries and unpickled from a cache, it is not parsed again (IP networks and all)
        # each time, which was a third of pickling a call.
        return _allow_list, (self.process, tuple(rule.text for rule in self.rules))


@functools.lru_cache(maxsize=1024)
def _allow_list(process: str, entries: tuple) -> AllowList:
    return AllowList(process, parse_rules(entries, "allow"))


_local = None


def is_local(ip: str) -> bool:
    """Whether `ip` is this machine: loopback, unspecified or one of its interfaces' addresses."""
    global _local
    address = _address(ip)
    if address.is_loopback or address.is_unspecified:
        return True
    if _local is None:
        _local = frozenset(procfs.local_addresses())
    return str(address) in _local


def _address(ip: str):
    """An IP address, IPv4-mapped IPv6 ones (::ffff:127.0.0.1) as the IPv4 address they reach."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    return address.ipv4_mapped or address if address.version == 6 else address
