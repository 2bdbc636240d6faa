"""A Cameron activity server in Python's standard library alone: the `greet` workflow.

    python3 stdlib_activity.py 9401

`POST /greet` is the start activity: it greets the job's data (`{"name": ...}`) and names
one next activity, `POST /shout`, which answers the greeting in capitals and ends the
branch (no next_activities).
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def greet(call: dict, base: str) -> dict:
    name = (call.get("data") or {}).get("name", "stranger")
    return {"name": "greet", "data": {"greeting": f"hello {name}"},
            "next_activities": {"definitions": [{"name": "shout", "url": f"{base}/shout"}]}}


def shout(call: dict, base: str) -> dict:
    # A later task gets its parent's answer data, and the parent's name as requestor.
    return {"name": "shout", "data": {"loud": call["data"]["greeting"].upper(), "after": call["requestor"]}}


ACTIVITIES = {"/greet": greet, "/shout": shout}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Cameron reuses its connections

    def do_POST(self):
        activity = ACTIVITIES.get(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if activity is None:
            return self.answer(404, {"error": "no such activity"})
        # X-Cameron-Job, X-Cameron-Task and X-Cameron-Attempt name the call: a call may come
        # twice (at least once delivery), so an activity with side effects checks them.
        answer = activity(json.loads(body), f"http://{self.headers['Host']}")
        self.answer(200, answer)

    def answer(self, status: int, doc: dict):
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9401
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
