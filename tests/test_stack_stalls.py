"""A stalled Redis (SIGSTOP of its process, as a stalled host or a long fsync does): every
accepted job still ends done once, every 503'd start is absent or found by its key, answers
stay bounded, and engines sharing the Redis keep their own jobs."""

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from cameron import keys, store
from cameron.redis_server import EmbeddedRedis
from conftest import start_engine, stop_engine, wait_until

pytestmark = pytest.mark.stack

#: Short Redis timeouts, so that a freeze of a second or two is "longer than the timeouts", and
#: a reconciliation every second.
FAST = {"CAMERON_REDIS_TIMEOUT": "0.5", "CAMERON_HEALTH_TIMEOUT": "0.5", "CAMERON_RECONCILE_EVERY": "1"}


@contextmanager
def frozen(redis_server):
    """Redis stopped (not dead: its sockets accept and buffer commands) until the block ends."""
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)


def log_lines(engine) -> list[str]:
    path = Path(engine.config.data_dir) / "log" / "actors.log"
    return path.read_text().splitlines() if path.exists() else []


def job_data_figures(engine) -> dict:
    out = engine.cli("status", "--json")
    actors = json.loads(out.stdout)["actors"]
    return next(a["figures"] for a in actors if a["role"] == "job_data")


def timed(call):
    began = time.monotonic()
    result = call()
    return result, time.monotonic() - began


def start(engine, key, idempotency_key=None, process="foo") -> requests.Response:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return requests.post(f"{engine.base_url}/api/process/{process}/start", headers=headers, timeout=15,
                         json={"key": key, "data": "d", "requestor": "r"})


def answered(url) -> requests.Response:
    """GET, waiting out the 503s of the second or so the engine takes to notice Redis is back."""
    def answer():
        resp = requests.get(url, timeout=15)
        return resp.status_code != 503 and [resp]  # a Response is falsy when it is a 4xx
    return wait_until(answer, 10, f"an answer other than 503 from {url}", interval=0.1)[0]


class KeyedLoad:
    """Starts foo jobs on one engine from a thread, one every 20 ms, each with an
    Idempotency-Key of its own, until stopped; keeps every answer."""

    def __init__(self, engine, name):
        self.engine, self.name, self.answers = engine, name, []  # (key, response or None)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.wait(0.02):
            key = f"{self.name}-{len(self.answers)}"
            try:
                self.answers.append((key, start(self.engine, key, key)))
            except requests.RequestException:
                self.answers.append((key, None))

    def count(self, status):
        return sum(1 for _, resp in self.answers if resp is not None and resp.status_code == status)

    def stop(self):
        self.stopped.set()
        self.thread.join(20)

    def accepted(self) -> list[str]:
        """Every job the load made: each 201's, and each 503'd start's, found by retrying it
        with its key (the same job the 503 named, or a new one if that start never ran)."""
        locations = []
        for key, resp in self.answers:
            assert resp is not None and resp.status_code in (201, 503), resp and resp.text
            if resp.status_code == 503:
                again = start(self.engine, key, key)
                assert again.status_code in (200, 201), again.text
                if again.status_code == 200:
                    assert again.json()["uuid"] == resp.json()["uuid"]
                resp = again
            locations.append(resp.headers["Location"])
        assert len(set(locations)) == len(locations)
        return locations


def assert_done_once(engine, activities, locations, tasks):
    """Each job ends done with every task done, and each task was called exactly once."""
    for location in locations:
        doc = engine.wait_done(location, timeout=40)
        assert [t["status"]["current"] for t in doc["tasks"]] == ["done"] * tasks, doc["tasks"]
        calls = [c["task"] for c in activities.log(doc["uuid"])]
        assert sorted(calls) == sorted(set(calls)) and len(calls) == tasks, calls


@pytest.fixture
def stalling(short_tmp, activities, request):
    """An engine with short Redis timeouts on a Redis of its own, which the test freezes;
    settings of the test's own (indirect parameter) override the FAST ones."""
    tmp = short_tmp / f"s{abs(hash(request.node.name)) % 10**6}"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    try:
        engine, web = start_engine(tmp, redis_server.url, activities,
                                   **{**FAST, **getattr(request, "param", {})})
    except BaseException:
        redis_server.stop()
        raise
    yield engine, redis_server
    try:
        stop_engine(engine, web)
    finally:
        redis_server.stop()


def test_a_freeze_while_the_inbox_is_taken_and_starts_are_in_flight_loses_nothing_and_lies_about_nothing(
        stalling, activities):
    engine, redis_server = stalling
    # Given jobs running (chains of six 0.3 s activities), so writes are due during the freeze
    running = []
    for i in range(5):
        resp = start(engine, f"before-{i}", process="slowchain")
        assert resp.status_code == 201, resp.text
        running.append(resp.headers["Location"])
    seen_lines = len(log_lines(engine))
    answers = {}  # (key, idempotency key) -> (response, seconds)
    # ... and clients already connected to Redis (what is buffered on open connections runs
    # first when Redis wakes, before new connections are even accepted)
    clients = [store.JobStore(store.connect(redis_server.url, timeout=30), engine.config.engine)
               for _ in range(4)]
    for jobs in clients:
        jobs.redis.ping()
    queued = []
    with frozen(redis_server):
        # When jobs are started on those connections while Redis is frozen (they wait in
        # Redis's socket buffers, and are queued on the inbox first thing when it wakes)
        def queue(jobs, i):
            queued.append(jobs.start("foo", f"queued-{i}", "d", "r"))
        queuers = [threading.Thread(target=queue, args=(jobs, i)) for i, jobs in enumerate(clients)]
        for t in queuers:
            t.start()
        # ... and starts come to the API while Redis is frozen: half with an Idempotency-Key
        def post(i):
            ikey = f"stall-{i}" if i % 2 == 0 else None
            answers[(f"during-{i}", ikey)] = timed(lambda: start(engine, f"during-{i}", ikey))
        threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        # ... and the health, a read and the CLI's start are asked for
        health, health_took = timed(lambda: requests.get(f"{engine.base_url}/api/health", timeout=15))
        read, read_took = timed(lambda: requests.get(running[0], timeout=15))
        cli, cli_took = timed(lambda: engine.cli("start-job", "foo", "--key", "by-cli"))
        for t in threads:
            t.join(15)
        # ... and JobData ran a take of the inbox into the frozen Redis (its reply is lost:
        # Redis runs it when it wakes, after the starts queued before it)
        wait_until(lambda: any("inbox not read" in line for line in log_lines(engine)[seen_lines:]),
                   10, "JobData to try the inbox while Redis is frozen", interval=0.1)
    for t in queuers:
        t.join(15)
    for jobs in clients:
        jobs.redis.close()
    assert len(queued) == 4
    accepted = [f"{engine.base_url}/api/job/{job.uuid}" for job in queued]

    # Then every answer came within its bound, not the Redis client's usual 5 s
    assert health.status_code == 503 and health_took < 2, (health.text, health_took)
    assert health.json()["redis"]["ok"] is False
    assert read.status_code == 503 and read_took < 2, (read.text, read_took)
    assert cli.returncode == 1 and cli_took < 10, (cli.stderr, cli_took)
    # ... each 503'd start said its outcome is unknown, and named the job it may have made
    assert len(answers) == 8
    for (key, ikey), (resp, took) in answers.items():
        assert resp.status_code == 503 and took < 3, (resp.text, took)
        assert resp.json()["outcome"] == "unknown" and resp.headers["Retry-After"]

    # Then each 503'd start is either absent or found by its key: a retry with the same
    # Idempotency-Key answers the one job, and without one the named job is there or a 404
    for (key, ikey), (resp, _) in answers.items():
        named = resp.json()["links"]["self"]
        if ikey:
            again = start(engine, key, ikey)
            assert again.status_code in (200, 201), again.text
            if again.status_code == 200:
                assert again.json()["uuid"] == resp.json()["uuid"]  # the 503'd start made it
            else:
                assert answered(named).status_code == 404
            accepted.append(again.headers["Location"])
        else:
            found = answered(named)
            assert found.status_code in (200, 404), found.text
            if found.status_code == 200:
                accepted.append(named)
    # ... (the frozen Redis ran most of them when it woke: a 503 did not mean "not created")
    assert len({loc.rsplit("/", 1)[1] for loc in accepted}) == len(accepted)
    made_while_frozen = [loc for loc in accepted[4:]
                         if answered(loc).json()["uuid"] in
                         {r.json()["uuid"] for r, _ in answers.values()}]
    assert made_while_frozen, "no 503'd start was run by the waking Redis: the test proved nothing"

    # ... the CLI named the key it had used, and running it again with that key finds one job
    assert "--idempotency-key cli-" in cli.stderr, cli.stderr
    ikey = cli.stderr.split("--idempotency-key ", 1)[1].split()[0]
    again = engine.cli("start-job", "foo", "--key", "by-cli", "--idempotency-key", ikey, "--json")
    assert again.returncode == 0, again.stderr
    listed = engine.http.get(f"{engine.base_url}/api/process/foo/key/by-cli/job", timeout=15).json()
    assert [j["uuid"] for j in listed["jobs"]] == [json.loads(again.stdout)["uuid"]]
    accepted.append(f"{engine.base_url}/api/job/{json.loads(again.stdout)['uuid']}")

    # ... and every job, those running before and those accepted around the freeze, ends done
    # with each task called once, without a restart; the inbox and the taking list are empty
    assert_done_once(engine, activities, running, 6)
    assert_done_once(engine, activities, accepted, 7)
    engine_id = engine.config.engine
    wait_until(lambda: not any(engine.redis.exists(k(engine_id)) for k in
                               (keys.engine_inbox, keys.engine_taking, keys.engine_jobs)), 10,
               "the engine's inbox, taking list and job set to empty (the take acknowledged)")
    assert job_data_figures(engine)["disowned"] == 0


# No reconciliation (the taking list alone must recover the take), and a lease renewed every
# 15 s: an idle JobData's first call into the frozen Redis is its look at the inbox, each second.
@pytest.mark.parametrize("stalling", [{"CAMERON_RECONCILE_EVERY": "600", "CAMERON_LEASE_TTL": "60"}],
                         indirect=True)
def test_a_take_of_the_inbox_that_redis_runs_but_never_answers_loses_no_job(stalling, activities):
    engine, redis_server = stalling
    engine.run_job("foo")  # Redis knows the start's script: a start is one command
    clients = [store.JobStore(store.connect(redis_server.url, timeout=30), engine.config.engine)
               for _ in range(4)]
    for jobs in clients:
        jobs.redis.ping()  # connected before the freeze: what they send waits in Redis's buffers
    seen_lines = len(log_lines(engine))
    queued = []
    with frozen(redis_server):
        # Given jobs started while Redis is frozen (queued on the inbox as soon as it wakes)
        threads = [threading.Thread(target=lambda j=jobs, i=i: queued.append(j.start("foo", f"q-{i}", "d", "r")))
                   for i, jobs in enumerate(clients)]
        for t in threads:
            t.start()
        # When JobData's take of the inbox times out: Redis runs it on waking, after those
        # starts, and its reply is lost
        wait_until(lambda: any("inbox not read" in line for line in log_lines(engine)[seen_lines:]),
                   10, "JobData's take to time out", interval=0.1)
    for t in threads:
        t.join(15)
    for jobs in clients:
        jobs.redis.close()
    # Then every one of those jobs runs to done, each task once, without a restart
    assert len(queued) == 4
    assert_done_once(engine, activities, [f"{engine.base_url}/api/job/{job.uuid}" for job in queued], 7)


def test_a_job_the_engine_owns_but_no_runner_drives_is_found_and_run(stalling, activities):
    engine, _ = stalling
    # Given a job in the engine's job set that never reached a runner (as a hand-out whose
    # reply or message was lost would leave it): stored for a name no engine has, then moved
    uuid = store.new_uuid()
    tag = keys.job_tag("foo", "orphan", uuid)
    engine.redis.hset(keys.engine_catalog("nobody:0"), "foo", f"{activities.url}/foo/v0.0.1/start")
    store.JobStore(engine.redis, "nobody:0").start("foo", "orphan", "d", "r", job_id=uuid)
    engine.redis.delete(keys.engine_catalog("nobody:0"))
    engine.redis.smove(keys.engine_jobs("nobody:0"), keys.engine_jobs(engine.config.engine), tag)
    engine.redis.delete(keys.engine_inbox("nobody:0"))
    engine.redis.srem(keys.ENGINES, "nobody:0")
    # Then a reconciliation finds it and the engine runs it, once, without a restart
    assert_done_once(engine, activities, [f"{engine.base_url}/api/job/{uuid}"], 7)
    assert any("driven by no runner" in line for line in log_lines(engine))


def test_two_engines_keep_their_own_jobs_through_a_freeze_longer_than_the_lease(short_tmp, activities):
    tmp = short_tmp / "stall2"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    engines = []
    try:
        # Given two engines sharing one Redis, with leases of 1 s (renewed every 0.25 s)
        for name in ("a", "b"):
            engines.append(start_engine(tmp / name, redis_server.url, activities,
                                        CAMERON_LEASE_TTL="1", **FAST))
        (a, _), (b, _) = engines
        # ... each running chains of six 0.3 s activities
        locations = {}
        for engine in (a, b):
            locations[engine] = [engine.start_job("slowchain", key=f"two-{i}").headers["Location"]
                                 for i in range(4)]
        uuids = {loc.rsplit("/", 1)[1] for locs in locations.values() for loc in locs}
        wait_until(lambda: sum(1 for c in activities.log() if c["job"] in uuids) >= 8, 15,
                   "the jobs to be under way")
        # ... and a stream of foo jobs started on each (writes, ends and takes in flight)
        loads = {a: KeyedLoad(a, "la"), b: KeyedLoad(b, "lb")}
        try:
            wait_until(lambda: all(load.count(201) >= 10 for load in loads.values()), 20,
                       "the loads to get going")
            # When Redis freezes for more than twice the lease: every lease expires meanwhile
            with frozen(redis_server):
                time.sleep(2.5)  # the length of the stall under test, not a wait for an outcome
            counts = {engine: load.count(201) for engine, load in loads.items()}
            wait_until(lambda: all(load.count(201) >= counts[e] + 10 for e, load in loads.items()), 20,
                       "starts to be accepted again")
        finally:
            for load in loads.values():
                load.stop()
        # Then no engine took the other's jobs: each job is done, each task called once, and
        # every start is one job (a 503'd one found again by its key)
        for engine in (a, b):
            assert_done_once(engine, activities, locations[engine], 6)
            assert_done_once(engine, activities, loads[engine].accepted(), 7)
        # ... no engine reports a job disowned (nobody took one), though each checked every
        # write after the stall (its lease had lapsed meanwhile), and both are still engines
        for engine in (a, b):
            figures = job_data_figures(engine)
            assert figures["disowned"] == 0 and figures["fenced"] is True, figures
        assert a.redis.smembers(keys.ENGINES) == {a.config.engine, b.config.engine}
    finally:
        for engine, web in engines:
            stop_engine(engine, web)
        redis_server.stop()
