"""The HTTP API (Falcon): validates requests and forwards them to the actors through a gateway."""

import json
import re
from urllib.parse import quote, unquote, urlsplit

import falcon

from cameron import __version__
from cameron import messages as m
from cameron.gateway import EngineUnavailable

BANNER = "Cameron Workflow Engine // Web API"
MAX_BODY = 1024 * 1024
_UUID = re.compile(r"^[0-9a-f]{32}$")


def job_path(process: str, key: str, uuid: str) -> str:
    return f"/api/process/{quote(process, safe='')}/key/{quote(key, safe='')}/job/{uuid}"


class RawPath:
    """Route on the path as the client encoded it, so an encoded `/` in a key (%2F) stays
    inside its segment; resources decode each field themselves. WSGI's PATH_INFO is already
    decoded, so the raw form comes from the server (gunicorn: RAW_URI)."""

    def process_request(self, req, resp):
        raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI")
        if raw:
            path = urlsplit(raw).path if raw.startswith(("http://", "https://")) else raw.split("?", 1)[0]
        else:
            path = quote(req.path, safe="/")
        req.path = path


class Root:
    def on_get(self, req, resp):
        links = {"start": "/api/process/{name}/start", "processes": "/api/process",
                 "job": "/api/process/{name}/key/{key}/job/{uuid}"}
        if req.client_prefers(["text/plain", "application/json"]) == "application/json":
            resp.media = {"name": BANNER, "version": __version__, "links": links}
        else:
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = "\n".join([BANNER, f"version {__version__}"]
                                  + [f"{k}: {v}" for k, v in links.items()]) + "\n"


class Processes:
    def __init__(self, gateway):
        self.gateway = gateway

    def on_get(self, req, resp):
        reply = self.gateway.ask("catalog", m.ListProcesses())
        resp.media = {"processes": [
            {"name": p.name, "start": p.start_url,
             "links": {"start": f"{req.prefix}/api/process/{quote(p.name, safe='')}/start"}}
            for p in reply.processes]}


class Start:
    def __init__(self, gateway):
        self.gateway = gateway

    def on_post(self, req, resp, name):
        name = unquote(name)
        fields = _job_request(req)
        reply = self.gateway.ask("scheduler", m.StartJob(name, **fields))
        if isinstance(reply, m.UnknownProcess):
            raise falcon.HTTPNotFound(title="Unknown process",
                                      description=f"no process named {name!r} in the catalog")
        job = reply.job
        location = req.prefix + job_path(job.process.name, job.key, job.uuid)
        resp.status = falcon.HTTP_201
        resp.location = location
        resp.media = {"uuid": job.uuid, "process": job.process.name, "key": job.key,
                      "status": "scheduled", "links": {"self": location}}


def _job_request(req) -> dict:
    if req.content_length and req.content_length > MAX_BODY:
        raise falcon.HTTPContentTooLarge(title="Body too large",
                                         description=f"the body may be at most {MAX_BODY} bytes")
    raw = req.bounded_stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise falcon.HTTPContentTooLarge(title="Body too large",
                                         description=f"the body may be at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise falcon.HTTPBadRequest(title="Invalid JSON",
                                    description=f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(title="Invalid job request",
                                    description='the body must be a JSON object: {"key", "data", "requestor"}')
    fields = {}
    for field in ("key", "data", "requestor"):
        if field not in body:
            raise falcon.HTTPBadRequest(title="Invalid job request",
                                        description=f"'{field}' is missing")
        if not isinstance(body[field], str):
            raise falcon.HTTPBadRequest(title="Invalid job request",
                                        description=f"'{field}' must be a string")
        fields[field] = body[field]
    if not fields["key"]:
        raise falcon.HTTPBadRequest(title="Invalid job request", description="'key' must not be empty")
    return fields


class Job:
    def __init__(self, gateway):
        self.gateway = gateway

    def on_get(self, req, resp, name, key, uuid):
        name, key = unquote(name), unquote(key)
        not_found = falcon.HTTPNotFound(title="Job not found",
                                        description=f"no job {uuid} of process {name!r} for key {key!r}")
        if not _UUID.match(uuid):
            raise not_found
        reply = self.gateway.ask("job_data", m.GetJob(name, key, uuid))
        if isinstance(reply, m.JobNotFound):
            raise not_found
        doc = reply.doc
        doc["links"] = {"self": req.prefix + job_path(name, key, uuid)}
        resp.media = doc


def _unavailable(req, resp, ex, params):
    raise falcon.HTTPServiceUnavailable(title="Engine unavailable", description=str(ex),
                                        retry_after=1)


def _internal(req, resp, ex, params):
    if isinstance(ex, falcon.HTTPError):
        raise ex
    import logging
    logging.getLogger("cameron.api").exception("unhandled error on %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(title="Internal error",
                                         description=f"{type(ex).__name__}: the error is in the server log")


def _json_errors(req, resp, exc):
    # Always JSON, whatever the client's Accept header says (Falcon would otherwise pick XML).
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(exc.to_dict()).encode()


def _not_found(req, resp):
    raise falcon.HTTPNotFound(title="Page not found", description=f"nothing at {req.path}")


def create_app(gateway) -> falcon.App:
    app = falcon.App(middleware=[RawPath()])
    app.add_route("/api", Root())
    app.add_route("/api/process", Processes(gateway))
    app.add_route("/api/process/{name}/start", Start(gateway))
    app.add_route("/api/process/{name}/key/{key}/job/{uuid}", Job(gateway))
    app.add_sink(_not_found, "/")
    app.add_error_handler(Exception, _internal)
    app.add_error_handler(EngineUnavailable, _unavailable)
    app.set_error_serializer(_json_errors)
    return app
