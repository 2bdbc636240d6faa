"""A bounded chaos run through the real stack (bench/chaos.py, which `python -m bench.chaos`
runs for ten minutes): load from several clients, a `kill -9` every 2-4 s of the Supervisor,
a runner, JobData, the scheduler or the catalog, a TaskActor or a gunicorn worker in turn,
Redis paused once, and no help from outside."""

import pytest

from bench import chaos

pytestmark = pytest.mark.stack


def test_under_chaos_every_job_ends_no_finished_task_is_called_and_no_process_is_lost():
    counts = chaos.run(seconds=30, clients=4, say=lambda text: None)
    assert counts["accepted"] > 100 and sum(counts["kills"].values()) >= 8, counts
    assert counts["unfinished_jobs"] == 0, counts
    assert counts["tasks_not_final"] == 0, counts
    assert counts["processes_after"] == counts["processes_before"], counts
    assert counts["finished_task_calls"] == 0, counts["first_finished_task_calls"]
