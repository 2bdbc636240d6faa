"""Activity servers of our own: the sample `foo` workflow, and a lab of good and bad activities
that the tests and the benchmark call. Run: `python -m cameron.activity_server [--port 9292]`."""

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cameron import actorsys
from cameron.activity import signature_problem


def foo_answer(path: str, body: dict, base: str):
    """The sample `foo` workflow: start -> act_1..act_5, act_5 -> act_5_sub_1."""
    prefix = "/foo/v0.0.1"
    if path == f"{prefix}/start":
        return {
            "name": "whois",
            "data": {"who_id": body.get("key"), "who_name": "Leandro Silva",
                     "who_login": "leandrosilva",
                     "who_web_info": {"blog": "http://leandrosilva.com.br", "twitter": "@codezone"},
                     "who_dev_info": {"github": "http://github.com/leandrosilva"}},
            "next_activities": {"definitions": [
                {"name": f"act_{i}", "url": f"{base}{prefix}/activity/act_{i}"} for i in range(1, 6)]},
        }
    match = re.fullmatch(rf"{prefix}/activity/act_([1-5])", path)
    if match:
        i = match.group(1)
        answer = {"name": f"foo_act_{i}",
                  "data": {"act": i, "who_id": (body.get("data") or {}).get("who_id"),
                           "requestor": body.get("requestor")}}
        if i == "5":
            answer["next_activities"] = {"definitions": [
                {"name": "act_5_sub_1", "url": f"{base}{prefix}/activity/act_5_sub_1"}]}
        return answer
    if path == f"{prefix}/activity/act_5_sub_1":
        return {"name": "foo_act_5_sub_1", "data": {"sub": 1, "from": body.get("requestor")}}
    return None


def lab_answer(path: str, body: dict, base: str, attempt: int = 1):
    """Activities that misbehave on purpose, or take a given time; None if not a lab path.
    Returns an answer dict, or (status, content_type, bytes) for a raw reply. `attempt` is
    the engine's X-Cameron-Attempt header."""
    parts = path.strip("/").split("/")
    if parts[0] != "lab" or len(parts) < 2:
        return None
    kind, args = parts[1], parts[2:]
    leaf = {"name": kind, "data": body.get("data")}
    if kind == "echo":
        return leaf
    if kind == "sleep":
        time.sleep(int(args[0]) / 1000)
        return leaf
    if kind == "status":
        return (int(args[0]), "application/json", b'{"oops": true}')
    if kind == "flaky":  # /lab/flaky/N[/CODE]: answers CODE (503) to attempts 1..N, then echoes
        if attempt <= int(args[0]):
            return (int(args[1]) if len(args) > 1 else 503, "application/json", b'{"flaky": true}')
        return leaf
    if kind == "notjson":
        return (200, "text/plain", b"this is not JSON")
    if kind == "shape":
        return (200, "application/json", b'["a", "list"]')
    if kind == "noname":
        return {"data": 1}
    if kind == "badnext":
        return {"name": "badnext", "data": 1, "next_activities": {"definitions": [{"name": "x"}]}}
    if kind == "fanout":  # /lab/fanout/N/MS: N children that each sleep MS
        n, ms = int(args[0]), int(args[1])
        return {"name": "fanout", "data": body.get("data"), "next_activities": {"definitions": [
            {"name": f"child_{i}", "url": f"{base}/lab/sleep/{ms}"} for i in range(n)]}}
    if kind == "delayed":  # /lab/delayed/MS/N/CHILD_MS: sleep MS, then N children that sleep CHILD_MS
        time.sleep(int(args[0]) / 1000)
        n, ms = int(args[1]), int(args[2])
        return {"name": "delayed", "data": body.get("data"), "next_activities": {"definitions": [
            {"name": f"child_{i}", "url": f"{base}/lab/sleep/{ms}"} for i in range(n)]}}
    if kind == "chain":  # /lab/chain/N[/MS]: a chain of N more activities, each taking MS
        n, ms = int(args[0]), (args[1:] or ["0"])[0]
        time.sleep(int(ms) / 1000)
        if n <= 0:
            return leaf
        return {"name": f"chain_{n}", "data": body.get("data"), "next_activities": {
            "definitions": [{"name": f"chain_{n - 1}", "url": f"{base}/lab/chain/{n - 1}/{ms}"}]}}
    if kind == "mixed":  # a good child beside every kind of bad one
        bad = ["status/500", "notjson", "shape", "noname", "badnext", "sleep/3000"]
        defs = [{"name": "good", "url": f"{base}/lab/echo"}]
        defs += [{"name": b.split("/")[0], "url": f"{base}/lab/{b}"} for b in bad]
        defs += [{"name": "refused", "url": "http://127.0.0.1:9/"}]  # nothing listens on port 9
        return {"name": "mixed", "data": "to the children", "next_activities": {"definitions": defs}}
    if kind == "twins":  # two children with the same activity name
        return {"name": "twins", "data": body.get("data"), "next_activities": {"definitions": [
            {"name": "twin", "url": f"{base}/lab/echo"}, {"name": "twin", "url": f"{base}/lab/echo"}]}}
    if kind == "big":
        return {"name": "big", "data": "x" * int(args[0])}
    if kind == "spread":  # /lab/spread/N/REST...: N children at /lab/REST...
        n, rest = int(args[0]), "/".join(args[1:])
        return {"name": "spread", "data": body.get("data"), "next_activities": {"definitions": [
            {"name": f"child_{i}", "url": f"{base}/lab/{rest}"} for i in range(n)]}}
    if kind == "nextfrom":  # next activities as the job's data says (a JSON list of definitions)
        data = body.get("data")
        return {"name": "nextfrom", "data": "from nextfrom", "next_activities": {
            "definitions": json.loads(data) if isinstance(data, str) else data}}
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the engine reuses connections

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.server.signing_key:
            problem = signature_problem(self.server.signing_key, self.headers.get("X-Cameron-Signature"), raw)
            if problem:
                return self._reply(401, "application/json", json.dumps({"error": problem}).encode())
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._reply(400, "application/json", b'{"error": "body is not JSON"}')
        base = f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"
        path = self.path.split("?", 1)[0]
        attempt = int(self.headers.get("X-Cameron-Attempt") or 1)
        self.server.count(path, self.headers.get("X-Cameron-Job"), self.headers.get("X-Cameron-Task"), attempt,
                          again=self.headers.get("X-Cameron-Again") == "1")
        answer = foo_answer(path, body, base) if path.startswith("/foo/") else lab_answer(path, body, base, attempt)
        if answer is None:
            return self._reply(404, "application/json", b'{"error": "no such activity"}')
        if isinstance(answer, tuple):
            return self._reply(*answer)
        self._reply(200, "application/json", json.dumps(answer).encode())

    def do_GET(self):
        if self.path == "/calls":  # how often each path was called: tests count re-calls
            return self._reply(200, "application/json", json.dumps(self.server.calls()).encode())
        if self.path == "/log":  # every recent call with its engine headers and time
            return self._reply(200, "application/json", json.dumps(self.server.log()).encode())
        self._reply(404, "application/json", b'{"error": "POST an activity"}')

    def _reply(self, status, content_type, payload: bytes):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up (its timeout): nothing to answer

    def log_message(self, fmt, *args):
        pass  # one line per call would drown the engine's own log


class ActivityServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096  # the benchmark opens a thousand connections at once

    def __init__(self, host="127.0.0.1", port=9292, signing_key: str = ""):
        super().__init__((host, port), _Handler)
        #: With a key, calls without Cameron's valid, recent signature are refused (401).
        self.signing_key = signing_key.encode() or None
        self._lock = threading.Lock()
        self._calls = Counter()
        self._log = deque(maxlen=200_000)  # bounded: the benchmark makes millions of calls

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the caller went away (an engine stopped, a call timed out): nothing to report
        super().handle_error(request, client_address)

    def count(self, path, job=None, task=None, attempt=1, again=False):
        with self._lock:
            self._calls[path] += 1
            self._log.append({"path": path, "job": job, "task": task, "attempt": attempt,
                              "again": again, "time": time.time()})

    def calls(self) -> dict:
        with self._lock:
            return dict(self._calls)

    def log(self, job: str | None = None) -> list[dict]:
        """The calls remembered, oldest first; only one job's when `job` is given."""
        with self._lock:
            return [c for c in self._log if job is None or c["job"] == job]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_in_thread(self) -> "ActivityServer":
        threading.Thread(target=self.serve_forever, daemon=True, name="activity-server").start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9292)
    args = parser.parse_args(argv)
    try:
        server = ActivityServer(args.host, args.port, os.environ.get("CAMERON_SIGNING_KEY", ""))
    except OSError as e:
        parser.exit(2, f"activity server: cannot listen on {args.host}:{args.port}: "
                       f"{e.strerror or e} (--port; under cameron: foo_port, CAMERON_FOO_PORT)\n")
    print(f"activity server (foo, lab) on {server.url}"
          f"{', checking signatures' if server.signing_key else ''}", flush=True)
    actorsys.warn_if_exposed(logging.getLogger("cameron.activity_server"), "the sample server", args.host)
    serve_until_stopped(server)


def serve_until_stopped(server):
    """Serve until Ctrl-C or SIGTERM, then close the listening socket."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
