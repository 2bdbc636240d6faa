"""Prometheus metrics (`GET /metrics`)."""

import falcon


class Metrics:
    def on_get(self, req, resp):
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        resp.text = ""
