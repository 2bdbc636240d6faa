"""Prometheus metrics: what the runners count, and `GET /metrics`, which sums every process's
counts (prometheus_client's multiprocess mode: each process writes its own file under
`<data_dir>/metrics`) and adds the jobs per state from Redis."""

import glob
import json
import os
import shutil
import time
from pathlib import Path

import redis

from cameron import keys
from cameron import messages as m
from cameron.config import Config, from_env


def directory(config: Config) -> str:
    return str(Path(config.data_dir) / "metrics")


# prometheus_client picks its multiprocess mode when it is imported: the directory must be
# named first, from this process's settings (whatever an inherited variable says): the
# actors and gunicorn workers of one engine share their data_dir.
def _settings() -> Config:
    try:
        return from_env()
    except Exception:  # a bad setting: whoever reads the settings next says so, not this import
        return Config()


os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory(_settings())
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,  # noqa: E402
                               Histogram, generate_latest)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead  # noqa: E402

_CALL_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
_OVERHEAD_BUCKETS = (.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5)

JOBS_STARTED = Counter("cameron_jobs_started", "Jobs a runner started", ["process"])
JOBS_FINISHED = Counter("cameron_jobs_finished", "Jobs that ended, by final state", ["process", "state"])
TASKS_STARTED = Counter("cameron_tasks_started", "Tasks started", ["process"])
TASKS_ENDED = Counter("cameron_tasks_ended", "Tasks that ended, by outcome (done or error)",
                      ["process", "outcome"])
RETRIES = Counter("cameron_retries", "Activity calls made again after a failed attempt", ["process"])
LIMITS = Counter("cameron_limits_hit", "Tasks ended in error by a limit (fanout, depth, response_bytes)",
                 ["process", "limit"])
CALL_SECONDS = Histogram("cameron_activity_call_seconds",
                         "A task's activity call, from its first attempt to its answer (retries "
                         "and their back-off included; 1 ms resolution)", ["process"], buckets=_CALL_BUCKETS)
OVERHEAD_SECONDS = Histogram("cameron_engine_overhead_seconds",
                             "Per task, the engine's share: from the runner starting the task to the "
                             "runner holding its outcome, less the activity call (1 ms resolution)",
                             ["process"], buckets=_OVERHEAD_BUCKETS)
JOBS_IN_FLIGHT = Gauge("cameron_jobs_in_flight", "Jobs the runners are driving", multiprocess_mode="livesum")
TASKS_IN_FLIGHT = Gauge("cameron_tasks_in_flight", "Tasks whose activity call has not ended",
                        multiprocess_mode="livesum")

#: The words of the errors each limit ends a task with.
_LIMIT_WORDS = (("fan-out limit", "fanout"), ("depth limit", "depth"), ("-byte limit", "response_bytes"),
                ("bytes of stored answers", "job_bytes"), ("past its limit of", "tasks"),
                ("not in the allow list", "allow_list"), ("engine's own ports", "allow_list"))


def limit_of(error: str) -> str | None:
    """Which limit a task's error is about, if any."""
    for words, name in _LIMIT_WORDS:
        if words in error:
            return name
    return None


def observe(moments) -> None:
    """Count a runner's job moments (messages.JobStarted, TaskStarted, ...) as they go to Redis."""
    for op in moments:
        kind = type(op)
        process = keys.parse_tag(op.tag)[0]
        if kind is m.TaskStarted:
            TASKS_STARTED.labels(process).inc()
            TASKS_IN_FLIGHT.inc()
        elif kind is m.TaskEnded:
            TASKS_ENDED.labels(process, op.status).inc()
            limit = op.status == keys.TASK_ERROR and limit_of(json.loads(op.data_json)["error"])
            if limit:
                LIMITS.labels(process, limit).inc()
        elif kind is m.JobStarted:
            JOBS_STARTED.labels(process).inc()
        elif kind is m.JobEnded:
            JOBS_FINISHED.labels(process, op.status).inc()


def call_ended(process: str, started: float, duration_ms: int, attempts: int) -> None:
    """A task's call ended: its time, the engine's time around it (since the runner started the
    task at time.monotonic() `started`), its retries."""
    TASKS_IN_FLIGHT.dec()
    call = duration_ms / 1000
    CALL_SECONDS.labels(process).observe(call)
    OVERHEAD_SECONDS.labels(process).observe(max(0.0, time.monotonic() - started - call))
    if attempts > 1:
        RETRIES.labels(process).inc(attempts - 1)


def reset(config: Config):
    """A fresh directory for an engine that starts: counts start from zero, and no file of a
    process of the last run is summed in."""
    path = directory(config)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def _forget_dead(path: str):
    """In-flight gauges of processes that died (a killed runner) must not be summed in."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = int(name.rsplit("_", 1)[1][:-3])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, path)
        except PermissionError:
            pass


class _JobStates:
    """`cameron_jobs{process, state}`: jobs in each state, from the Redis indexes."""

    def __init__(self, jobs):
        self.jobs = jobs

    def collect(self):
        family = GaugeMetricFamily("cameron_jobs", "Jobs in each state, from Redis", labels=["process", "state"])
        try:
            names = [n for n in self.jobs.redis.hkeys(keys.engine_catalog(self.jobs.engine)) if n != " "]
            for name in sorted(names):
                for state, count in self.jobs.count_by_state(name).items():
                    family.add_metric([name, state], count)
        except redis.RedisError:
            return  # the counts of the processes still come
        yield family


class Metrics:
    """`GET /metrics`: the Prometheus text format."""

    def __init__(self, jobs=None, config: Config | None = None):
        self.jobs = jobs
        self.path = directory(config or Config())

    def on_get(self, req, resp):
        path = self.path
        os.makedirs(path, exist_ok=True)
        _forget_dead(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        if self.jobs is not None:
            registry.register(_JobStates(self.jobs))
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(registry)
