"""The OpenAPI 3.1 document of the HTTP API, served at /api/openapi.json; the stack tests
check live answers against its schemas, so it says what the server really does."""

import copy

from cameron.config import MAX_JSON_DEPTH, Config

STATES = ["scheduled", "running", "done", "cancelled"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    answer = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_TIME = {"type": ["string", "null"], "description": "MM-DD-YYYY hh:mm:ss, UTC"}
_STATUS = {"type": "object", "required": ["current", "time"],
           "properties": {"current": _STRING, "time": _TIME}}
_UNAVAILABLE = _json(_ref("Error"), "The actor system or Redis does not answer; try again",
                     {"Retry-After": {"schema": _INT}})
_LOCATION = {"Location": {"schema": _STRING, "description": "the job's URL"}}

_PROCESS = {"name": "name", "in": "path", "required": True, "schema": _STRING,
            "description": "process name"}
_KEY = {"name": "key", "in": "path", "required": True, "schema": _STRING,
        "description": "business key, URL-encoded (%2F for /)"}
_UUID = {"name": "uuid", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
         "description": "32 lowercase hex digits; anything else is an unknown job (404)"}
_LISTING = [
    {"name": "status", "in": "query", "schema": {"enum": STATES}, "description": "only jobs in this state"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
    {"name": "cursor", "in": "query", "schema": _STRING,
     "description": "next_cursor of the previous page, as given; any other value is a 400"},
]

SCHEMAS = {
    "Error": {"type": "object", "required": ["title"],
              "properties": {"title": _STRING, "description": _STRING}},
    "StartUnavailable": {"type": "object", "required": ["title"],
                         "properties": {"title": _STRING, "description": _STRING,
                                        "outcome": {"enum": ["unknown"]}, "uuid": _STRING,
                                        "links": {"type": "object", "properties": {"self": _STRING}}}},
    "Process": {"type": "object", "required": ["name", "start", "links"],
                "properties": {"name": _STRING, "start": _STRING,
                               "links": {"type": "object", "required": ["start"],
                                         "properties": {"start": _STRING}}}},
    "Processes": {"type": "object", "required": ["processes"],
                  "properties": {"processes": {"type": "array", "items": _ref("Process")}}},
    "StartRequest": {"type": "object", "required": ["key", "data", "requestor"],
                     "properties": {"key": {"type": "string", "minLength": 1},
                                    "data": {"description": "any JSON value; a string is stored as is"},
                                    "requestor": _STRING}},
    "JobLinks": {"type": "object", "required": ["self"],
                 "properties": {"self": _STRING, "cancel": _STRING}},
    "StartedJob": {"type": "object", "required": ["uuid", "process", "key", "status", "links"],
                   "properties": {"uuid": _STRING, "process": _STRING, "key": _STRING,
                                  "status": {"enum": STATES}, "links": _ref("JobLinks")}},
    "Task": {"type": "object",
             "required": ["id", "name", "requestor", "status", "data", "index", "url", "parent"],
             "properties": {"id": {"type": "string", "description": "the task's name in Redis "
                                   "(task.<id>.*): its name, or name#2 for the job's second one"},
                            "name": _STRING, "requestor": _NULLABLE_STRING, "status": _STATUS,
                            "data": {"description": "the activity's answer data, or {error, url}"},
                            "index": _INT, "url": _NULLABLE_STRING,
                            "parent": {"type": ["integer", "null"]}, "duration_ms": _INT}},
    "Job": {"type": "object",
            "required": ["process", "uuid", "key", "data", "requestor", "status", "tasks", "links"],
            "properties": {"process": _STRING, "uuid": _STRING, "key": _STRING,
                           "data": {"description": "the job's data as it was given"},
                           "requestor": _NULLABLE_STRING,
                           "status": _STATUS, "tasks": {"type": "array", "items": _ref("Task")},
                           "errors": _INT, "cancel_requested": _STRING, "links": _ref("JobLinks")}},
    "JobSummary": {"type": "object",
                   "required": ["process", "key", "uuid", "requestor", "status", "scheduled", "links"],
                   "properties": {"process": _STRING, "key": _STRING, "uuid": _STRING,
                                  "requestor": _NULLABLE_STRING, "status": _STATUS, "scheduled": _TIME,
                                  "errors": _INT, "cancel_requested": _STRING,
                                  "links": _ref("JobLinks")}},
    "JobList": {"type": "object", "required": ["process", "jobs", "next_cursor", "links"],
                "properties": {"process": _STRING, "key": _STRING,
                               "jobs": {"type": "array", "items": _ref("JobSummary")},
                               "next_cursor": _NULLABLE_STRING,
                               "links": {"type": "object", "required": ["self"],
                                         "properties": {"self": _STRING, "next": _STRING}}}},
    "Cancel": {"type": "object", "required": ["uuid", "process", "key", "status", "cancel_requested", "links"],
               "properties": {"uuid": _STRING, "process": _STRING, "key": _STRING,
                              "status": {"enum": ["scheduled", "running"]},
                              "cancel_requested": _STRING, "links": _ref("JobLinks")}},
    "Check": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"},
                                                                    "error": _STRING}},
    "Health": {"type": "object", "required": ["status", "redis", "actors"],
               "properties": {"status": {"enum": ["ok", "unavailable"]},
                              "redis": _ref("Check"), "actors": _ref("Check")}},
}

_JOB_PATH = "/api/process/{name}/key/{key}/job/{uuid}"
_CANCEL = {
    "summary": "Cancel a job: no new task starts, running tasks finish or time out, "
               "the job ends `cancelled`",
    "parameters": [_PROCESS, _KEY, _UUID],
    "responses": {"202": _json(_ref("Cancel"), "Cancel recorded"),
                  "404": _error("No such job"),
                  "409": _error("The job already ended (done or cancelled)"),
                  "503": _UNAVAILABLE},
}
_LIST = {"200": _json(_ref("JobList"), "A page of jobs, newest first"),
         "400": _error("A bad status, limit or cursor"),
         "404": _error("A process neither in the catalog nor with any job kept"), "503": _UNAVAILABLE}

_EVENTS = {"description": "An event stream: events with a name, JSON data and an id",
           "content": {"text/event-stream": {"schema": {
               "type": "object", "required": ["event", "data"],
               "properties": {"event": {"enum": ["job", "task", "cancel"]}, "data": _STRING,
                              "id": _STRING, "retry": _INT}}}}}
_JOBS_EVENTS = {"description": "An event stream that lasts until the client goes: `job` events "
                               "with JSON data and an id, and `reset` when changes were dropped",
                "content": {"text/event-stream": {"schema": {
                    "type": "object", "required": ["event", "data"],
                    "properties": {"event": {"enum": ["job", "reset"]}, "data": _STRING,
                                   "id": _STRING, "retry": _INT}}}}}
_PAGE = {"description": "A file of the dashboard",
         "content": {t: {"schema": _STRING} for t in ("text/html", "text/javascript", "text/css", "image/svg+xml")}}

PATHS = {
    "/api": {"get": {"summary": "Banner, version and links (JSON with Accept: application/json)",
                     "responses": {"200": {"description": "The banner",
                                           "content": {"text/plain": {"schema": _STRING},
                                                       "application/json": {"schema": {"type": "object"}}}}}}},
    "/api/health": {"get": {"summary": "Does Redis answer, and is the engine whole and are its jobs moving",
                            "responses": {"200": _json(_ref("Health"), "All is well"),
                                          "503": _json(_ref("Health"), "A part is down: see its error")}}},
    "/api/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
    "/api/process": {"get": {"summary": "The process catalog",
                             "responses": {"200": _json(_ref("Processes"), "The catalog"),
                                           "503": _UNAVAILABLE}}},
    "/api/process/{name}/start": {"post": {
        "summary": "Start a job",
        "parameters": [_PROCESS, {"name": "Idempotency-Key", "in": "header",
                                  "description": "a retry with the same key and body gets the same "
                                                 "job (200) instead of a new one, for idempotency_ttl; "
                                                 "the same key with another body is a 422. A key "
                                                 "belongs to one process and one token name",
                                  "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("StartRequest")}}},
        "responses": {
            "201": _json(_ref("StartedJob"), "Job accepted and stored in Redis", _LOCATION),
            "200": _json(_ref("StartedJob"), "Replay: the job this Idempotency-Key started",
                         {**_LOCATION, "Idempotent-Replayed": {"schema": _STRING}}),
            "400": _error(f"Bad JSON (or nested over {MAX_JSON_DEPTH} deep), a missing field, an empty or "
                          "non-string key or requestor, a field over its size limit or not valid Unicode, "
                          "or a bad Idempotency-Key"),
            "404": _error("No such process"),
            "408": _error("The body did not arrive within web_body_timeout"),
            "413": _error("Body over max_body_bytes"),
            "422": _error("The Idempotency-Key started a job with a different body"),
            "503": _json(_ref("StartUnavailable"),
                         "Redis or the engine's catalog is unavailable (the job was not created), or "
                         "Redis took the start but did not answer in time: `outcome` is `unknown`, "
                         "`uuid` and `links.self` name the job if Redis ran it (retry with the same "
                         "Idempotency-Key, or GET links.self)", {"Retry-After": {"schema": _INT}})}}},
    "/api/process/{name}/job": {"get": {"summary": "The process's jobs",
                                        "parameters": [_PROCESS, *_LISTING], "responses": _LIST}},
    "/api/process/{name}/key/{key}/job": {"get": {"summary": "The jobs of one key",
                                                  "parameters": [_PROCESS, _KEY, *_LISTING],
                                                  "responses": _LIST}},
    _JOB_PATH: {
        "get": {"summary": "A job and its tasks in start order", "parameters": [_PROCESS, _KEY, _UUID],
                "responses": {"200": _json(_ref("Job"), "The job"), "404": _error("No such job"),
                              "503": _UNAVAILABLE}},
        "delete": _CANCEL},
    _JOB_PATH + "/cancel": {"post": _CANCEL},
    "/api/job/{uuid}": {"get": {"summary": "A job found by its uuid alone", "parameters": [_UUID],
                                "responses": {"200": _json(_ref("Job"), "The job"),
                                              "404": _error("No such job"), "503": _UNAVAILABLE}}},
    "/api/job/{uuid}/events": {"get": {
        "summary": "The job's changes as Server-Sent Events (`job`, `task`, `cancel`; JSON data), "
                   "each with an id; the stream ends with the job's final `job` event",
        "parameters": [_UUID, {"name": "Last-Event-ID", "in": "header", "schema": _STRING,
                               "description": "resume after this event"}],
        "responses": {"200": _EVENTS, "400": _error("A Last-Event-ID this server did not hand out"),
                      "404": _error("No such job"), "503": _UNAVAILABLE}}},
    "/api/events": {"get": {
        "summary": "Every job's start and end (`job` events: process, key, uuid, status, time, and "
                   "errors at the end) as Server-Sent Events, each with an id, from now on or after "
                   "Last-Event-ID; a `reset` event when the changes after it are no longer kept (read "
                   "your lists again). The stream lasts until the client goes",
        "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": _STRING,
                        "description": "resume after this event"}],
        "responses": {"200": _JOBS_EVENTS, "400": _error("A Last-Event-ID this server did not hand out"),
                      "503": _UNAVAILABLE}}},
    "/api/process/{name}/counts": {"get": {
        "summary": "How many of the process's jobs are in each state", "parameters": [_PROCESS],
        "responses": {"200": _json({"type": "object", "properties": {s: _INT for s in STATES}},
                                   "Jobs per state"),
                      "404": _error("No such process"), "503": _UNAVAILABLE}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (text format)",
                         "responses": {"200": {"description": "The metrics",
                                               "content": {"text/plain": {"schema": _STRING}}}}}},
    "/": {"get": {"summary": "The dashboard", "responses": {"200": _PAGE}}},
    "/ui/{name}": {"get": {"summary": "The dashboard's files",
                           "parameters": [{"name": "name", "in": "path", "required": True, "schema": _STRING}],
                           "responses": {"200": _PAGE, "404": _error("No such file")}}},
}


_UNAUTHORIZED = {**_error("No valid token in `Authorization: Bearer <token>` (only when the "
                          "server has tokens: CAMERON_API_TOKENS)"),
                 "headers": {"WWW-Authenticate": {"schema": _STRING}}}
#: Open to all: load balancers check it without a token.
OPEN = {"/api/health", "/", "/ui/{name}"}


def document(version: str, config: Config | None = None) -> dict:
    """The document, with the limits `config` sets (the defaults when None)."""
    config = config or Config()
    paths = copy.deepcopy(PATHS)
    for path, operations in paths.items():
        for operation in operations.values():
            if path in OPEN:
                operation["security"] = []
            else:
                operation["responses"]["401"] = _UNAUTHORIZED
    schemas = copy.deepcopy(SCHEMAS)
    sizes = {"key": config.max_key_bytes, "data": config.max_data_bytes,
             "requestor": config.max_requestor_bytes}
    for name, limit in sizes.items():
        schemas["StartRequest"]["properties"][name]["description"] = (
            f"at most {limit} bytes in UTF-8; valid Unicode (no lone surrogate)")
    return {"openapi": "3.1.0",
            "info": {"title": "Cameron Workflow Engine", "version": version,
                     "description": f"Request bodies: at most {config.max_body_bytes} bytes, JSON "
                                    f"nested at most {MAX_JSON_DEPTH} deep. With tokens set, every operation but "
                                    "/api/health needs one."},
            "paths": paths,
            # Either a token or none: the server needs one only when it has tokens.
            "security": [{"bearer": []}, {}],
            "components": {"schemas": schemas,
                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}
