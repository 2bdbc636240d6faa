"""Starting, joining and stopping the Thespian actor system that runs the engine's actors."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

from pathlib import Path

from cameron import logs, procfs
from cameron import messages as m
from cameron.config import Config

BASE = "multiprocTCPBase"  # the only base other processes (gunicorn, the CLI) can join


class EngineDown(Exception):
    """No actor system answers on the configured admin port."""


def _adjust_thespian():
    """What every process that creates a Thespian transport does first."""
    _loopback_by_default()
    _poll_each_turn()


def _loopback_by_default():
    """Thespian's transport unpickles whatever reaches its ports: keep them off the network
    unless the operator explicitly chose an address, and bind them to that address alone.

    THESPIAN_BASE_IPADDR only sets the address Thespian *advertises*: its IPActorAddress binds
    every listening socket to ('', port), all interfaces. Binding to the advertised address
    instead closes them to other hosts. Every process that creates a Thespian transport (the
    admin, and the actors it forks; gunicorn workers and the CLI, which join) comes through
    here first; the tests scan the listening sockets so that an upgrade of Thespian that
    changes this cannot go unnoticed."""
    os.environ.setdefault("THESPIAN_BASE_IPADDR", "127.0.0.1")
    from thespian.system.transport.IPBase import IPActorAddress
    IPActorAddress.bindArgs = property(lambda self: (self.sockname,))


def _poll_each_turn():
    """Thespian's TCP transport makes a new selector on every turn of its loop: an epoll set
    created, each of its sockets registered, one wait, the set closed (about 32 µs a turn with
    15 sockets). poll() takes its list with each call (about 11 µs): the same waits for a
    third of the cost, on every turn of every actor's loop, and the same events."""
    import selectors
    import types
    from thespian.system.transport import TCPTransport
    TCPTransport.selectors = types.SimpleNamespace(
        DefaultSelector=selectors.PollSelector, EVENT_READ=selectors.EVENT_READ,
        EVENT_WRITE=selectors.EVENT_WRITE)


def thespian_address() -> str:
    """The address the actor system listens on (and advertises)."""
    return os.environ.get("THESPIAN_BASE_IPADDR") or "127.0.0.1"


def warn_if_exposed(log, what: str, address: str):
    """One warning at start when a listening socket of ours is not on loopback."""
    if not is_loopback(address):
        log.warning("%s listens on %s, not loopback: anyone who can reach this host on it %s",
                    what, address, _RISKS.get(what, "can use it"))


_RISKS = {"the actor system": "can run code as this user (Thespian unpickles what it receives)",
          "the API": "can start, read and cancel jobs unless API tokens are set",
          "the sample server": "can call its activities"}


def is_loopback(address: str) -> bool:
    import ipaddress
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def admin_listening(config: Config) -> bool:
    try:
        with socket.create_connection((thespian_address(), config.admin_port), timeout=0.5):
            return True
    except OSError:
        return False


def _log_defs(config: Config) -> dict:
    return logs.log_config(config)


def join(config: Config):
    """The running system, as a client; never starts one (a wrong port would silently do that)."""
    _adjust_thespian()
    if not admin_listening(config):
        raise EngineDown(f"no Cameron actor system on admin port {config.admin_port}")
    from thespian.actors import ActorSystem
    return ActorSystem(BASE, {"Admin Port": config.admin_port})


#: The Supervisor's class, named so that Thespian imports it in the actor process: the
#: cameron package never imports the actors (they import it).
SUPERVISOR = "actors.supervisor.Supervisor"
#: The name the actor system knows the one Supervisor by: createActor finds it, or makes it.
SUPERVISOR_NAME = "cameron-supervisor"


def supervisor(asys):
    return asys.createActor(SUPERVISOR, globalName=SUPERVISOR_NAME)


def start(config: Config, timeout: float = 30.0, log_file: str | None = None) -> m.Peers:
    """Start the actor system and its supervised actors; return once every actor answers.
    The actor processes outlive the caller; they write their log to `log_file`, or to the
    caller's stderr when None."""
    _adjust_thespian()
    if admin_listening(config):
        raise RuntimeError(f"admin port {config.admin_port} is in use: is Cameron already running?")
    from thespian.actors import ActorSystem
    if log_file is None:
        asys = ActorSystem(BASE, {"Admin Port": config.admin_port}, logDefs=_log_defs(config))
    else:
        _create_detached(config, log_file)
        asys = join(config)
    _write_pidfile(config)
    try:
        return wait_ready(asys, config, timeout)
    except Exception:
        stop(config)
        raise


def more_open_files(most: int = 65536) -> int:
    """Raise this process's soft limit of open files to its hard one (at most `most`), for the
    processes it starts: a TaskActor holds a socket per call in flight (calls_in_flight of
    them, 16,384 by default), and Linux's usual soft limit is 1,024. Returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = most if hard == resource.RLIM_INFINITY else min(hard, most)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    return soft


def _create_detached(config: Config, log_file: str):
    """Create the system from a throwaway child whose stdio is the log file: the admin forks
    from its creator and keeps every descriptor it had, and a caller reading our output
    through a pipe would otherwise wait for the daemons to end too."""
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with open(os.devnull, "rb") as null, open(log_file, "ab") as log_out:
                os.dup2(null.fileno(), 0)
                os.dup2(log_out.fileno(), 1)
                os.dup2(log_out.fileno(), 2)
            from thespian.actors import ActorSystem
            ActorSystem(BASE, {"Admin Port": config.admin_port}, logDefs=_log_defs(config))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the actor system did not start; see {log_file}")


def wait_ready(asys, config: Config, timeout: float) -> m.Peers:
    deadline = time.monotonic() + timeout
    sup = supervisor(asys)
    while True:
        with asys.private() as ctx:
            peers = ctx.ask(sup, m.WhereIs(config), 5)
            if isinstance(peers, m.Peers) and peers.scheduler is not None:
                addrs = [peers.catalog, peers.job_data, peers.scheduler, *peers.runners]
                if all(isinstance(ctx.ask(a, m.Ping(), 5), m.Pong) for a in addrs):
                    return peers
        if time.monotonic() > deadline:
            raise RuntimeError("the actor system started but its actors did not answer")
        time.sleep(0.1)


def stop(config: Config, timeout: float = 15.0) -> bool:
    """Shut the system down and wait until none of its processes is left; False if none ran."""
    pids = system_pids(config)
    if not admin_listening(config):
        _kill(pids)  # orphans of an admin that died: they hold the port and must go
        return bool(pids)
    join(config).shutdown()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    _kill([p for p in pids if alive(p)])
    _pidfile(config).unlink(missing_ok=True)
    return True


# --- which OS processes belong to the system ---------------------------------
# The admin calls setsid() and forks once more, and every actor is forked from it, so they
# all share one session: the session id recorded at start finds them all, orphans included.
# The file holds "SID ADMIN_PID"; the admin is the session's first process.

def _pidfile(config: Config):
    return Path(config.data_dir) / "run" / f"actors-{config.admin_port}.pid"


def admin_pid(config: Config) -> int | None:
    """The pid of the admin `start` recorded, if any."""
    recorded = _read_pidfile(config)
    return recorded[1] if recorded else None


def _read_pidfile(config: Config) -> tuple[int, int] | None:
    try:
        sid, admin = map(int, _pidfile(config).read_text().split())
        return sid, admin
    except (OSError, ValueError):
        return None


def _write_pidfile(config: Config):
    sid = _listener_sid(config.admin_port)
    if sid:
        members = _session_members(sid)
        admin = next(p for p in members if procfs.ppid(p) not in members)
        path = _pidfile(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{sid} {admin}\n")


def _listener_sid(port: int) -> int | None:
    pid = _listener_pid(port)
    try:
        return os.getsid(pid) if pid else None
    except OSError:
        return None


def held_by_us(port: int) -> bool:
    """Whether the process listening on `port` runs our interpreter (an actor system of ours,
    live or orphaned) rather than another program."""
    pid = _listener_pid(port)
    return pid is not None and procfs.exe(pid) == os.path.realpath(sys.executable)


def _listener_pid(port: int) -> int | None:
    for pid, _, listen_port in procfs.listening(procfs.all_pids()):
        if listen_port == port:
            return pid
    return None


def system_pids(config: Config) -> list[int]:
    """PIDs of the actor system's processes (admin, logger, actors), live or orphaned."""
    recorded = _read_pidfile(config)
    sid = recorded[0] if recorded else _listener_sid(config.admin_port)
    return _session_members(sid) if sid else []


def engine_ports(config: Config) -> set[int]:
    """The ports this engine listens on: the API, the admin, and every socket of the actor
    system's processes (the caller's session) and of API servers (gunicorn serving
    cameron.wsgi). An activity must not be able to send the engine's calls to them."""
    session = os.getsid(0)
    pids = []
    for pid in procfs.all_pids():
        try:
            ours = os.getsid(pid) == session
        except OSError:
            continue
        if ours or b"cameron.wsgi" in procfs.cmdline(pid):
            pids.append(pid)
    return {config.port, config.admin_port} | {port for _, _, port in procfs.listening(pids)}


class EnginePorts:
    """engine_ports(config) as a callable that reads /proc at most every `kept` seconds: an
    allow-list check may ask for them on every call (from any thread)."""

    def __init__(self, config: Config, kept: float = 2.0):
        self.config, self.kept = config, kept
        self._known = (-kept, set())  # (read at, the ports)

    def __call__(self) -> set[int]:
        when, ports = self._known
        if time.monotonic() - when > self.kept:
            ports = engine_ports(self.config)
            self._known = (time.monotonic(), ports)
        return ports


def _session_members(sid: int) -> list[int]:
    # A session id can be reused once its leader is gone: only count processes that run our
    # own interpreter, as every process Thespian forks for us does.
    python = os.path.realpath(sys.executable)
    pids = []
    for pid in procfs.all_pids():
        try:
            if os.getsid(pid) == sid and pid != os.getpid() and procfs.exe(pid) == python:
                pids.append(pid)
        except OSError:
            pass
    return pids




def stop_child(proc, timeout: float):
    """SIGTERM a subprocess we started (gunicorn, an activity server), SIGKILL it if it has not
    exited within `timeout` seconds, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def children(pid: int) -> list[int]:
    """PIDs of the processes whose parent is `pid` (gunicorn's workers, a runner's TaskActor)."""
    return [p for p in procfs.all_pids() if procfs.ppid(p) == pid]


alive = procfs.alive  # what callers of this module have always used


def _kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def orphans(config: Config) -> list[int]:
    """Actor processes whose admin died (kill -9): they still hold the admin port."""
    recorded = _read_pidfile(config)
    if recorded is None or alive(recorded[1]):
        return []
    return _session_members(recorded[0])


def kill_and_wait(pids, config: Config, timeout: float = 10.0):
    _kill(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (any(alive(p) for p in pids) or admin_listening(config)):
        time.sleep(0.05)
    _pidfile(config).unlink(missing_ok=True)
