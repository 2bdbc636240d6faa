"""The `cameron` command: run the whole engine in the foreground, start/stop/inspect it, and
(through cli_jobs) look at, start and cancel its jobs."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import redis

from cameron import (__version__, actorsys, api, catalog, cli_jobs, health, keeper, keys, logs, metrics, store,
                     term, web)
from cameron import messages as m
from cameron.config import (ROOT, SETTINGS, Config, ConfigError, from_env, redact_url, remove_record,
                            write_record)
from cameron.gateway import EngineUnavailable
from cameron.keeper import Keeper
from cameron.redis_server import EmbeddedRedis


class Fail(Exception):
    """A one-line error for the user; the command exits non-zero without a traceback."""


def _say(text):
    print(f"cameron: {text}", file=sys.stderr, flush=True)


def _check_redis(config: Config):
    url = config.redis_url
    try:
        store.connect(url, config.redis_timeout).ping()
    except redis.RedisError as e:
        raise Fail(f"cannot reach Redis at {redact_url(url)}: {e}") from None


def _check_port(host: str, port: int, setting: str):
    """Refuse, in one line naming the setting, a port another program already listens on."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            s.bind((host or "0.0.0.0", port))
        except OSError as e:
            raise Fail(f"port {port} ({setting}, {SETTINGS[setting][0]}) cannot be used: "
                       f"{e.strerror.lower() if e.strerror else e}; set {SETTINGS[setting][0]} "
                       "to a free port") from None


def _check_ports(config: Config, web_too: bool, foo_too: bool):
    """Before anything starts: every port this start needs is free, or one line says which is
    not (the admin port held by a dead engine's orphans counts as free: they are cleared)."""
    if not actorsys.admin_listening(config):
        _check_port(os.environ.get("THESPIAN_BASE_IPADDR", "127.0.0.1"), config.admin_port, "admin_port")
    elif not actorsys.held_by_us(config.admin_port):
        raise Fail(f"port {config.admin_port} (admin_port, CAMERON_ADMIN_PORT) is in use by another "
                   "program; set CAMERON_ADMIN_PORT to a free port")
    elif not actorsys.orphans(config):
        raise Fail(f"admin port {config.admin_port} is in use: is Cameron already running? (`cameron status`)")
    if web_too:
        _check_port(config.bind, config.port, "port")
    if foo_too:
        _check_port("127.0.0.1", config.foo_port, "foo_port")


def _start_actors(config: Config, log_file=None):
    """Clear what an unclean stop left behind, then boot the actor system."""
    orphans = actorsys.orphans(config)
    if orphans:
        _say(f"stopping {term.plural(len(orphans), 'actor process')} left by an engine that died")
        actorsys.kill_and_wait(orphans, config)
    metrics.reset(config)
    try:
        actorsys.start(config, log_file=log_file)
    except RuntimeError as e:
        raise Fail(str(e)) from None
    # Return once the engine's health record is there, so that /api/health and `cameron
    # status` (which read it rather than asking the actors) see the engine whole at once.
    client = store.connect(config.effective_redis_url, config.health_timeout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if client.exists(keys.engine_health(config.engine)):
                return
        except redis.RedisError:
            pass  # Redis stalled: health says so, start goes on
        time.sleep(0.02)
    _say("warning: the engine has not reported its health yet (see `cameron status`)")


def _spawn(args, **kw):
    # Own session: Ctrl-C reaches only `cameron run`, which then stops everything in order.
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True, **kw)


def _wait_http(url: str, proc, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Fail(f"{what} exited at start (code {proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as e:
            if getattr(e, "code", None):  # an HTTP error status: it is serving
                return
        time.sleep(0.05)
    raise Fail(f"{what} did not answer at {url} within {timeout:g} s")


def cmd_run(config: Config, args) -> int:
    """Redis (embedded unless CAMERON_REDIS_URL), actors, the foo server and gunicorn, until a signal."""
    actorsys.more_open_files()  # for every process it starts: each call in flight holds a socket
    stop_requested = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_requested.append(signum))
    embedded = foo = gunicorn = None
    actors_up = False
    _check_ports(config, web_too=True, foo_too=not args.no_foo)
    try:
        if config.redis_url:
            _check_redis(config)
            _say(f"using Redis at {config.redis_url_shown}")
        else:
            embedded = EmbeddedRedis(config.data_dir).start()
            _say(f"embedded Redis at {embedded.url} (data in {embedded.dir})")
        if not args.no_foo:
            # With a signing key, the sample server checks every call's signature.
            foo = _spawn([sys.executable, "-m", "cameron.activity_server", "--port", str(config.foo_port)],
                         env={**os.environ, "CAMERON_SIGNING_KEY": config.signing_key})
            _wait_http(f"http://127.0.0.1:{config.foo_port}/calls", foo, 15, "the foo activity server")
        _start_actors(config)
        actors_up = True
        top = Keeper(config)
        top.check()
        _say(f"actor system up (admin port {config.admin_port}, loopback)")
        gunicorn = _spawn([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"),
                           "cameron.wsgi:app"])
        base = config.listen_url
        _wait_http(f"{base}/api", gunicorn, 30, "gunicorn")
        write_record(config, pid=os.getpid())
        _say(f"API on {base}/api  (Ctrl-C stops everything)")
        print(f"try: curl -si -X POST {base}/api/process/foo/start -H 'Content-Type: application/json' "
              "-d '{\"key\":\"(id,007)\",\"data\":\"be careful with that data\",\"requestor\":\"bob_the_thin\"}'",
              flush=True)
        while not stop_requested:
            for proc, what in ((gunicorn, "gunicorn"), (foo, "the foo server"), (embedded and embedded.proc, "Redis")):
                if proc is not None and proc.poll() is not None:
                    raise Fail(f"{what} exited unexpectedly (code {proc.returncode}); stopping")
            try:
                top.check()  # the top of the supervision tree: a dead Supervisor is replaced
            except actorsys.EngineDown:
                raise Fail("the actor system's admin died; stopping") from None
            time.sleep(0.2)
        _say("stopping")
        return 0
    finally:
        remove_record(config)
        actorsys.stop_child(gunicorn, 15.0)
        if actors_up:
            actorsys.stop(config)
        actorsys.stop_child(foo, 15.0)
        if embedded:
            embedded.stop()


def cmd_start(config: Config, args) -> int:
    """Boot the actor system in the background, and the embedded Redis first unless
    redis_url names one; with --web the API server too, with --with-foo the sample server.
    All or nothing: what it started is stopped again if a later part fails."""
    actorsys.more_open_files()  # for every process it starts: each call in flight holds a socket
    if args.web and web.running_pid(config):
        raise Fail(f"the API server already runs on {config.listen_url} (pid {web.running_pid(config)})")
    if args.with_foo and web.foo_running_pid(config):
        raise Fail(f"the sample server already runs (pid {web.foo_running_pid(config)})")
    _check_ports(config, web_too=args.web, foo_too=args.with_foo)
    started = []  # how to stop each part started, undone in reverse on failure
    try:
        if config.redis_url:
            _check_redis(config)
        else:
            embedded = EmbeddedRedis(config.data_dir)
            if not embedded.answers():
                try:
                    embedded.start()
                except RuntimeError as e:
                    raise Fail(f"embedded Redis: {e}") from None
                started.append(embedded.stop_detached)
                print(f"Cameron embedded Redis started ({embedded.url})")
        if args.with_foo:
            pid = web.start_foo(config)
            started.append(lambda: web.stop_foo(config))
            print(f"Cameron sample server on http://127.0.0.1:{config.foo_port} (pid {pid}, "
                  f"log: {web.foo_log_file(config)})")
        log_file = os.path.join(config.data_dir, "log", "actors.log")
        _start_actors(config, log_file)
        started.append(lambda: actorsys.stop(config))
        print(f"Cameron actor system started on admin port {config.admin_port} (log: {log_file})")
        if args.web:
            pid = web.start(config)
            print(f"Cameron API on {config.listen_url}/api (pid {pid}, log: {web.log_file(config)})")
        write_record(config)
        # Last: it would bring back a Supervisor that a failed start is stopping.
        keeper.spawn(config, log_file)
    except (Fail, web.WebError) as e:
        for undo in reversed(started):
            undo()
        raise Fail(f"{e}; what had started was stopped again" if started else str(e)) from None
    return 0


def cmd_stop(config: Config, args) -> int:
    """Stop the API server, the actor system, the sample server and the embedded Redis (the
    last one once nothing writes to it). Exit 0 when something was stopped, 1 when nothing ran."""
    stopped = []
    if web.stop(config):
        stopped.append("API server")
    keeper.stop(config)  # first: it would bring back a Supervisor being shut down
    orphans = actorsys.orphans(config)
    if orphans:  # their admin died: nothing to ask for a shutdown, they hold its port
        actorsys.kill_and_wait(orphans, config)
        stopped.append("actor system (left by an engine that died)")
    elif actorsys.stop(config):
        stopped.append("actor system")
    if web.stop_foo(config):
        stopped.append("sample server")
    if not config.redis_url and EmbeddedRedis(config.data_dir).stop_detached():
        stopped.append("embedded Redis")
    remove_record(config)
    for what in stopped:
        print(f"Cameron {what} stopped")
    if not stopped:
        print("Cameron was not running")
    return 0 if stopped else 1


def cmd_status(config: Config, args) -> int:
    """Exit 0 when every actor and Redis answer, 1 when one does not, 3 when the system is not
    running (like `service status`)."""
    report = status_report(config)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print_status(report)
    if not report["running"]:
        return 3
    return 0 if (report["health"]["ok"] and all(a["alive"] for a in report["actors"])
                 and report["redis"]["ok"]) else 1


def status_report(config: Config) -> dict:
    report = {"running": False, "env": config.env, "config_file": config.config_file,
              "admin": f"{os.environ.get('THESPIAN_BASE_IPADDR', '127.0.0.1')}:{config.admin_port}",
              "actors": [], "redis": {"url": config.redis_url_shown},
              "web": {"url": config.listen_url, "pid": web.running_pid(config)},
              "keeper": {"pid": keeper.running_pid(config)}}
    processes = []
    client = store.connect(config.effective_redis_url, config.health_timeout)
    deadline = time.monotonic() + 3  # a new Supervisor, or a JobData back from a stall, reports soon
    while True:
        report["health"] = health.engine_health(client, config.engine, config.stall_after)
        # The actors are asked only when the health record says the Supervisor lives (or
        # cannot say): asking for it by name would create a new one, and so repair what we
        # look at.
        tree_reported = "supervisor_pid" in report["health"] or report["health"].get("unknown", False)
        if tree_reported or time.monotonic() > deadline or not actorsys.admin_listening(config):
            break
        time.sleep(0.1)
    try:
        asys = actorsys.join(config)
    except actorsys.EngineDown:
        asys = None
    if asys is not None and tree_reported:
        with asys.private() as ctx:
            sup = actorsys.supervisor(asys)
            peers = ctx.ask(sup, m.WhereIs(config), 5)
            if isinstance(peers, m.Peers):
                report["running"] = True
                report["actors"] = _actor_tree(asys, ctx, peers)
                listed = ctx.ask(peers.catalog, m.ListProcesses(), 5)
                processes = [p.name for p in listed.processes] if isinstance(listed, m.ProcessList) else []
    elif asys is not None:
        report["running"] = True  # an admin answers, but no supervision tree reports
    try:
        jobs = store.JobStore(client, config.engine)
        report["redis"]["ok"] = bool(jobs.redis.ping())
        report["unfinished_jobs"] = jobs.redis.scard(keys.engine_jobs(config.engine))
        report["jobs"] = {name: jobs.count_by_state(name) for name in processes}
    except redis.RedisError as e:
        report["redis"].update(ok=False, error=str(e))
    return report


def _actor_tree(asys, ctx, peers: m.Peers) -> list[dict]:
    """Every actor with its class, parent, pid and message count: the supervisor, the actors
    it supervises, and the TaskActor under each runner."""
    rows = []

    def ping(role, addr, parent):
        pong = ctx.ask(addr, m.Ping(), 5) if addr is not None else None
        alive = isinstance(pong, m.Pong)
        rows.append({"role": role, "class": pong.cls if alive else None, "parent": parent,
                     "address": str(addr), "alive": alive,
                     **({"pid": pong.pid, "messages": pong.handled, "figures": pong.status} if alive else {})})
        return pong if alive else None

    ping("supervisor", actorsys.supervisor(asys), "actor system")
    for role, addr in [("catalog", peers.catalog), ("job_data", peers.job_data),
                       ("scheduler", peers.scheduler)] + [(f"runner:{i}", a) for i, a in enumerate(peers.runners)]:
        pong = ping(role, addr, "supervisor")
        for child in (pong.children if pong else ()):
            ping(f"task_actor:{role.split(':')[-1]}", child, role)
    return rows


def _print_status(report: dict):
    state = "running" if report["running"] else "not running"
    print(f"{term.paint('Cameron', 'bold')} ({report['env']}): actor system "
          f"{term.paint(state, 'done' if report['running'] else 'error')}, admin {report['admin']}")
    if report["config_file"]:
        print(f"  settings: {report['config_file']}")
    w = report["web"]
    print(f"  API: {w['url']}/api " + (f"(pid {w['pid']})" if w["pid"] else "(not started by cameron start --web)"))
    pid = report["keeper"]["pid"]
    print("  keeper: " + (f"pid {pid} (replaces a dead Supervisor)" if pid else
                          "none (cameron run keeps its engine itself; after cameron start, none means "
                          "a dead Supervisor is not replaced)"))
    h = report["health"]
    print("  health: " + (f"whole ({h['children']} of {h['expected']} children), "
                          f"{term.plural(h['unfinished_jobs'], 'unfinished job')}, last moved {h['idle_s']:g} s ago" if h["ok"]
                          else term.paint(h["error"], "error")))
    r = report["redis"]
    print(f"  Redis: {r['url']} " + ("ok" if r.get("ok") else term.paint(f"unreachable: {r.get('error')}", "error")))
    if report["actors"]:
        print()
        print(term.table(["ROLE", "CLASS", "PARENT", "PID", "MESSAGES", "FIGURES"],
                         [[a["role"], a["class"] or "-", a["parent"], a.get("pid", "-"),
                           a.get("messages", "-"),
                           " ".join(f"{k}={v}" for k, v in a.get("figures", {}).items())
                           if a["alive"] else term.paint("does not answer", "error")]
                          for a in report["actors"]]))
    if report.get("jobs"):
        print()
        print(term.table(["PROCESS", *keys.JOB_STATES],
                         [[name, *counts.values()] for name, counts in sorted(report["jobs"].items())]))
    if "unfinished_jobs" in report:
        print(f"\n{term.plural(report['unfinished_jobs'], 'unfinished job')}")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def main(argv=None) -> int:
    parser = _Parser(
        prog="cameron", description="Cameron workflow engine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 ok, 1 failed (a job with errors or cancelled, an actor not answering, "
               "nothing to stop), 2 bad input or settings, 3 engine not running, 4 not found, "
               "5 conflict (job already ended, idempotency key reused)")
    parser.add_argument("--version", action="version", version=f"cameron {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run everything in the foreground (what ./run.sh does)")
    run.add_argument("--no-foo", action="store_true", help="do not serve the sample foo workflow")
    run.add_argument("--foo-port", type=int, help="the sample server's port (default: foo_port, 9292)")
    start = sub.add_parser("start", help="start the engine in the background (and the embedded Redis)")
    start.add_argument("--web", action="store_true", help="and the API server (gunicorn)")
    start.add_argument("--with-foo", action="store_true", help="and the sample foo activity server")
    sub.add_parser("stop", help="stop the API server and the actor system; no process is left behind")
    status = sub.add_parser("status", help="is it running, its actors, its Redis, its jobs by state")
    status.add_argument("--json", action="store_true")

    processes = sub.add_parser("processes", help="list the catalog; `processes reload` rereads its file")
    processes.add_argument("action", nargs="?", choices=["reload"])
    processes.add_argument("--json", action="store_true")
    jobs = sub.add_parser("jobs", help="list a process's jobs, newest first")
    jobs.add_argument("process")
    jobs.add_argument("--key")
    jobs.add_argument("--status", choices=keys.JOB_STATES)
    jobs.add_argument("--limit", type=_page_size, default=api.PAGE)
    jobs.add_argument("--cursor", help="continue a listing where the previous page ended")
    jobs.add_argument("--json", action="store_true")
    job = sub.add_parser("job", help="show a job and its task tree")
    job.add_argument("job", help="the job's URL or id")
    job.add_argument("--watch", action="store_true", help="follow it until it ends")
    job.add_argument("--json", action="store_true")
    cancel = sub.add_parser("cancel", help="cancel a job: no new task starts, it ends cancelled")
    cancel.add_argument("job", help="the job's URL or id")
    cancel.add_argument("--json", action="store_true")
    start_job = sub.add_parser("start-job", help="start a job")
    start_job.add_argument("process")
    start_job.add_argument("--key", required=True)
    data = start_job.add_mutually_exclusive_group()
    data.add_argument("--data", default="", help="the job's data, a string")
    data.add_argument("--data-json", metavar="JSON", help="the job's data, any JSON value")
    start_job.add_argument("--requestor", help="default: your user name")
    start_job.add_argument("--idempotency-key", help="a retry with the same key gets the same job (default: a new key, "
                                "named in the error if Redis does not answer in time)")
    start_job.add_argument("--wait", action="store_true", help="show its progress until it ends")
    start_job.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    commands = {"run": cmd_run, "start": cmd_start, "stop": cmd_stop, "status": cmd_status,
                "processes": cli_jobs.cmd_processes, "jobs": cli_jobs.cmd_jobs, "job": cli_jobs.cmd_job,
                "cancel": cli_jobs.cmd_cancel, "start-job": cli_jobs.cmd_start_job}
    try:
        # The commands that start an engine use the settings as given; the others first look
        # for the record of the engine running from the data folder.
        config = from_env(recorded=args.command not in ("run", "start"))
        if args.command in ("run", "start"):
            config = _startup_settings(config, args)
        return commands[args.command](config, args)
    except (ConfigError, Fail) as e:
        _say(f"error: {e}")
        return 2
    except cli_jobs.Refused as e:
        _say(f"error: {e}")
        return e.code
    except EngineUnavailable as e:
        _say(f"error: the engine does not answer ({e}); is it running? (`cameron start`)")
        return 3
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # `cameron jobs foo | head`: the reader had enough


def _startup_settings(config: Config, args) -> Config:
    """Settings the processes about to start must share, made explicit in the environment
    they inherit (the catalog's ${CAMERON_FOO_PORT}, syslog switched off)."""
    if getattr(args, "foo_port", None):
        config = config.with_(foo_port=args.foo_port)
    os.environ["CAMERON_FOO_PORT"] = str(config.foo_port)
    catalog.load(config.processes_file, default_allow=config.allow)  # a bad catalog stops start-up here, clearly
    problem = logs.check_syslog(config.log_syslog)
    if problem:
        # Production settings name /dev/log, which containers and some hosts lack.
        _say(f"warning: {problem}; logging without syslog")
        os.environ["CAMERON_LOG_SYSLOG"] = ""
        config = config.with_(log_syslog="")
    return config


def _page_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= api.MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {api.MAX_PAGE}")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
