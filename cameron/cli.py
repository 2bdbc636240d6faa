"""The `cameron` command: run the whole engine in the foreground, or start/stop/inspect its actors."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import redis

from cameron import actorsys, catalog, keys, store
from cameron import messages as m
from cameron.config import ROOT, Config, ConfigError, from_env
from cameron.redis_server import EmbeddedRedis


class Fail(Exception):
    """A one-line error for the user; the command exits non-zero without a traceback."""


def _say(text):
    print(f"cameron: {text}", file=sys.stderr, flush=True)


def _check_redis(url: str):
    try:
        store.connect(url).ping()
    except redis.RedisError as e:
        raise Fail(f"cannot reach Redis at {url}: {e}") from None


def _start_actors(config: Config, log_file=None):
    """Clear what an unclean stop left behind, then boot the actor system."""
    orphans = actorsys.orphans(config)
    if orphans:
        _say(f"stopping {len(orphans)} actor processes left by an engine that died")
        actorsys.kill_and_wait(orphans, config)
    try:
        actorsys.start(config, log_file=log_file)
    except RuntimeError as e:
        raise Fail(str(e)) from None


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


def _stop_proc(proc, timeout=15.0):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cmd_run(config: Config, args) -> int:
    """Redis (embedded unless CAMERON_REDIS_URL), actors, the foo server and gunicorn, until a signal."""
    stop_requested = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_requested.append(signum))
    embedded = foo = web = None
    actors_up = False
    try:
        if config.redis_url:
            _check_redis(config.redis_url)
            _say(f"using Redis at {config.redis_url}")
        else:
            embedded = EmbeddedRedis(config.data_dir).start()
            _say(f"embedded Redis at {embedded.url} (data in {embedded.dir})")
        if not args.no_foo:
            foo = _spawn([sys.executable, "-m", "cameron.activity_server", "--port", str(args.foo_port)])
            _wait_http(f"http://127.0.0.1:{args.foo_port}/calls", foo, 15, "the foo activity server")
        _start_actors(config)
        actors_up = True
        _say(f"actor system up (admin port {config.admin_port}, loopback)")
        web = _spawn([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"),
                      "cameron.wsgi:app"])
        base = f"http://{'127.0.0.1' if config.bind in ('0.0.0.0', '') else config.bind}:{config.port}"
        _wait_http(f"{base}/api", web, 30, "gunicorn")
        _say(f"API on {base}/api  (Ctrl-C stops everything)")
        print(f"try: curl -si -X POST {base}/api/process/foo/start -H 'Content-Type: application/json' "
              "-d '{\"key\":\"(id,007)\",\"data\":\"be careful with that data\",\"requestor\":\"bob_the_thin\"}'",
              flush=True)
        while not stop_requested:
            for proc, what in ((web, "gunicorn"), (foo, "the foo server"), (embedded and embedded.proc, "Redis")):
                if proc is not None and proc.poll() is not None:
                    raise Fail(f"{what} exited unexpectedly (code {proc.returncode}); stopping")
            time.sleep(0.2)
        _say("stopping")
        return 0
    finally:
        _stop_proc(web)
        if actors_up:
            actorsys.stop(config)
        _stop_proc(foo)
        if embedded:
            embedded.stop()


def cmd_start(config: Config, args) -> int:
    """Boot the actor system in the background (Redis must be reachable)."""
    _check_redis(config.effective_redis_url)
    log_file = os.path.join(config.data_dir, "log", "actors.log")
    _start_actors(config, log_file)
    print(f"Cameron actor system started on admin port {config.admin_port} (log: {log_file})")
    return 0


def cmd_stop(config: Config, args) -> int:
    if not actorsys.stop(config):
        print("Cameron actor system was not running")
        return 1
    print("Cameron actor system stopped")
    return 0


def cmd_status(config: Config, args) -> int:
    """Exit 0 when every actor answers, 3 when the system is not running (like `service status`)."""
    report = {"admin_port": config.admin_port, "redis": config.effective_redis_url,
              "running": False, "actors": []}
    try:
        asys = actorsys.join(config)
    except actorsys.EngineDown:
        asys = None
    if asys is not None:
        with asys.private() as ctx:
            sup = actorsys.supervisor(asys)
            peers = ctx.ask(sup, m.WhereIs(config), 5)
            if isinstance(peers, m.Peers):
                report["running"] = True
                for role, addr in [("supervisor", sup), ("catalog", peers.catalog), ("job_data", peers.job_data),
                                   ("scheduler", peers.scheduler)] + \
                                  [(f"runner:{i}", a) for i, a in enumerate(peers.runners)]:
                    pong = ctx.ask(addr, m.Ping(), 5)
                    report["actors"].append({**(vars(pong) if isinstance(pong, m.Pong) else {}),
                                             "role": role, "address": str(addr),
                                             "alive": isinstance(pong, m.Pong)})
    try:
        client = store.connect(config.effective_redis_url)
        report["unfinished_jobs"] = client.scard(keys.engine_jobs(config.engine))
    except redis.RedisError as e:
        report["redis_error"] = str(e)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"actor system: {'running' if report['running'] else 'not running'} "
              f"(admin 127.0.0.1:{config.admin_port})")
        for a in report["actors"]:
            print(f"  {a['role']:<10} pid {a.get('pid', '-'):<8} handled {a.get('handled', '-'):<8} "
                  f"{json.dumps(a.get('status', {}))}")
        print(f"redis: {report['redis']}"
              + (f" ({report['unfinished_jobs']} unfinished jobs)" if "unfinished_jobs" in report
                 else f" (unreachable: {report.get('redis_error')})"))
    if not report["running"]:
        return 3
    return 0 if all(a["alive"] for a in report["actors"]) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cameron", description="Cameron workflow engine")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run everything in the foreground (what ./run.sh does)")
    run.add_argument("--no-foo", action="store_true", help="do not serve the sample foo workflow")
    run.add_argument("--foo-port", type=int, default=int(os.environ.get("CAMERON_FOO_PORT", 9292)))
    sub.add_parser("start", help="start the actor system in the background")
    sub.add_parser("stop", help="stop the actor system; no process is left behind")
    status = sub.add_parser("status", help="is it running, and what are its actors doing")
    status.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = from_env()
        catalog.load(config.processes_file)  # a bad catalog stops start-up here, clearly
        return {"run": cmd_run, "start": cmd_start, "stop": cmd_stop,
                "status": cmd_status}[args.command](config, args)
    except (ConfigError, Fail) as e:
        _say(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
