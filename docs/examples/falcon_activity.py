"""The `greet` workflow as a Falcon application (Falcon is what Cameron's own API uses).

    python3 falcon_activity.py 9402                             # try it (wsgiref, one thread)
    gunicorn -b 127.0.0.1:9402 -w 2 --threads 8 falcon_activity:app   # serve it for real
"""

import sys

import falcon


class Greet:
    def on_post(self, req, resp):
        call = req.get_media()
        name = (call.get("data") or {}).get("name", "stranger")
        resp.media = {"name": "greet", "data": {"greeting": f"hello {name}"},
                      "next_activities": {"definitions": [{"name": "shout", "url": f"{req.prefix}/shout"}]}}


class Shout:
    def on_post(self, req, resp):
        call = req.get_media()
        resp.media = {"name": "shout", "data": {"loud": call["data"]["greeting"].upper(),
                                                "after": call["requestor"]}}


app = falcon.App()
app.add_route("/greet", Greet())
app.add_route("/shout", Shout())

if __name__ == "__main__":
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, fmt, *args):
            pass
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9402
    make_server("127.0.0.1", port, app, handler_class=Quiet).serve_forever()
