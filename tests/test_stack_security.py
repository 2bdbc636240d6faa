"""Closed doors, through the real stack: where an activity may send the engine, the limits of
one job, names and URLs that would bend a request, signed calls, https answers that drip."""

import json
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
import requests

from cameron import actorsys, procfs
from cameron.activity_server import ActivityServer
from conftest import another_api_server, descendants, free_port, start_engine, stop_engine, wait_until

pytestmark = pytest.mark.stack

KEY = "test-signing-key"


class Decoy:
    """A listening socket nobody accepts on: whatever connects waits in its backlog, counted."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1


class DripServer:
    """An activity (https with a certificate, else plain http) that sends its headers at once,
    then its body a byte every 0.2 s."""

    def __init__(self, cert=None, key=None):
        context = None
        if cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context, self.stop = context, threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        try:
            with self.context.wrap_socket(conn, server_side=True) if self.context else conn as s:
                s.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += s.recv(4096)
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n")
                for _ in range(300):  # 60 s at most, unless the engine hangs up first
                    if self.stop.wait(0.2):
                        return
                    s.sendall(b" ")
        except OSError:
            pass  # the engine gave up on the answer: what this test wants

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.fixture(scope="module")
def tls_files(short_tmp):
    cert, key = short_tmp / "tls-cert.pem", short_tmp / "tls-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture(scope="module")
def sec(short_tmp, redis_server, tls_files):
    """An engine with a signing key, small per-job limits, and hostile processes; its lab checks
    the signature of every call."""
    lab = ActivityServer("127.0.0.1", 0, signing_key=KEY).start_in_thread()
    other = ActivityServer("127.0.0.1", 0, signing_key="another key").start_in_thread()
    drip, plain_drip, wild = DripServer(*tls_files), DripServer(), Decoy()

    def catalog(api_port):
        host = lab.url.removeprefix("http://")
        return f"""
[processes.hostile]     # every port of loopback, by a pattern
start = "{lab.url}/lab/nextfrom"
allow = ["127.0.0.0/8:*"]
read_timeout = 1
max_attempts = 1

[processes.closed]      # no list: its start URL's host and port alone
start = "{lab.url}/lab/nextfrom"

[processes.wild]        # any host on one port, by a pattern
start = "{lab.url}/lab/nextfrom"
allow = ["{host}", "*:{wild.port}"]
read_timeout = 1
max_attempts = 1

[processes.selfcall]    # the API's port, listed exactly
start = "{lab.url}/lab/nextfrom"
allow = ["{host}", "127.0.0.1:{api_port}"]

[processes.echo]
start = "{lab.url}/lab/echo"

[processes.many]
start = "{lab.url}/lab/spread/15/echo"

[processes.heavy]
start = "{lab.url}/lab/spread/3/big/60000"

[processes.forged]
start = "{other.url}/lab/echo"

[processes.drip]
start = "https://localhost:{drip.port}/drip"
read_timeout = 1
max_attempts = 1

[processes.drip_http]
start = "http://127.0.0.1:{plain_drip.port}/drip"
read_timeout = 1
max_attempts = 1
"""
    engine, web = start_engine(short_tmp / "sec", redis_server.url, lab, catalog=catalog,
                               CAMERON_SIGNING_KEY=KEY, CAMERON_MAX_TASKS="12",
                               CAMERON_MAX_JOB_BYTES="150000", SSL_CERT_FILE=tls_files[0])
    engine.lab, engine.web, engine.wild = lab, web, wild
    yield engine
    stop_engine(engine, web)
    for server in (lab, other):
        server.stop()
    for server in (drip, plain_drip):
        server.close()
    wild.sock.close()


def run(engine, process, definitions=None, timeout=30) -> dict:
    doc = engine.run_job(process, data=json.dumps(definitions or []), timeout=timeout)
    return {t["name"]: t for t in doc["tasks"]} | {"": doc}


def echo_jobs(engine) -> int:
    resp = engine.http.get(f"{engine.base_url}/api/process/echo/job?limit=500", timeout=10)
    return len(resp.json()["jobs"])


def connections_to(ports) -> set:
    """The TCP connections (client, server) to these ports that this machine holds, seen from
    either end, whatever their state but listening: one closed stays in TIME_WAIT for 60 s."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, remote, state = line.split()[1:4]
                if state == "0A":  # listening
                    continue
                if int(remote.rsplit(":", 1)[1], 16) in ports:
                    found.add((local, remote))
                if int(local.rsplit(":", 1)[1], 16) in ports:
                    found.add((remote, local))
    return found


def test_an_activity_cannot_send_the_engine_to_its_own_ports(sec):
    # Given a process whose allow list is every port of loopback, by a pattern, and the ports
    # of the admin, of an actor and of a gunicorn worker's Thespian endpoint (it opens one to
    # ask the actors for the catalog)
    admin = sec.config.admin_port
    actor_port = next(port for _, _, port in procfs.listening(actorsys.system_pids(sec.config))
                      if port != admin)
    assert sec.http.get(f"{sec.base_url}/api/process", timeout=10).ok
    worker_port = next(port for _, _, port in procfs.listening(descendants(sec.web.pid))
                       if port != sec.config.port)
    echo_before = echo_jobs(sec)
    # (the actors' own connections to these ports stay open: a new one would be the engine's call)
    before = connections_to({admin, actor_port, worker_port})
    # When its activity names them and the API's own start URL
    tasks = run(sec, "hostile", [
        {"name": "admin", "url": f"http://127.0.0.1:{admin}/"},
        {"name": "actor", "url": f"http://localhost:{actor_port}/"},
        {"name": "worker", "url": f"http://127.0.0.1:{worker_port}/"},
        {"name": "api", "url": f"{sec.base_url}/api/process/echo/start"},
        {"name": "fine", "url": f"{sec.lab.url}/lab/echo"},
    ])
    # Expect each of them refused as the engine's own, the lab's child called
    for name in ("admin", "actor", "worker", "api"):
        assert tasks[name]["status"]["current"] == "error", name
        assert "is one of the engine's own ports" in tasks[name]["data"]["error"], tasks[name]
    assert tasks["fine"]["status"]["current"] == "done"
    # with no connection made to them, and no job started through the API behind the client's back
    assert connections_to({admin, actor_port, worker_port}) - before == set()
    assert echo_jobs(sec) == echo_before


def test_an_engine_port_listed_exactly_is_called(sec):
    # Given a process whose list names the API's port exactly
    echo_before = echo_jobs(sec)
    # When its activity names the API's start URL (our body is a valid start body)
    tasks = run(sec, "selfcall", [{"name": "api", "url": f"{sec.base_url}/api/process/echo/start"}])
    # Expect the call made: a job started, and the task in error (201 is not an activity's answer)
    assert "HTTP 201" in tasks["api"]["data"]["error"]
    assert echo_jobs(sec) == echo_before + 1


def test_activities_outside_the_allow_list_are_never_connected_to(sec):
    first, second, allowed = Decoy(), Decoy(), Decoy()
    try:
        # When a process with no list names other ports, by address and by a name of 127.0.0.1
        tasks = run(sec, "closed", [
            {"name": "other_port", "url": f"http://127.0.0.1:{first.port}/x"},
            {"name": "by_name", "url": f"http://localhost:{second.port}/x"},
            {"name": "same_server", "url": f"{sec.lab.url}/lab/echo"},
        ])
        # Expect both refused naming the process, and not one connection made
        for name in ("other_port", "by_name"):
            assert "is not in the allow list of process closed" in tasks[name]["data"]["error"], tasks[name]
            assert tasks[name]["attempts"] == 1, tasks[name]  # not retried (max_attempts is 3)
        assert tasks["same_server"]["status"]["current"] == "done"
        assert first.connections() == 0 and second.connections() == 0
        # while a process whose list covers such a port does connect (the decoy counts it)
        tasks = run(sec, "hostile", [{"name": "let_in", "url": f"http://127.0.0.1:{allowed.port}/x"}])
        assert "read timeout" in tasks["let_in"]["data"]["error"]
        assert allowed.connections() == 1
    finally:
        for decoy in (first, second, allowed):
            decoy.sock.close()


def test_a_name_that_resolves_to_this_machine_is_refused_by_a_pattern(sec):
    # Given a process that allows any host on one port ("*:<port>"), a socket listening there
    # When its activity names that port by a name that resolves to a loopback address
    tasks = run(sec, "wild", [{"name": "by_name", "url": f"http://localhost:{sec.wild.port}/x"}])
    # Expect the call refused for the address the name resolved to, and not one connection
    error = tasks["by_name"]["data"]["error"]
    assert f"localhost:{sec.wild.port} (" in error and "not in the allow list of process wild" in error
    assert sec.wild.connections() == 0


@pytest.mark.parametrize("definition, problem", [
    ({"name": "a\r\nX-Evil: 1", "url": "{lab}/lab/echo"}, "'name' holds control characters"),
    ({"name": "a" * 257, "url": "{lab}/lab/echo"}, "'name' is longer than 256 characters"),
    ({"name": "a", "url": "{lab}/lab/echo HTTP/1.1"}, "'url' holds whitespace or control characters"),
    ({"name": "a", "url": "http://user:secret@{host}/lab/echo"}, "'url' holds credentials"),
])
def test_names_and_urls_that_would_bend_a_request_end_the_task_in_error(sec, definition, problem):
    lab = sec.lab.url
    definition = {k: v.format(lab=lab, host=lab.removeprefix("http://")) for k, v in definition.items()}
    calls_before = sec.lab.calls().get("/lab/echo", 0)
    tasks = run(sec, "closed", [definition])
    assert tasks["start"]["status"]["current"] == "error"
    assert problem in tasks["start"]["data"]["error"]
    assert sec.lab.calls().get("/lab/echo", 0) == calls_before  # nothing was called


def test_a_path_beyond_ascii_is_sent_encoded_and_a_name_in_utf_8(sec):
    tasks = run(sec, "closed", [{"name": "ümlaut", "url": f"{sec.lab.url}/lab/echo/café"}])
    assert tasks["ümlaut"]["status"]["current"] == "done"
    [call] = [c for c in sec.lab.log(tasks[""]["uuid"]) if c["path"] != "/lab/nextfrom"]
    assert call["path"] == "/lab/echo/caf%C3%A9"
    # http.server reads header values as Latin-1: the bytes sent were UTF-8's
    assert call["task"].encode("latin-1").decode() == "1:ümlaut"


def test_a_job_is_capped_in_tasks_and_in_stored_answers(sec):
    # 1 + 15 tasks would pass max_tasks = 12: the answer that would is refused, the job ends
    tasks = run(sec, "many")
    assert list(tasks) == ["start", ""]
    assert "past its limit of 12 tasks" in tasks["start"]["data"]["error"]
    assert tasks[""]["status"]["current"] == "done"
    # three answers of 60 KB pass max_job_bytes = 150,000 at the third
    tasks = run(sec, "heavy")
    states = sorted(t["status"]["current"] for name, t in tasks.items() if name.startswith("child"))
    assert states == ["done", "done", "error"]
    [error] = [t["data"]["error"] for name, t in tasks.items() if name.startswith("child")
               and t["status"]["current"] == "error"]
    assert "past its limit of 150000 bytes of stored answers" in error


def test_calls_are_signed_and_the_sample_server_checks_them(sec):
    # The lab (the sample server's class) refuses calls without a valid signature: jobs run
    # there, so the engine signs; a server holding another key refuses them.
    assert run(sec, "echo")["start"]["status"]["current"] == "done"
    error = run(sec, "forged")["start"]["data"]["error"]
    assert "HTTP 401" in error
    resp = requests.post(f"{sec.lab.url}/lab/echo", json={"data": 1}, timeout=5)
    assert resp.status_code == 401 and resp.json() == {"error": "no X-Cameron-Signature"}


@pytest.mark.parametrize("process", ["drip", "drip_http"])
def test_an_answer_that_drips_is_cut_at_the_read_timeout_on_https_and_plain_http(sec, process):
    started = time.monotonic()
    tasks = run(sec, process, timeout=20)
    assert tasks["start"]["status"]["current"] == "error"
    assert "no answer within 1 s (read timeout)" in tasks["start"]["data"]["error"]
    assert time.monotonic() - started < 15  # it would drip for a minute


def test_a_bind_beyond_loopback_logs_a_warning_naming_the_risk(sec, tmp_path):
    # A second API server on the engine, and the sample server, told to listen on 0.0.0.0
    # (each stopped as soon as it has said so)
    with another_api_server(sec, tmp_path, CAMERON_BIND="0.0.0.0") as api:
        log = api.log.read_text()
    assert "the API listens on 0.0.0.0, not loopback: anyone who can reach this host on it can " \
           "start, read and cancel jobs unless API tokens are set" in log, log
    sample_log = tmp_path / "sample.log"
    with open(sample_log, "wb") as out:
        sample = subprocess.Popen([sys.executable, "-m", "cameron.activity_server", "--host", "0.0.0.0",
                                   "--port", str(free_port())], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_until(lambda: "not loopback" in sample_log.read_text() or sample.poll() is not None, 15,
                   "the sample server's warning")
    finally:
        sample.terminate()
        sample.wait(10)
    assert "the sample server listens on 0.0.0.0, not loopback: anyone who can reach this host on " \
           "it can call its activities" in sample_log.read_text()
