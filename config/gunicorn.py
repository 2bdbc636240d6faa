"""gunicorn settings for the Cameron API; every value comes from Cameron's own settings."""

from cameron.config import from_env

_config = from_env()

bind = f"{_config.bind}:{_config.port}"
# Threads, not more processes: a request spends its time waiting on the actors, and each
# worker process joins the actor system once.
worker_class = "gthread"
workers = _config.web_workers
threads = _config.web_threads
backlog = 2048
timeout = 60
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = "warning"
proc_name = "cameron-api"
