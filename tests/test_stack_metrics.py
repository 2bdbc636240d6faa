"""`GET /metrics` through the real stack: Prometheus text that its own parser reads, whose
counts (summed over both runners and served by either gunicorn worker) are the jobs and tasks
the test ran."""

import pytest
from conftest import wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.stack


def scrape(engine) -> dict:
    """{(sample name, frozen labels): value} of one /metrics answer."""
    resp = engine.http.get(f"{engine.base_url}/metrics", timeout=10)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_the_jobs_and_tasks_run(engine):
    before = scrape(engine)
    jobs = 4
    for i in range(jobs):
        engine.run_job("foo", key=f"metrics-{i}")
    flaky = engine.run_job("flaky", key="metrics-flaky")  # two 503s, then an answer
    wide = engine.run_job("toowide", key="metrics-wide")  # 21 next activities: over max_fanout
    assert flaky["tasks"][0]["attempts"] == 3 and wide["errors"] == 1

    # Several scrapes: whichever gunicorn worker answers, the sums are the same.
    for _ in range(4):
        after = scrape(engine)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("cameron_jobs_started_total", process="foo") == jobs
        assert delta("cameron_jobs_finished_total", process="foo", state="done") == jobs
        assert delta("cameron_tasks_started_total", process="foo") == 7 * jobs
        assert delta("cameron_tasks_ended_total", process="foo", outcome="done") == 7 * jobs
        assert delta("cameron_tasks_ended_total", process="foo", outcome="error") == 0
        assert delta("cameron_activity_call_seconds_count", process="foo") == 7 * jobs
        assert delta("cameron_engine_overhead_seconds_count", process="foo") == 7 * jobs
        # (a foo call can take less than the 1 ms resolution; the flaky one's back-offs cannot)
        assert delta("cameron_activity_call_seconds_sum", process="flaky") > 0
        assert delta("cameron_retries_total", process="flaky") == 2
        assert delta("cameron_tasks_ended_total", process="flaky", outcome="done") == 1
        assert delta("cameron_limits_hit_total", process="toowide", limit="fanout") == 1
        assert delta("cameron_tasks_ended_total", process="toowide", outcome="error") == 1
        assert delta("cameron_jobs_finished_total", process="toowide", state="done") == 1
    # The state gauges come from Redis: the same as the listing's indexes.
    counts = engine.http.get(f"{engine.base_url}/api/process/foo/counts", timeout=10).json()
    assert value(after, "cameron_jobs", process="foo", state="done") == counts["done"] >= jobs
    # Nothing runs once the jobs are done (those of earlier tests too, given time).
    def idle():
        now = scrape(engine)
        return value(now, "cameron_jobs_in_flight") == 0 and value(now, "cameron_tasks_in_flight") == 0
    wait_until(idle, 30, "no job or task in flight")


def test_a_task_in_flight_is_counted_while_its_call_lasts(engine):
    # Given a job whose one activity takes 2 s (nothing else ends meanwhile to write the counts)
    before = scrape(engine)
    resp = engine.start_job("slow", key="metrics-in-flight")
    assert resp.status_code == 201
    # Expect it counted as started and in flight while the call lasts, and no longer after
    wait_until(lambda: value(scrape(engine), "cameron_tasks_in_flight") >= 1
               and value(scrape(engine), "cameron_tasks_started_total", process="slow")
               > value(before, "cameron_tasks_started_total", process="slow"), 1.5,
               "the slow task counted in flight before its call ends")
    wait_until(lambda: value(scrape(engine), "cameron_jobs_finished_total", process="slow", state="done")
               > value(before, "cameron_jobs_finished_total", process="slow", state="done"), 15,
               "the slow job counted as finished")
