"""What /proc tells about this machine's processes: which exist, and where they listen."""

import ipaddress
import os
import socket


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); [] when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used, user and system; 0 when it is gone."""
    stat = _stat(pid)
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") if stat else 0.0


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, does not)."""
    stat = _stat(pid)
    return bool(stat) and stat[0] != "Z"


def ppid(pid: int) -> int:
    """The process's parent (0 when it is gone)."""
    stat = _stat(pid)
    return int(stat[1]) if stat else 0


def cmdline(pid: int) -> bytes:
    """The process's command line, NUL-separated (b"" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def exe(pid: int) -> str:
    """The program the process runs, resolved ("" when it is gone or not ours to look at)."""
    try:
        return os.path.realpath(f"/proc/{pid}/exe", strict=True)
    except OSError:
        return ""


def _address(hex_addr: str) -> str:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words in host byte order."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words if len(words) == 16 else words[:4])) \
        if len(words) in (4, 16) else hex_addr


def listeners() -> dict[str, tuple[str, int]]:
    """Every listening TCP socket of this network namespace: inode -> (address, port)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":  # TCP_LISTEN
                        addr, port = parts[1].rsplit(":", 1)
                        found[parts[9]] = (_address(addr), int(port, 16))
        except OSError:
            pass
    return found


def listening(pids) -> list[tuple[int, str, int]]:
    """(pid, address, port) of each listening TCP socket the processes `pids` hold."""
    table = listeners()
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in table:
                found.append((pid, *table[link[8:-1]]))
    return found


def local_addresses() -> set[str]:
    """This machine's own IP addresses (every interface's), from the kernel's tables."""
    found = {"0.0.0.0", "::"}
    try:
        with open("/proc/net/fib_trie") as f:
            last = None
            for line in f:
                words = line.split()
                if words[:1] == ["|--"]:
                    last = words[1]
                elif "/32 host LOCAL" in line and last:
                    found.add(last)
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                found.add(str(ipaddress.ip_address(bytes.fromhex(line.split()[0]))))
    except OSError:
        pass
    try:
        found.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return found
