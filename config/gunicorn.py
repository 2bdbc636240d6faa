"""gunicorn settings for the Cameron API; every value comes from Cameron's own settings
(config/<env>.toml and the CAMERON_* variables)."""

from cameron.config import from_env
from cameron.logs import log_config

_config = from_env()

bind = f"{_config.bind}:{_config.port}"
# Threads, not more processes: a request spends its time waiting on the actors, and each
# worker process joins the actor system once.
worker_class = "gthread"
workers = _config.web_workers
threads = _config.web_threads
backlog = 2048
timeout = _config.web_timeout
graceful_timeout = 10
proc_name = "cameron-api"
# The engine's log format; gunicorn's own lines from WARNING up, no access log (a proxy in
# front keeps one).
logconfig_dict = log_config(_config, extra_loggers={
    "gunicorn.error": {"level": "WARNING", "propagate": True},
    "gunicorn.access": {"level": "WARNING", "propagate": False},
})


def when_ready(server):
    from cameron.actorsys import warn_if_exposed
    warn_if_exposed(server.log, "the API", _config.bind)
