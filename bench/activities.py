"""The benchmark's activity servers, three kinds with the same foo and lab answers as
cameron.activity_server:

- `fast`: one asyncio process, so that it is never the bottleneck. http.server spends a thread
  and a few hundred microseconds of parsing per call; here a call costs tens of microseconds,
  and a sleeping activity (/lab/sleep/MS) is a timer, not a thread, so a thousand of them in
  flight cost nothing.
- `stdlib`: the standard library's ThreadingHTTPServer and BaseHTTPRequestHandler with their
  defaults untouched (HTTP/1.0, a listen backlog of 5, headers and body in two writes), as
  the sample server and most users' first activities are written.
- `gunicorn`: a WSGI app (`bench.activities:wsgi_app`) under gunicorn's sync workers.

GET /stats reports the calls served and the time spent inside them, which the hop-overhead
figure subtracts from a job's time. Run: `python -m bench.activities --kind fast --port N`
(gunicorn: `python -m gunicorn -k sync -w W --preload -b 127.0.0.1:N bench.activities:wsgi_app`)."""

import argparse
import asyncio
import json
import multiprocessing
import signal
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cameron.activity_server import foo_answer, lab_answer, serve_until_stopped

#: The kinds of server, and the gunicorn workers of the third (its concurrency).
KINDS = ("fast", "stdlib", "gunicorn")
GUNICORN_WORKERS = 8


def route(path: str, body: dict, base: str):
    """(seconds to sleep first, the answer's JSON bytes) for an activity path, or None."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["lab", "sleep"] and len(parts) == 3:
        return int(parts[2]) / 1000, json.dumps({"name": "sleep", "data": body.get("data")}).encode()
    answer = foo_answer(path, body, base) if path.startswith("/foo/") else lab_answer(path, body, base)
    if answer is None or isinstance(answer, tuple):  # raw replies are the failure lab: not ours
        return None
    return 0.0, json.dumps(answer).encode()

#: Requests larger than this are refused: the bench only sends small JSON bodies.
MAX_REQUEST = 1024 * 1024


class Stats:
    """Calls served and the seconds spent inside them (sleeps included)."""

    def __init__(self):
        self.calls = 0
        self.busy = 0.0

    def add(self, started: float):
        self.calls += 1
        self.busy += time.perf_counter() - started

    def as_json(self) -> bytes:
        return json.dumps({"calls": self.calls, "busy_ms": self.busy * 1000}).encode()


class ActivityProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request at a time per connection (the engine and the
    bench's clients never pipeline; a delayed answer must still go out before the next)."""

    def __init__(self, stats: Stats):
        self.stats = stats
        self.buffer = b""
        self.busy = False
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if len(self.buffer) > MAX_REQUEST:
            self._reply(413, b'{"error": "request too large"}', close=True)
            return
        self._next()

    def _next(self):
        while not self.busy and self.transport is not None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            lines = self.buffer[:head_end].decode("latin-1").split("\r\n")
            method, target, version = (lines[0].split(" ") + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4:head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length:]
            close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
            self._handle(method, target.split("?", 1)[0], headers, body, close)

    def _handle(self, method, path, headers, raw, close):
        started = time.perf_counter()
        if method == "GET" and path == "/stats":
            return self._reply(200, self.stats.as_json(), close)
        if method != "POST":
            return self._reply(404, b'{"error": "POST an activity"}', close)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._reply(400, b'{"error": "body is not JSON"}', close)
        routed = route(path, body, f"http://{headers.get('host', '127.0.0.1')}")
        if routed is None:
            return self._reply(404, b'{"error": "no such activity"}', close)
        delay, answer = routed
        if delay:
            # A timer instead of a sleep, which would stall every connection.
            self.busy = True
            asyncio.get_running_loop().call_later(delay, self._delayed, answer, close, started)
            return
        self._reply(200, answer, close)
        self.stats.add(started)

    def _delayed(self, payload, close, started):
        self.busy = False
        if self.transport is None:
            return  # the caller gave up
        self._reply(200, payload, close)
        self.stats.add(started)
        self._next()

    def _reply(self, status: int, payload: bytes, close: bool):
        if self.transport is None:
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large"}[status]
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}"] + (["Connection: close"] if close else [])
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc):
        self.transport = None


class SharedStats(Stats):
    """Stats that gunicorn's workers, forked after the app was loaded (--preload), share."""

    def __init__(self):
        self.values = multiprocessing.Array("d", 2)  # calls, busy seconds; with its own lock

    def add(self, started: float):
        with self.values.get_lock():
            self.values[0] += 1
            self.values[1] += time.perf_counter() - started

    def as_json(self) -> bytes:
        with self.values.get_lock():
            return json.dumps({"calls": int(self.values[0]), "busy_ms": self.values[1] * 1000}).encode()


class StdlibHandler(BaseHTTPRequestHandler):
    """Written as a user would: defaults untouched (HTTP/1.0: a connection per call)."""

    def do_GET(self):
        self._send(200, self.server.stats.as_json()) if self.path == "/stats" else self._send(404, b"{}")

    def do_POST(self):
        started = time.perf_counter()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        routed = route(self.path.split("?", 1)[0], json.loads(raw or b"{}"),
                       f"http://{self.headers.get('Host', '127.0.0.1')}")
        if routed is None:
            return self._send(404, b'{"error": "no such activity"}')
        time.sleep(routed[0])
        self._send(200, routed[1])
        self.server.stats.add(started)

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        pass


_wsgi_stats = SharedStats()


def wsgi_app(environ, start_response):
    """The same activities as a WSGI app, for gunicorn's sync workers."""
    started = time.perf_counter()
    path = environ.get("PATH_INFO", "/")
    if environ["REQUEST_METHOD"] == "GET" and path == "/stats":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [_wsgi_stats.as_json()]
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    routed = route(path, json.loads(raw or b"{}"), f"http://{environ.get('HTTP_HOST', '127.0.0.1')}")
    if routed is None:
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "no such activity"}']
    time.sleep(routed[0])
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(routed[1])))])
    _wsgi_stats.add(started)
    return [routed[1]]


def serve_stdlib(host: str, port: int):
    server = ThreadingHTTPServer((host, port), StdlibHandler)
    server.stats = SharedStats()
    serve_until_stopped(server)


async def serve(host: str, port: int):
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ActivityProtocol(stats), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bench activity server on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("fast", "stdlib"), default="fast")
    args = parser.parse_args(argv)
    if args.kind == "stdlib":
        serve_stdlib(args.host, args.port)
    else:
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
