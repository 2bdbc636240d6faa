"""The dashboard at `/`: one HTML page, its script and its style, committed as they are served
(no build step, nothing fetched from the internet)."""

from pathlib import Path
from urllib.parse import unquote

import falcon

from cameron import keys, store
from cameron.gateway import job_store_errors

HERE = Path(__file__).parent
#: The files the dashboard is made of, and their types.
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"}

#: Where they are served: the page, and its files under /ui/{name}.
PATHS = ("/", *(f"/ui/{name}" for name in ASSETS))


class Asset:
    def on_get(self, req, resp, name="index.html"):
        if name not in ASSETS:
            raise falcon.HTTPNotFound(title="Page not found", description=f"nothing at {req.path}")
        # Read on each request: small files, and an edited asset shows without a restart.
        resp.content_type = ASSETS[name]
        resp.data = (HERE / name).read_bytes()
        resp.set_header("Cache-Control", "no-cache")


class Counts:
    """`GET /api/process/{name}/counts`: how many of its jobs are in each state."""

    def __init__(self, jobs: store.JobStore | None):
        self.jobs = jobs

    def on_get(self, req, resp, name):
        name = unquote(name)
        with job_store_errors():
            if self.jobs is None or not self.jobs.redis.hexists(keys.engine_catalog(self.jobs.engine), name):
                raise falcon.HTTPNotFound(title="Unknown process",
                                          description=f"no process named {name!r} in the catalog")
            resp.media = self.jobs.count_by_state(name)


def add_routes(app: falcon.App, jobs: store.JobStore | None):
    app.add_route("/api/process/{name}/counts", Counts(jobs))
    asset = Asset()
    app.add_route("/", asset)
    app.add_route("/ui/{name}", asset)
