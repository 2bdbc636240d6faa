"""The benchmark suite runs end to end (`python -m bench --smoke`) and reports every figure;
no timing is asserted: CI machines are too noisy for that."""

import json
import signal
import subprocess
import sys

import pytest

from cameron import actorsys
from cameron.config import ROOT

pytestmark = pytest.mark.stack

FIGURES = ["cores", "hop_overhead_ms", "throughput_jobs_per_s", "limit_calls_per_s",
           "throughput_ratio", "fanout_100x1s_s", "inflight_10000x2s_s", "inflight_rss_mib",
           "accept_rps", "accept_p99_ms", "engine_cpu_ms_per_job", "few_clients_jobs_per_s",
           "few_clients_ratio", "few_clients_cpu_ms_per_job"]


def _stamp(path):
    return path.stat().st_mtime_ns if path.exists() else None


def test_bench_smoke_reports_every_figure_and_stops_its_stack():
    # Where a smoke run writes by default: its own file, never a full run's results.json
    out, full = ROOT / "bench" / "results-smoke.json", ROOT / "bench" / "results.json"
    out.unlink(missing_ok=True)
    full_before = _stamp(full)
    bench = subprocess.Popen([sys.executable, "-m", "bench", "--smoke"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = bench.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # SIGTERM, not kill: the bench then stops the stack it started.
        bench.send_signal(signal.SIGTERM)
        output, _ = bench.communicate(timeout=60)
        pytest.fail(f"bench --smoke still running after 60 s:\n{output}")
    assert bench.returncode == 0, output

    assert _stamp(full) == full_before
    results = json.loads(out.read_text())
    for key in FIGURES:
        assert isinstance(results[key], (int, float)) and not isinstance(results[key], bool), key
    # every figure about calling activities, against each of the three kinds of server
    for server in ("fast", "stdlib", "gunicorn"):
        for key in ("hop_overhead_ms", "throughput_ratio", "vs_requests", "fanout_100x1s_s"):
            assert isinstance(results["servers"][server][key], (int, float)), (server, key)
    assert results["smoke"] is True
    assert results["task_errors"] == 0, output
    assert "hop_overhead_ms" in output  # the table was printed
    assert "<=" not in output and ">=" not in output  # tiny sizes are not held against targets
    left = [pid for pid in results["pids"] if actorsys.alive(pid)]
    assert not left, f"processes the bench started are still running: {left}"
