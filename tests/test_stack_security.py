"""Closed doors, through the real stack: where an activity may send the engine, the limits of
one job, names and URLs that would bend a request, signed calls, https answers that drip."""

import json
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

from cameron import actorsys, procfs
from cameron.activity_server import ActivityServer
from conftest import start_engine, stop_engine

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
    """An https activity that sends its headers at once, then its body a byte every 0.2 s."""

    def __init__(self, cert, key):
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
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(4096)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n")
                for _ in range(300):  # 60 s at most, unless the engine hangs up first
                    if self.stop.wait(0.2):
                        return
                    tls.sendall(b" ")
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
    drip = DripServer(*tls_files)

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
"""
    engine, web = start_engine(short_tmp / "sec", redis_server.url, lab, catalog=catalog,
                               CAMERON_SIGNING_KEY=KEY, CAMERON_MAX_TASKS="12",
                               CAMERON_MAX_JOB_BYTES="150000", SSL_CERT_FILE=tls_files[0])
    engine.lab = lab
    yield engine
    stop_engine(engine, web)
    for server in (lab, other, drip):
        server.close() if server is drip else server.stop()


def run(engine, process, definitions=None, timeout=30) -> dict:
    doc = engine.run_job(process, data=json.dumps(definitions or []), timeout=timeout)
    return {t["name"]: t for t in doc["tasks"]} | {"": doc}


def echo_jobs(engine) -> int:
    resp = engine.http.get(f"{engine.base_url}/api/process/echo/job?limit=500", timeout=10)
    return len(resp.json()["jobs"])


def test_an_activity_cannot_send_the_engine_to_its_own_ports(sec):
    # Given a process whose allow list is every port of loopback, by a pattern
    admin = sec.config.admin_port
    actor_port = next(port for _, _, port in procfs.listening(actorsys.system_pids(sec.config))
                      if port != admin)
    echo_before = echo_jobs(sec)
    # When its activity names the admin port, an actor's port and the API's own start URL
    tasks = run(sec, "hostile", [
        {"name": "admin", "url": f"http://127.0.0.1:{admin}/"},
        {"name": "actor", "url": f"http://localhost:{actor_port}/"},
        {"name": "api", "url": f"{sec.base_url}/api/process/echo/start"},
        {"name": "fine", "url": f"{sec.lab.url}/lab/echo"},
    ])
    # Expect each of them refused as the engine's own, the lab's child called
    for name in ("admin", "actor", "api"):
        assert tasks[name]["status"]["current"] == "error", name
        assert "is one of the engine's own ports" in tasks[name]["data"]["error"], tasks[name]
    assert tasks["fine"]["status"]["current"] == "done"
    # and no job started through the API behind the client's back
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
        assert tasks["same_server"]["status"]["current"] == "done"
        assert first.connections() == 0 and second.connections() == 0
        # while a process whose list covers such a port does connect (the decoy counts it)
        tasks = run(sec, "hostile", [{"name": "let_in", "url": f"http://127.0.0.1:{allowed.port}/x"}])
        assert "read timeout" in tasks["let_in"]["data"]["error"]
        assert allowed.connections() == 1
    finally:
        for decoy in (first, second, allowed):
            decoy.sock.close()


@pytest.mark.parametrize("definition, problem", [
    ({"name": "a\r\nX-Evil: 1", "url": "{lab}/lab/echo"}, "'name' holds control characters"),
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


def test_an_https_answer_that_drips_is_cut_at_the_read_timeout(sec):
    started = time.monotonic()
    tasks = run(sec, "drip", timeout=20)
    assert "no answer within 1 s (read timeout)" in tasks["start"]["data"]["error"]
    assert time.monotonic() - started < 15  # it would drip for a minute
