"""A fast activity server for the benchmark: the same foo and lab answers as
cameron.activity_server, served by one asyncio process so that it is never the bottleneck.

http.server spends a thread and a few hundred microseconds of parsing per call; here a call
costs tens of microseconds, and a sleeping activity (/lab/sleep/MS) is a timer, not a thread,
so a thousand of them in flight cost nothing. GET /stats reports the calls served and the time
spent inside them, which the hop-overhead figure subtracts from a job's time.
Run: `python -m bench.activities --port N`."""

import argparse
import asyncio
import json
import signal
import time

from cameron.activity_server import foo_answer, lab_answer

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
        base = f"http://{headers.get('host', '127.0.0.1')}"
        parts = path.strip("/").split("/")
        if parts[:2] == ["lab", "sleep"] and len(parts) == 3:
            # A timer instead of lab_answer's time.sleep, which would stall every connection.
            self.busy = True
            answer = json.dumps({"name": "sleep", "data": body.get("data")}).encode()
            asyncio.get_running_loop().call_later(int(parts[2]) / 1000, self._delayed,
                                                  answer, close, started)
            return
        answer = foo_answer(path, body, base) if path.startswith("/foo/") else lab_answer(path, body, base)
        if answer is None or isinstance(answer, tuple):  # raw replies are the failure lab: not ours
            return self._reply(404, b'{"error": "no such activity"}', close)
        self._reply(200, json.dumps(answer).encode(), close)
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
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
