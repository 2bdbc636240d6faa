"""The HTTP API (Falcon): validates requests; stores starts in Redis, forwards the rest to the actors."""

import hmac
import json
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor, wait
from urllib.parse import quote, unquote, urlencode, urlsplit

import falcon
import redis

from cameron import __version__, dashboard, events, health, keys, metrics, openapi, store
from cameron import messages as m
from cameron.config import MAX_JSON_DEPTH, Config
from cameron.gateway import EngineUnavailable, JobGone, job_store_errors

BANNER = "Cameron Workflow Engine // Web API"
#: Jobs per page of a listing: the default and the most a client may ask for.
PAGE, MAX_PAGE = 50, 500
#: A listing's limit: ASCII digits only (str.isdigit() takes "²", which int() refuses).
_LIMIT = re.compile(r"[0-9]{1,6}")
#: An Idempotency-Key: printable ASCII without spaces, like a uuid or a request id.
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")

log = logging.getLogger("cameron.api")


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


class FrontDoor:
    """Gives each request the API's public address for its links and, when tokens are set,
    lets in only a request with one of them (`Authorization: Bearer <token>`); /api/health
    stays open for load balancers. The token's name scopes the client's Idempotency-Keys."""

    #: Health for load balancers, and the dashboard's files (they hold no data: the page asks
    #: for a token before it reads anything).
    OPEN = frozenset(["/api/health", *dashboard.PATHS])

    def __init__(self, config: Config):
        self.base = config.api_url
        self.tokens = [(name, token.encode()) for name, token in config.tokens.items()]

    def process_request(self, req, resp):
        req.context.base = self.base
        req.context.client = ""
        if not self.tokens or req.path in self.OPEN:
            return
        scheme, _, given = (req.get_header("Authorization") or "").strip().partition(" ")
        # WSGI hands headers over as latin-1 text: back to the bytes the client sent.
        given = given.strip().encode("latin-1", "replace")
        client = None
        if scheme.lower() == "bearer" and given:
            # Every token is compared, in constant time: how long the check takes says
            # nothing of which token came close.
            for name, token in self.tokens:
                if hmac.compare_digest(given, token) and client is None:
                    client = name
        if client is None:
            raise falcon.HTTPUnauthorized(
                title="Token required",
                description="send a valid token as `Authorization: Bearer <token>`",
                challenges=['Bearer realm="cameron"'])
        req.context.client = client


class Root:
    def on_get(self, req, resp):
        links = {"start": "/api/process/{name}/start", "processes": "/api/process",
                 "jobs": "/api/process/{name}/job", "key_jobs": "/api/process/{name}/key/{key}/job",
                 "job": "/api/process/{name}/key/{key}/job/{uuid}", "job_by_uuid": "/api/job/{uuid}",
                 "health": "/api/health", "openapi": "/api/openapi.json"}
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
             "links": {"start": f"{req.context.base}/api/process/{quote(p.name, safe='')}/start"}}
            for p in reply.processes]}


class Start:
    """Accepts a job straight into Redis (one atomic script: the job, its indexes, the engine's
    inbox) and answers 201 once it is there; the engine's JobData takes it off the inbox. No
    actor round trip on this path: a start costs the API one Redis call."""

    def __init__(self, jobs: store.JobStore | None, config: Config):
        self.jobs = jobs
        self.config = config

    def on_post(self, req, resp, name):
        name = unquote(name)
        idempotency_key = req.get_header("Idempotency-Key") or ""
        if idempotency_key and not _IDEMPOTENCY_KEY.match(idempotency_key):
            raise falcon.HTTPBadRequest(title="Invalid Idempotency-Key",
                                        description="the Idempotency-Key header must be 1-255 "
                                                    "printable ASCII characters without spaces")
        fields = _job_request(req, self.config)
        if self.jobs is None:
            raise EngineUnavailable("no job store configured")
        job_id = store.new_uuid()
        try:
            with self.jobs.lend() as via:
                job = self.jobs.start(name, **fields, idempotency_key=idempotency_key, job_id=job_id,
                                      fingerprint=store.fingerprint(name, **fields) if idempotency_key else "",
                                      client=req.context.client, via=via)
        except store.UnknownProcess:
            raise falcon.HTTPNotFound(title="Unknown process",
                                      description=f"no process named {name!r} in the catalog") from None
        except store.IdempotencyConflict:
            raise falcon.HTTPUnprocessableEntity(
                title="Idempotency-Key reused",
                description=f"Idempotency-Key {idempotency_key!r} already started a job with a "
                            "different request; use a new key for a new job") from None
        except store.EngineStarting as e:
            raise EngineUnavailable(str(e)) from None
        except redis.RedisError as e:
            if store.never_sent(e):
                raise EngineUnavailable(f"job store unavailable, job not created: {e}") from None
            _outcome_unknown(req.context.base, resp, name, fields["key"], job_id, idempotency_key, e)
            return
        if job.replayed:
            # A retry of a start that already succeeded: the same job, not a second one.
            resp.status = falcon.HTTP_200
            resp.set_header("Idempotent-Replayed", "true")
        else:
            resp.status = falcon.HTTP_201
        location = req.context.base + job_path(job.process, job.key, job.uuid)
        resp.location = location
        resp.media = {"uuid": job.uuid, "process": job.process, "key": job.key, "status": job.status,
                      "links": {"self": location}}


def _read_body(req, limit: int) -> bytes:
    """The request body, at most `limit` bytes (413 past it); a chunked body is read to its
    end. 408 when the client does not send it in time, 400 when it cannot be read."""
    # What is left of a refused body, the server reads for a second at most (web_worker.py).
    def too_large():  # made only when raised: building it took 1 % of a start's CPU
        return falcon.HTTPContentTooLarge(
            title="Body too large", description=f"the body may be at most {limit} bytes (max_body_bytes)")

    if req.content_length is not None and req.content_length > limit:
        raise too_large()
    # Without a Content-Length (chunked) the server's stream ends where the body does.
    stream = req.stream if req.content_length is None else req.bounded_stream
    try:
        raw = stream.read(limit + 1)
    except TimeoutError as e:
        # Falcon has no class for 408; the server closes the connection after it.
        raise falcon.HTTPError(falcon.HTTP_408, title="Body too slow", description=str(e)) from None
    except Exception as e:  # the server's reader: a malformed chunk, a client gone
        raise falcon.HTTPBadRequest(title="Unreadable body",
                                    description=f"the body could not be read: {e}") from None
    if len(raw) > limit:
        raise too_large()
    return raw


def _depth(value) -> int:
    """How deep arrays and objects nest in a parsed JSON value (a scalar: 0); counts no
    further than MAX_JSON_DEPTH + 1."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _size(name: str, value) -> int:
    """The UTF-8 size of a field; 400 for text that is not Unicode (a lone surrogate, which
    JSON's \\u escapes can spell but no store can hold)."""
    try:
        if isinstance(value, str):
            return len(value.encode())
        return len(json.dumps(value, ensure_ascii=False).encode())
    except UnicodeEncodeError:
        raise falcon.HTTPBadRequest(title="Invalid job request",
                                    description=f"'{name}' is not valid Unicode (it holds a lone "
                                                "surrogate such as \\ud800)") from None


def _check_sizes(fields: dict, config: Config):
    limits = {"key": ("max_key_bytes", config.max_key_bytes),
              "data": ("max_data_bytes", config.max_data_bytes),
              "requestor": ("max_requestor_bytes", config.max_requestor_bytes)}
    for name, (setting, limit) in limits.items():
        if _size(name, fields[name]) > limit:
            raise falcon.HTTPBadRequest(title="Invalid job request",
                                        description=f"'{name}' is over {limit} bytes ({setting})")


def _outcome_unknown(base, resp, name, key, job_id, idempotency_key, error):
    """A 503 for a start whose script went to Redis but whose answer did not come back in
    time: Redis may have run it (when it wakes up) or not. It says so, and how to find out."""
    location = base + job_path(name, key, job_id)
    if idempotency_key:
        how = (f"retry with the same Idempotency-Key ({idempotency_key}): it answers the job "
               "if it was created, or creates it once")
    else:
        how = f"GET {location} tells (404: it was not created)"
    log.warning("start of a %s job: outcome unknown (%s)", name, error, extra={"job": job_id})
    resp.status = falcon.HTTP_503
    resp.set_header("Retry-After", "1")
    resp.media = {"title": "Outcome unknown",
                  "description": f"job store did not answer in time ({error}): job {job_id} may or "
                                 f"may not have been created; {how}",
                  "outcome": "unknown", "uuid": job_id, "links": {"self": location}}


def _not_json(constant):
    """Python's json reads NaN and Infinity, which JSON has not: stored, they would go to
    activities and readers as text no JSON parser takes."""
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text):
    """A number too large for a float (1e999) would come back as Infinity: refused too."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def _job_request(req, config: Config) -> dict:
    raw = _read_body(req, config.max_body_bytes)
    try:
        body = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise falcon.HTTPBadRequest(title="Invalid JSON",
                                    description=f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise falcon.HTTPBadRequest(title="Invalid JSON",
                                    description=f"the body is not valid JSON: {e}") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise falcon.HTTPBadRequest(title="Invalid JSON",
                                    description=f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(title="Invalid job request",
                                    description='the body must be a JSON object: {"key", "data", "requestor"}')
    fields = {}
    for field in ("key", "data", "requestor"):
        if field not in body:
            raise falcon.HTTPBadRequest(title="Invalid job request",
                                        description=f"'{field}' is missing")
        if not isinstance(body[field], str) and field != "data":  # data: any JSON value
            raise falcon.HTTPBadRequest(title="Invalid job request",
                                        description=f"'{field}' must be a string")
        fields[field] = body[field]
    if not fields["key"]:
        raise falcon.HTTPBadRequest(title="Invalid job request", description="'key' must not be empty")
    _check_sizes(fields, config)
    return fields


class JobNotFound(falcon.HTTPNotFound):
    def __init__(self, process, key, uuid):
        super().__init__(title="Job not found", description=f"no job {uuid} of process {process!r} for key {key!r}")


class _Reads:
    """Job reads go straight to Redis from this worker: JobData would only pass them on."""

    def __init__(self, gateway, jobs):
        self.gateway, self.jobs = gateway, jobs

    def read(self, method: str, *args, **kwargs):
        """JobStore.<method>(...); 503 when Redis does not answer within redis_timeout."""
        return self.on_redis(lambda: getattr(self.jobs, method)(*args, **kwargs))

    def on_redis(self, call):
        """call() with the job store; 503 when Redis does not answer within redis_timeout."""
        if self.jobs is None:
            raise EngineUnavailable("no job store configured")
        with job_store_errors():
            return call()


class Job(_Reads):
    """A job's document (read straight from Redis), and its cancel (through the engine)."""

    def on_get(self, req, resp, name, key, uuid):
        name, key = unquote(name), unquote(key)
        self._check(name, key, uuid)
        doc = self.read("get", name, key, uuid)
        if doc is None:
            raise JobNotFound(name, key, uuid)
        doc["links"] = _job_links(req, name, key, uuid)
        resp.media = doc

    def on_delete(self, req, resp, name, key, uuid):
        """Cancel: no new task starts, the running ones finish or time out, the job ends cancelled."""
        name, key = unquote(name), unquote(key)
        self._check(name, key, uuid)
        try:
            status, requested = self.on_redis(lambda: self.gateway.cancel(self.jobs, name, key, uuid))
        except JobGone as e:
            if e.status is None:
                raise JobNotFound(name, key, uuid) from None
            raise falcon.HTTPConflict(title="Job already finished",
                                      description=f"job {uuid} already ended {e.status}; only a scheduled "
                                                  "or running job can be cancelled") from None
        resp.status = falcon.HTTP_202
        resp.media = {"uuid": uuid, "process": name, "key": key, "status": status,
                      "cancel_requested": requested, "links": _job_links(req, name, key, uuid)}

    on_post_cancel = on_delete

    @staticmethod
    def _check(name, key, uuid):
        if not keys.is_uuid(uuid):
            raise JobNotFound(name, key, uuid)


def _job_links(req, name, key, uuid) -> dict:
    path = req.context.base + job_path(name, key, uuid)
    return {"self": path, "cancel": f"{path}/cancel"}


class JobByUuid(_Reads):
    """A job from its uuid alone, as `cameron job UUID` asks for it."""

    def on_get(self, req, resp, uuid):
        not_found = falcon.HTTPNotFound(title="Job not found", description=f"no job {uuid}")
        if not keys.is_uuid(uuid):
            raise not_found
        doc = self.read("find", uuid)
        if doc is None:
            raise not_found
        doc["links"] = _job_links(req, doc["process"], doc["key"], uuid)
        resp.media = doc


class Jobs(_Reads):
    """Pages of a process's jobs, newest first: all of them or those of one key, optionally
    in one state (`?status=running&limit=50&cursor=...`)."""

    def on_get(self, req, resp, name, key=None):
        name = unquote(name)
        key = None if key is None else unquote(key)
        query = listing_query(req.params)
        found = self.read("list_jobs", name, key=key, **query)
        if found is None:
            raise falcon.HTTPNotFound(title="Unknown process",
                                      description=f"no process named {name!r} in the catalog, and no job of it")
        page, next_cursor = found
        jobs = [{**j, "links": _job_links(req, name, j["key"], j["uuid"])} for j in page]
        cursor = store.encode_cursor(next_cursor)
        here = req.context.base + req.path
        links = {"self": here + (f"?{req.query_string}" if req.query_string else "")}
        if cursor:
            params = {k: v for k, v in (("status", query["state"]), ("limit", query["limit"]))
                      if v is not None}
            links["next"] = f"{here}?{urlencode({**params, 'cursor': cursor})}"
        resp.media = {"process": name, **({"key": key} if key is not None else {}),
                      "jobs": jobs, "next_cursor": cursor, "links": links}


def listing_query(params: dict) -> dict:
    """The list_jobs() arguments of a listing's query string; 400 saying what is wrong."""
    def bad(description):
        return falcon.HTTPBadRequest(title="Invalid query", description=description)

    unknown = set(params) - {"status", "limit", "cursor"}
    if unknown:
        raise bad(f"unknown parameter {sorted(unknown)[0]!r} (known: status, limit, cursor)")
    for name, value in params.items():
        if isinstance(value, list):
            raise bad(f"'{name}' given more than once")
    state = params.get("status")
    if state is not None and state not in keys.JOB_STATES:
        raise bad(f"'status' must be one of {', '.join(keys.JOB_STATES)}")
    limit = params.get("limit", str(PAGE))
    if not _LIMIT.fullmatch(limit) or not 1 <= int(limit) <= MAX_PAGE:
        raise bad(f"'limit' must be a whole number from 1 to {MAX_PAGE}")
    cursor = params.get("cursor")
    if cursor is not None:
        try:
            cursor = store.decode_cursor(cursor)
        except ValueError as e:
            raise bad(f"'cursor': {e}") from None
    return {"state": state, "limit": int(limit), "cursor": cursor}


class Health:
    """200 when Redis answers and the engine is whole and moving, else 503 saying what is
    wrong; the answer comes within `timeout` seconds, whatever hangs (both checks run at
    once). The engine is judged from its health record in Redis, not by asking an actor:
    asking one by name would create it when missing, and so hide what it was to report."""

    #: Threads the checks run on, shared by every request: a check still hanging when its
    #: answer was due keeps its thread, and a burst of them cannot make more than this.
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")

    def __init__(self, redis_client, config: Config):
        self.redis = redis_client
        self.config = config
        self.timeout = config.health_timeout

    def on_get(self, req, resp):
        futures = {"redis": self.pool.submit(self._redis), "actors": self.pool.submit(self._actors)}
        wait(futures.values(), timeout=self.timeout)
        checks = {part: f.result() if f.done() else
                  {"ok": False, "error": f"no answer within {self.timeout:g} s"}
                  for part, f in futures.items()}
        healthy = all(c["ok"] for c in checks.values())
        resp.status = falcon.HTTP_200 if healthy else falcon.HTTP_503
        resp.media = {"status": "ok" if healthy else "unavailable", **checks}

    def _redis(self) -> dict:
        try:
            self.redis.ping()
            return {"ok": True}
        except redis.RedisError as e:
            return {"ok": False, "error": f"Redis does not answer: {e}"}

    def _actors(self) -> dict:
        return health.engine_health(self.redis, self.config.engine, self.config.stall_after)


class OpenApi:
    def __init__(self, config: Config):
        self.config = config

    def on_get(self, req, resp):
        resp.media = openapi.document(__version__, self.config)


def _unavailable(req, resp, ex, params):
    raise falcon.HTTPServiceUnavailable(title="Engine unavailable", description=str(ex),
                                        retry_after=1)


def _internal(req, resp, ex, params):
    if isinstance(ex, falcon.HTTPError):
        raise ex
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(title="Internal error",
                                         description=f"{type(ex).__name__}: the error is in the server log")


def _json_errors(req, resp, exc):
    # Always JSON, whatever the client's Accept header says (Falcon would otherwise pick XML).
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(exc.to_dict()).encode()


def _not_found(req, resp):
    raise falcon.HTTPNotFound(title="Page not found", description=f"nothing at {req.path}")


def create_app(gateway, redis_client=None, jobs=None, config: Config | None = None) -> falcon.App:
    """The API; `redis_client` is the engine's Redis, which /api/health pings (within the
    health_timeout setting), `jobs` the JobStore on it that starts are stored with, and `config`
    gives the public address, the tokens and the limits (the defaults when None)."""
    config = config or Config()
    app = falcon.App(middleware=[RawPath(), FrontDoor(config)])
    app.req_options.keep_blank_qs_values = True  # `?status=` is a bad status, not no status
    app.add_route("/api", Root())
    app.add_route("/api/health", Health(redis_client, config))
    app.add_route("/api/openapi.json", OpenApi(config))
    app.add_route("/api/process", Processes(gateway))
    app.add_route("/api/process/{name}/start", Start(jobs, config))
    app.add_route("/api/process/{name}/job", Jobs(gateway, jobs))
    app.add_route("/api/process/{name}/key/{key}/job", Jobs(gateway, jobs))
    job = Job(gateway, jobs)
    app.add_route("/api/process/{name}/key/{key}/job/{uuid}", job)
    app.add_route("/api/process/{name}/key/{key}/job/{uuid}/cancel", job, suffix="cancel")
    app.add_route("/api/job/{uuid}", JobByUuid(gateway, jobs))
    hub = events.Hub(redis_client) if redis_client is not None else None
    app.add_route("/api/job/{uuid}/events", events.JobEvents(redis_client, hub))
    app.add_route("/api/events", events.JobsEvents(hub))
    app.add_route("/metrics", metrics.Metrics(jobs, config))
    dashboard.add_routes(app, jobs)
    app.add_sink(_not_found, "/")
    app.add_error_handler(Exception, _internal)
    app.add_error_handler(EngineUnavailable, _unavailable)
    app.set_error_serializer(_json_errors)
    return app
