"""calls_in_flight through the real stack: a runner's TaskActor has at most that many activity
calls open at once; the others wait their turn, and none of them fails for it."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import start_engine, stop_engine

pytestmark = pytest.mark.stack

LEAVES = 12  # four rounds of LIMIT
LIMIT = 3
HOLD = 10.0


class CountingServer(ThreadingHTTPServer):
    """/start answers LEAVES children at /leaf. The server counts the /leaf calls it holds at
    once. It holds each until its group of LIMIT (in the order they came) has all come, HOLD
    seconds at most, then 200 ms more: with the limit kept, every group is open together,
    whatever the machine's speed, and no call comes meanwhile; without it, the burst's calls
    all come while the first ones are held."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Condition()
        self.now = self.most = self.came = self.leaves = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/start":
            answer = {"name": "start", "data": body.get("data"), "next_activities": {"definitions": [
                {"name": f"leaf_{i}", "url": f"{server.url}/leaf"} for i in range(LEAVES)]}}
        else:
            with server.lock:
                group_ends = (server.came // LIMIT + 1) * LIMIT
                server.came += 1
                server.now += 1
                server.most = max(server.most, server.now)
                server.lock.notify_all()
                server.lock.wait_for(lambda: server.came >= group_ends, HOLD)
            time.sleep(0.2)
            with server.lock:
                server.now -= 1
                server.leaves += 1
            answer = {"name": "leaf", "data": body.get("data")}
        raw = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def test_a_runner_has_at_most_calls_in_flight_calls_open_and_the_rest_wait(short_tmp, redis_server, activities):
    # Given an engine of one runner allowed 3 calls at once, and a job whose start fans out to 12
    server = CountingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    engine, web = start_engine(short_tmp / "calls-in-flight", redis_server.url, activities,
                               catalog=lambda _: f'[processes.wide]\nstart = "{server.url}/start"\n',
                               CAMERON_CALLS_IN_FLIGHT=str(LIMIT), CAMERON_RUNNERS="1")
    try:
        # When the job runs
        doc = engine.run_job("wide", timeout=60)
    finally:
        stop_engine(engine, web)
        server.shutdown()
        server.server_close()
    # Expect every task done, each leaf called once, and never more than 3 of them open at once
    assert [t["status"]["current"] for t in doc["tasks"]] == ["done"] * (1 + LEAVES)
    assert server.leaves == LEAVES
    assert server.most == LIMIT
