"""gunicorn settings for the Cameron API; every value comes from Cameron's own settings
(config/<env>.toml and the CAMERON_* variables)."""

from cameron.config import from_env
from cameron.logs import log_config

_config = from_env()

bind = f"{_config.bind}:{_config.port}"
# gevent: a connection is a greenlet, not a thread, so clients that send slowly (or never
# finish) cost a little memory instead of a worker's thread; cameron/web_worker.py adds the
# body deadline and JSON answers to malformed requests.
worker_class = "cameron.web_worker.Worker"
workers = _config.web_workers
worker_connections = _config.web_connections
# With gevent, keepalive also bounds the reading of a request's line and headers.
keepalive = _config.web_header_timeout
# The longest request line gunicorn takes: a job path with the longest key (3 × 2048
# URL-encoded bytes) fits.
limit_request_line = 8190
backlog = 2048
timeout = _config.web_timeout
graceful_timeout = 10
proc_name = "cameron-api"
# The engine's log format; gunicorn's own lines from WARNING up, no access log (a proxy in
# front keeps one); the logger class skips making the lines nobody logs.
logger_class = "cameron.web_worker.Logger"
logconfig_dict = log_config(_config, extra_loggers={
    "gunicorn.error": {"level": "WARNING", "propagate": True},
    "gunicorn.access": {"level": "WARNING", "propagate": False},
})


def when_ready(server):
    from cameron.actorsys import warn_if_exposed
    warn_if_exposed(server.log, "the API", _config.bind)
