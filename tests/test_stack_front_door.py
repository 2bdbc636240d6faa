"""The API against hostile and careless clients, through gunicorn as ./run.sh starts it:
malformed bodies, limits, the Host header, slow clients, tokens."""

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import ROOT, another_api_server, free_port, stop_web, wait_until

from cameron import actorsys

pytestmark = pytest.mark.stack

TOKENS = {"alice": "alice-s3cret-token", "bob": "bob-s3cret-token"}
UNNAMED = "unnamed-s3cret-token"
PUBLIC = "https://cameron.example/engine"


def start_url(engine, process="foo"):
    return f"{engine.base_url}/api/process/{process}/start"


def post_raw(engine, body: bytes, process="foo", headers=None):
    return engine.http.post(start_url(engine, process), data=body, timeout=15,
                            headers={"Content-Type": "application/json", **(headers or {})})


def json_error(resp, status) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp.json()["description"]


# --- malformed bodies and parameters: 4xx JSON, never 5xx ---------------------------------

def test_json_nested_a_thousand_deep_is_a_400(engine):
    body = b'{"key": "k", "data": "d", "requestor": "r", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert "nests deeper than 64" in json_error(post_raw(engine, body), 400)


def test_json_nested_past_the_depth_limit_is_a_400_even_when_python_could_parse_it(engine):
    body = b'{"key": "k", "data": "d", "requestor": "r", "x": ' + b"[" * 65 + b"]" * 65 + b"}"
    assert "nests deeper than 64" in json_error(post_raw(engine, body), 400)


@pytest.mark.parametrize("field", ["key", "data", "requestor"])
def test_a_lone_surrogate_in_a_field_is_a_400_naming_it(engine, field):
    fields = {"key": "k", "data": "d", "requestor": "r"}
    body = json.dumps(fields).replace(f'"{fields[field]}"', '"a\\ud800b"', 1).encode()
    assert f"'{field}' is not valid Unicode" in json_error(post_raw(engine, body), 400)


@pytest.mark.parametrize("value", ["NaN", "[1, Infinity]", '{"x": -Infinity}', "1e999"])
def test_numbers_json_has_not_are_a_400_not_stored(engine, value):
    body = b'{"key": "nan", "requestor": "r", "data": ' + value.encode() + b"}"
    assert "not valid JSON" in json_error(post_raw(engine, body), 400)
    assert engine.http.get(f"{engine.base_url}/api/process/foo/key/nan").status_code == 404


def test_a_lone_surrogate_deep_inside_data_is_a_400(engine):
    body = b'{"key": "k", "requestor": "r", "data": {"a": [1, "x\\ud800"]}}'
    assert "'data' is not valid Unicode" in json_error(post_raw(engine, body), 400)


def test_a_body_that_is_not_utf8_is_a_400(engine):
    assert "not valid JSON" in json_error(post_raw(engine, b'{"key": "\xff\xfe"}'), 400)


@pytest.mark.parametrize("cursor", ["WzAsICJ4Il0", "W05hTiwgImNhbWVyb24ifQ", "W05hTiwgImNhbWVyb246In0",
                                    "WzFlOTk5LCAiY2FtZXJvbjoifQ", "W0luZmluaXR5LCAiY2FtZXJvbjoifQ", "%00"])
def test_a_cursor_the_server_did_not_hand_out_is_a_400_not_a_503(engine, cursor):
    # NaN, 1e999 and Infinity scores among them: Redis would refuse the range.
    resp = engine.http.get(f"{engine.base_url}/api/process/foo/job?cursor={cursor}")
    assert "cursor" in json_error(resp, 400)


@pytest.mark.parametrize("limit", ["%C2%B2", "%D9%A3", "1e2", "-1", "0", "501", "9" * 40])
def test_a_limit_that_is_not_1_to_500_in_ascii_digits_is_a_400(engine, limit):
    resp = engine.http.get(f"{engine.base_url}/api/process/foo/job?limit={limit}")
    assert "'limit'" in json_error(resp, 400)


def test_a_chunked_body_is_read(engine):
    body = json.dumps({"key": "chunked", "data": "d", "requestor": "r"}).encode()
    resp = post_raw(engine, iter([body[:10], body[10:]]))  # an iterator: requests sends it chunked
    assert resp.status_code == 201, resp.text
    assert resp.json()["key"] == "chunked"


def test_a_chunked_body_over_the_body_limit_is_a_413(engine):
    chunk = b"x" * 65536
    resp = post_raw(engine, iter([b'{"key": "'] + [chunk] * 17 + [b'"}']))
    assert "max_body_bytes" in json_error(resp, 413)


def test_a_body_over_the_body_limit_is_a_413(engine):
    body = json.dumps({"key": "k", "data": "x" * engine.config.max_body_bytes, "requestor": "r"})
    assert "max_body_bytes" in json_error(post_raw(engine, body.encode()), 413)


def test_answered_requests_keep_their_connection(engine):
    conn = http.client.HTTPConnection("127.0.0.1", int(engine.env["CAMERON_PORT"]), timeout=10)
    body = json.dumps({"key": "kept-alive", "data": "d", "requestor": "r"})
    conn.request("POST", "/api/process/foo/start", body, {"Content-Type": "application/json"})
    first = conn.getresponse()
    assert first.status == 201 and first.read()
    sock = conn.sock
    conn.request("GET", "/api/process/foo/job?limit=1")
    second = conn.getresponse()
    assert second.status == 200 and second.read() and conn.sock is sock  # the same connection
    conn.close()


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(engine):
    with socket.create_connection(("127.0.0.1", int(engine.env["CAMERON_PORT"])), timeout=10) as s:
        s.sendall(b"POST /api/process/foo/start HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 100000000\r\n\r\n")
        began = time.monotonic()
        answer = s.makefile("rb").read()  # answered, and closed, without waiting for 100 MB
    assert time.monotonic() - began < 5
    assert answer.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("field, setting", [("key", "max_key_bytes"), ("data", "max_data_bytes"),
                                            ("requestor", "max_requestor_bytes")])
def test_a_field_over_its_byte_limit_is_a_400_naming_the_setting(engine, field, setting):
    limit = getattr(engine.config, setting)
    fields = {"key": "k", "data": "d", "requestor": "r", field: "é" * (limit // 2 + 1)}  # 2 bytes each
    resp = post_raw(engine, json.dumps(fields, ensure_ascii=False).encode())
    assert f"'{field}' is over {limit} bytes ({setting})" in json_error(resp, 400)


def test_a_key_at_the_limit_keeps_its_job_readable_and_cancellable(engine):
    # "/" URL-encodes to 3 characters: the longest path a key of max_key_bytes can make.
    key = "/" * engine.config.max_key_bytes
    resp = engine.start_job("slow", key=key)
    assert resp.status_code == 201, resp.text
    job = engine.base_url + resp.headers["Location"][len(engine.config.api_url):]
    assert engine.http.get(job).json()["key"] == key
    assert engine.http.delete(job).status_code in (202, 409)
    listing = engine.http.get(job.rsplit("/", 1)[0])
    assert listing.status_code == 200 and listing.json()["key"] == key


def raw_answer(port: int, request: bytes) -> tuple[bytes, dict]:
    """Send a request as bytes; the answer's status line and JSON body, read to the close:
    the read ending at all says the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        head, _, body = s.makefile("rb").read().partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return head.split(b"\r\n", 1)[0], json.loads(body)


def test_a_request_line_too_long_gets_a_json_414_and_the_connection_closes(engine):
    resp = engine.http.get(f"{engine.base_url}/api/process/foo/key/{'k' * 9000}/job")
    assert json_error(resp, 414)
    status, _ = raw_answer(int(engine.env["CAMERON_PORT"]),
                           b"GET /api/" + b"k" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 414")


@pytest.mark.parametrize("header", [b"Bad Header", b"X-Nul: a\x00b", b"Content-Length: ten"])
def test_a_malformed_header_gets_a_json_400_and_the_connection_closes(engine, header):
    status, body = raw_answer(int(engine.env["CAMERON_PORT"]),
                              b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400") and body["title"]


def test_links_come_from_the_configured_address_not_the_host_header(engine):
    resp = engine.http.post(start_url(engine), json={"key": "host", "data": "d", "requestor": "r"},
                            headers={"Host": "evil.example"})
    assert resp.status_code == 201
    assert resp.headers["Location"].startswith(engine.config.api_url + "/api/process/foo/key/host/job/")
    assert resp.json()["links"]["self"] == resp.headers["Location"]
    listing = engine.http.get(f"{engine.base_url}/api/process/foo/job?limit=1",
                              headers={"Host": "evil.example"}).json()
    assert "evil" not in json.dumps(listing)


# --- slow clients ---------------------------------------------------------------------

def _trickle(engine, count: int) -> list[socket.socket]:
    """`count` connections to the API, half stopped inside their headers, half inside a body."""
    port = int(engine.env["CAMERON_PORT"])
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(b"POST /api/process/foo/start HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        else:
            s.sendall(b"POST /api/process/foo/start HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        socks.append(s)
    return socks


def test_500_trickling_clients_do_not_starve_the_others(engine):
    socks = _trickle(engine, 500)
    try:
        latencies = []
        end = time.monotonic() + 4
        while time.monotonic() < end:
            for s in socks:  # one more byte each: they stay alive, never finish
                s.send(b"a")
            began = time.monotonic()
            started = engine.start_job("foo", key="among-slow-clients")
            assert started.status_code == 201, started.text
            latencies.append(time.monotonic() - began)
            for url in (started.headers["Location"], f"{engine.base_url}/api/process"):
                began = time.monotonic()
                assert engine.http.get(url, timeout=5).status_code == 200
                latencies.append(time.monotonic() - began)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        print(f"{len(latencies)} requests among 500 slow clients: p99 {p99 * 1000:.0f} ms")
        # Starved, a request waits for a slow client's deadline (seconds) or for ever.
        assert len(latencies) >= 30 and p99 < 1.0
    finally:
        for s in socks:
            s.close()


def test_concurrent_requests_that_ask_the_actors_are_all_answered(engine):
    # Each is a Thespian ask from a greenlet of the same worker process, at once.
    location = engine.start_job("foo", key="concurrent-reads").headers["Location"]
    paths = [location, f"{engine.base_url}/api/process/foo/job?limit=5",
             f"{engine.base_url}/api/job/{location.rsplit('/', 1)[1]}", f"{engine.base_url}/api/process"]

    def read(i):
        with requests.Session() as http:
            return [http.get(paths[(i + n) % len(paths)], timeout=15).status_code for n in range(5)]
    with ThreadPoolExecutor(40) as pool:
        codes = [c for answers in pool.map(read, range(40)) for c in answers]
    assert codes == [200] * 200


# --- a gunicorn with tokens, a public address and short deadlines ------------------------

@pytest.fixture(scope="module")
def guarded(engine, tmp_path_factory):
    with another_api_server(
            engine, tmp_path_factory.mktemp("guarded"), CAMERON_PUBLIC_URL=PUBLIC,
            CAMERON_API_TOKENS=",".join([f"{n}:{t}" for n, t in TOKENS.items()] + [UNNAMED]),
            CAMERON_WEB_HEADER_TIMEOUT="1", CAMERON_WEB_BODY_TIMEOUT="1",
            CAMERON_MAX_KEY_BYTES="2048") as server:
        yield server
        stop_web(server)


def test_a_stop_does_not_wait_for_idle_kept_alive_connections(engine, tmp_path):
    with another_api_server(engine, tmp_path, CAMERON_WEB_HEADER_TIMEOUT="30") as server:
        idle = requests.Session()
        assert idle.get(f"{server.base_url}/api", timeout=10).status_code == 200  # stays open
        assert stop_web(server) < 5


def test_a_stop_while_the_workers_boot_takes_no_graceful_timeout(engine, tmp_path):
    # Between its fork and its own signal handlers, a worker once swallowed the SIGTERM and
    # served on until the master killed it 10 s later (one stop in six).
    took = []
    for moment in range(16):
        env = {**engine.env, "CAMERON_PORT": str(free_port())}
        with open(tmp_path / "web.log", "ab") as log:
            web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"),
                                    "cameron.wsgi:app"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_until(lambda: len(actorsys.children(web.pid)) >= 2, 20, "gunicorn's workers", interval=0.002)
            time.sleep(0.004 * (moment % 8))  # a moment of their boot
            began = time.monotonic()
            web.send_signal(signal.SIGTERM)
            web.wait(30)
            took.append(round(time.monotonic() - began, 2))
        finally:
            if web.poll() is None:
                web.kill()
                web.wait()
    assert max(took) < 5, took


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/api", "/api/process", "/api/openapi.json", "/api/process/foo/job", "/metrics",
                                  "/api/job/0123456789abcdef0123456789abcdef", "/no/such/path"])
@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": "Basic YWxpY2U6eA=="},
                                     {"Authorization": f"Bearer {TOKENS['alice']}x"},
                                     {"Authorization": "Bearer"}])
def test_without_a_valid_token_every_route_is_a_401(guarded, path, headers):
    resp = requests.get(guarded.base_url + path, headers=headers, timeout=10)
    assert json_error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_start_without_a_token_is_refused_and_stores_nothing(guarded):
    before = guarded.redis.zcard("cameron:process:foo:key:no-token:jobs")
    resp = requests.post(start_url(guarded), json={"key": "no-token", "data": "d", "requestor": "r"}, timeout=10)
    assert json_error(resp, 401)
    assert guarded.redis.zcard("cameron:process:foo:key:no-token:jobs") == before


def test_health_needs_no_token(guarded):
    assert requests.get(f"{guarded.base_url}/api/health", timeout=10).status_code == 200


@pytest.mark.parametrize("token", [TOKENS["alice"], TOKENS["bob"], UNNAMED])
def test_a_valid_token_opens_every_route_and_links_use_the_public_address(guarded, token):
    resp = requests.post(start_url(guarded), json={"key": "with-token", "data": "d", "requestor": "r"},
                         headers=bearer(token), timeout=10)
    assert resp.status_code == 201, resp.text
    location = resp.headers["Location"]
    assert location.startswith(PUBLIC + "/api/process/foo/key/with-token/job/")
    job = requests.get(guarded.base_url + location[len(PUBLIC):], headers=bearer(token), timeout=10)
    assert job.status_code == 200 and job.json()["links"]["self"] == location
    assert requests.get(f"{guarded.base_url}/api/openapi.json", headers=bearer(token), timeout=10).ok


def test_idempotency_keys_belong_to_one_token_and_one_process(guarded):
    def start(token, process="foo", data="d"):
        return requests.post(start_url(guarded, process), json={"key": "idem", "data": data, "requestor": "r"},
                             headers={**bearer(token), "Idempotency-Key": "shared-key-1"}, timeout=10)
    alice, bob = start(TOKENS["alice"]), start(TOKENS["bob"], data="other")
    assert (alice.status_code, bob.status_code) == (201, 201)
    assert alice.json()["uuid"] != bob.json()["uuid"]
    again = start(TOKENS["alice"])
    assert again.status_code == 200 and again.json()["uuid"] == alice.json()["uuid"]
    elsewhere = start(TOKENS["alice"], process="echo")
    assert elsewhere.status_code == 201 and elsewhere.json()["uuid"] != alice.json()["uuid"]


def test_a_key_at_the_highest_limit_allowed_keeps_its_job_readable_and_cancellable(guarded):
    key = "/" * 2048  # 6,144 characters URL-encoded
    resp = requests.post(start_url(guarded, "slow"), json={"key": key, "data": "d", "requestor": "r"},
                         headers=bearer(UNNAMED), timeout=10)
    assert resp.status_code == 201, resp.text
    job = guarded.base_url + resp.headers["Location"][len(PUBLIC):]
    assert requests.get(job, headers=bearer(UNNAMED), timeout=10).json()["key"] == key
    assert requests.post(job + "/cancel", headers=bearer(UNNAMED), timeout=10).status_code in (202, 409)


def test_the_openapi_document_declares_the_bearer_scheme(guarded):
    doc = requests.get(f"{guarded.base_url}/api/openapi.json", headers=bearer(UNNAMED), timeout=10).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["paths"]["/api/health"]["get"]["security"] == []
    assert "401" in doc["paths"]["/api/process/{name}/start"]["post"]["responses"]


def test_headers_not_sent_within_the_header_timeout_close_the_connection(guarded):
    with socket.create_connection(("127.0.0.1", int(guarded.env["CAMERON_PORT"])), timeout=10) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        closed = b""
        while time.monotonic() - began < 8:
            try:
                s.sendall(b"X-Slow: a\r\n")
            except OSError:
                break  # the server closed it
            s.settimeout(0.3)
            try:
                closed = s.recv(100)
                break
            except TimeoutError:
                continue
        assert closed == b"" and time.monotonic() - began < 5


def test_an_idle_kept_alive_connection_is_closed_after_the_header_timeout(guarded):
    conn = http.client.HTTPConnection("127.0.0.1", int(guarded.env["CAMERON_PORT"]), timeout=10)
    conn.request("GET", "/api/health")
    assert conn.getresponse().read()
    began = time.monotonic()
    assert conn.sock.recv(100) == b""  # nothing more comes: the server closed it
    assert 0.5 < time.monotonic() - began < 5  # web_header_timeout is 1 s here
    conn.close()


def test_a_body_not_sent_within_the_body_timeout_is_a_json_408(guarded):
    with socket.create_connection(("127.0.0.1", int(guarded.env["CAMERON_PORT"])), timeout=10) as s:
        s.sendall(b"POST /api/process/foo/start HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + UNNAMED.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"key\"")
        began = time.monotonic()
        answer = s.makefile("rb").read()  # the server answers, then closes
    assert time.monotonic() - began < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert "did not arrive within 1 s" in json.loads(body)["description"]


def test_tokens_never_reach_the_log(guarded):
    requests.get(f"{guarded.base_url}/api/process/foo/job?limit=x", headers=bearer(UNNAMED), timeout=10)
    requests.get(f"{guarded.base_url}/api", headers=bearer(TOKENS["bob"] + "-wrong"), timeout=10)
    log = guarded.log.read_text()
    for token in [*TOKENS.values(), UNNAMED]:
        assert token not in log


def test_the_cameron_command_needs_no_token(guarded):
    # Beside a gunicorn that asks every client for a token, with the same settings
    def cameron(*args):
        done = subprocess.run([sys.executable, "-m", "cameron.cli", *args], env=guarded.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout
    started = json.loads(cameron("start-job", "foo", "--key", "cli-with-tokens", "--data", "d", "--json"))
    assert f"{guarded.env['CAMERON_PORT']}/api" in cameron("status")
    assert "cli-with-tokens" in cameron("jobs", "foo")
    assert "cli-with-tokens" in cameron("job", started["uuid"])
