"""Prometheus metrics: what the runners count, and `GET /metrics`, which sums every process's
counts (prometheus_client's multiprocess mode: each process writes its own file under
`<data_dir>/metrics`) and adds the jobs per state from Redis."""

import bisect
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
#: Each histogram's bucket bounds, the last one infinite, as prometheus_client makes them.
_BOUNDS = {CALL_SECONDS: _CALL_BUCKETS + (float("inf"),), OVERHEAD_SECONDS: _OVERHEAD_BUCKETS + (float("inf"),)}
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


class Tally:
    """A runner's counts, written to the metric files in one go by write(): every write of a
    multiprocess metric takes a lock, a getpid() and an mmap write, and a foo job's 7 tasks
    made about 60 of them one by one (about 5 % of the engine's CPU per job with few jobs in
    flight); summed per metric and labels first, a write() writes each once."""

    def __init__(self):
        self.counts = {}  # (metric, label values) -> amount
        self.observed = {}  # (histogram, label values) -> [value observed]

    def pending(self) -> bool:
        """Whether anything is counted and not yet written."""
        return bool(self.counts or self.observed)

    def add(self, metric, labels: tuple = (), amount: float = 1) -> None:
        key = (metric, labels)
        self.counts[key] = self.counts.get(key, 0) + amount

    def observe(self, histogram, labels: tuple, value: float) -> None:
        self.observed.setdefault((histogram, labels), []).append(value)

    def moments(self, moments) -> None:
        """Count job moments (messages.JobStarted, TaskStarted, ...) as they go to Redis."""
        for op in moments:
            kind = type(op)
            if kind is m.TaskStarted:
                self.add(TASKS_STARTED, (keys.parse_tag(op.tag)[0],))
                self.add(TASKS_IN_FLIGHT)
            elif kind is m.TaskEnded:
                process = keys.parse_tag(op.tag)[0]
                self.add(TASKS_ENDED, (process, op.status))
                limit = op.status == keys.TASK_ERROR and limit_of(json.loads(op.data_json)["error"])
                if limit:
                    self.add(LIMITS, (process, limit))
            elif kind is m.JobStarted:
                self.add(JOBS_STARTED, (keys.parse_tag(op.tag)[0],))
            elif kind is m.JobEnded:
                self.add(JOBS_FINISHED, (keys.parse_tag(op.tag)[0], op.status))

    def call_ended(self, process: str, started: float, duration_ms: int, attempts: int) -> None:
        """A task's call ended: its time, the engine's time around it (since the runner started
        the task at time.monotonic() `started`), its retries."""
        self.add(TASKS_IN_FLIGHT, (), -1)
        call = duration_ms / 1000
        self.observe(CALL_SECONDS, (process,), call)
        self.observe(OVERHEAD_SECONDS, (process,), max(0.0, time.monotonic() - started - call))
        if attempts > 1:
            self.add(RETRIES, (process,), attempts - 1)

    def write(self) -> None:
        for (metric, labels), amount in self.counts.items():
            if amount:
                (metric.labels(*labels) if labels else metric).inc(amount)
        for (histogram, labels), values in self.observed.items():
            child = histogram.labels(*labels)
            buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
            if buckets is None or total is None:  # a prometheus_client without these internals
                for value in values:
                    child.observe(value)
                continue
            # What observe() does for each value: its sum, and the first bucket it is <= to.
            total.inc(sum(values))
            bounds, counts = _BOUNDS[histogram], {}
            for value in values:
                i = bisect.bisect_left(bounds, value)
                counts[i] = counts.get(i, 0) + 1
            for i, n in counts.items():
                buckets[i].inc(n)
        self.counts.clear()
        self.observed.clear()


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
