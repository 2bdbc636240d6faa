"""A runner's metric tally: what it writes in one go reads back exactly as the same counts and
observations written one by one would (prometheus_client's multiprocess files, summed as
`GET /metrics` sums them)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, time
    from cameron import keys, metrics, messages as m  # first: it sets prometheus_client's mode
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    def tag(process):
        return f"{keys.PREFIX}:process:{process}:key:k:job:{'a' * 32}"

    def moments(process):
        error = json.dumps({"error": "answered 21 next activities, over the fan-out limit of 20"})
        return [m.JobStarted(tag(process), time=""),
                *[m.TaskStarted(tag(process), n=i, id=f"t{i}", name=f"t{i}", url="", requestor="",
                                parent=-1, parent_id="", tasks_csv="", time="") for i in range(3)],
                m.TaskEnded(tag(process), n=0, id="t0", status=keys.TASK_DONE, data_json="{}",
                            next_json="undefined", time="", duration_ms=0),
                m.TaskEnded(tag(process), n=1, id="t1", status=keys.TASK_ERROR, data_json=error,
                            next_json="undefined", time="", duration_ms=0)]

    # calls of 0, 1, 3, 30 and 100 ms; the last with retries
    calls = [(0, 1), (1, 1), (3, 1), (30, 1), (100, 3)]
    # One by one with prometheus_client's own inc() and observe(): process "one"
    started = time.monotonic()
    for metric in (metrics.TASKS_STARTED, metrics.TASKS_STARTED, metrics.TASKS_STARTED, metrics.JOBS_STARTED):
        metric.labels("one").inc()
    metrics.TASKS_ENDED.labels("one", keys.TASK_DONE).inc()
    metrics.TASKS_ENDED.labels("one", keys.TASK_ERROR).inc()
    metrics.LIMITS.labels("one", "fanout").inc()
    for ms, attempts in calls:
        metrics.CALL_SECONDS.labels("one").observe(ms / 1000)
        metrics.OVERHEAD_SECONDS.labels("one").observe(0.0)
        if attempts > 1:
            metrics.RETRIES.labels("one").inc(attempts - 1)
    # All in one tally: process "all"
    tally = metrics.Tally()
    tally.moments(moments("all"))
    for ms, attempts in calls:
        tally.call_ended("all", started, ms, attempts)
    tally.write()
    assert not tally.counts and not tally.observed  # written, and nothing left to write again

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    samples = {}
    for family in registry.collect():
        for s in family.samples:
            labels = dict(s.labels)
            process = labels.pop("process", None)
            if process in ("one", "all"):
                name = (s.name, tuple(sorted(labels.items())))
                samples.setdefault(name, {})[process] = s.value
            elif s.name == "cameron_tasks_in_flight":
                samples[("in_flight", ())] = {"one": s.value, "all": s.value}
    print(json.dumps([[list(k), v] for k, v in samples.items()]))
""")


def test_a_tally_written_at_once_reads_back_as_the_same_counts_written_one_by_one(tmp_path):
    env = dict(os.environ, CAMERON_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import json
    samples = {(name, tuple(map(tuple, labels))): v for (name, labels), v in json.loads(out.stdout)}

    def both(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    # Counters: the same, and what the moments said
    assert both("cameron_tasks_started_total") == {"one": 3, "all": 3}
    assert both("cameron_tasks_ended_total", outcome="error") == {"one": 1, "all": 1}
    assert both("cameron_limits_hit_total", limit="fanout") == {"one": 1, "all": 1}
    assert both("cameron_jobs_started_total") == {"one": 1, "all": 1}
    assert both("cameron_retries_total") == {"one": 2, "all": 2}
    # Histograms: every bucket, the count and the sum the same
    buckets = [k for k in samples if k[0] == "cameron_activity_call_seconds_bucket"]
    assert len(buckets) == 16
    for name, labels in buckets + [("cameron_activity_call_seconds_count", ()),
                                   ("cameron_engine_overhead_seconds_count", ())]:
        value = samples[(name, labels)]
        assert value["one"] == value["all"], (name, labels, value)
    assert both("cameron_activity_call_seconds_bucket", le="0.001") == {"one": 2, "all": 2}
    assert both("cameron_activity_call_seconds_bucket", le="0.05") == {"one": 4, "all": 4}
    assert both("cameron_activity_call_seconds_count") == {"one": 5, "all": 5}
    total = both("cameron_activity_call_seconds_sum")
    assert abs(total["one"] - 0.134) < 1e-9 and abs(total["all"] - 0.134) < 1e-9
    # The in-flight gauge: the tally's 3 started less 5 ended
    assert samples[("in_flight", ())]["one"] == -2
