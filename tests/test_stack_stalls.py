"""A stalled Redis (SIGSTOP of its process, as a stalled host or a long fsync does): every
accepted job still ends done once, every 503'd start is absent or found by its key, answers
stay bounded, and engines sharing the Redis keep their own jobs."""

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
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
def frozen(redis_server, taking=None):
    """Redis stopped (not dead: its sockets accept and buffer commands) until the block ends.
    `taking` (engine -> its JobData's pid): each of those JobData sends a take of its inbox
    into the frozen Redis; it is paused (SIGSTOP, a millisecond) while Redis sends it the
    wake-up each start publishes, and resumed once Redis is stopped."""
    taking = taking or {}
    pids = list(taking.values())
    client = store.connect(redis_server.url)
    client.ping()
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            pipe = client.pipeline(transaction=False)
            for engine in taking:
                pipe.publish(keys.engine_inbox(engine.config.engine), "")
            pipe.execute()
            client.ping()  # answered once Redis has written the wake-ups out
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            client.close()
        yield
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)


def log_lines(engine) -> list[str]:
    path = Path(engine.config.data_dir) / "log" / "actors.log"
    return path.read_text().splitlines() if path.exists() else []


def job_data(engine) -> dict:
    """JobData's row in `cameron status`: its pid and its figures."""
    out = engine.cli("status", "--json")
    return next(a for a in json.loads(out.stdout)["actors"] if a["role"] == "job_data")


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
            locations.append(found(self.engine, key, key, resp) if resp.status_code == 503
                             else resp.headers["Location"])
        assert len(set(locations)) == len(locations)
        return locations


def found(engine, key, idempotency_key, resp) -> str | None:
    """The job a 503'd start made, found as its answer says (the address of the job, or None
    when there is none): with its Idempotency-Key, a retry answers that one job (200) or
    creates it now (201, the job the 503 named being absent); without one, the named job is
    there or a 404."""
    named = resp.json().get("links", {}).get("self")  # none when the job was surely not created
    if idempotency_key:
        again = start(engine, key, idempotency_key)
        assert again.status_code in (200, 201), again.text
        if again.status_code == 200:
            assert again.json()["uuid"] == resp.json()["uuid"]  # the 503'd start made it
        elif named:
            assert answered(named).status_code == 404
        return again.headers["Location"]
    if named is None:
        return None
    there = answered(named)
    assert there.status_code in (200, 404), there.text
    return named if there.status_code == 200 else None


def assert_done_once(engine, activities, locations, tasks):
    """Each job ends done with every task done, and each task was called exactly once."""
    for location in locations:
        doc = engine.wait_done(location, timeout=40)
        assert [t["status"]["current"] for t in doc["tasks"]] == ["done"] * tasks, doc["tasks"]
        calls = [c["task"] for c in activities.log(doc["uuid"])]
        assert sorted(calls) == sorted(set(calls)) and len(calls) == tasks, calls


def assert_nothing_left(engine):
    """The engine's inbox, taking list and job set end empty (every take acknowledged, every
    job it owns finished), and it reports no job disowned."""
    engine_id = engine.config.engine
    wait_until(lambda: not any(engine.redis.exists(k(engine_id)) for k in
                               (keys.engine_inbox, keys.engine_taking, keys.engine_jobs)), 10,
               "the engine's inbox, taking list and job set to empty (the take acknowledged)")
    assert job_data(engine)["figures"]["disowned"] == 0


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
        location = found(engine, key, ikey, resp)
        if location:
            accepted.append(location)
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
    assert_nothing_left(engine)


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
    owned = time.monotonic()
    engine.redis.delete(keys.engine_inbox("nobody:0"))
    engine.redis.srem(keys.ENGINES, "nobody:0")
    # Then a reconciliation finds it and the engine runs it, once, without a restart, within
    # reconcile_every and a hand-out (which, with the job's seven calls, take a few tenths of
    # a second: the other 2 s of slack are for two cores shared with other work)
    assert_done_once(engine, activities, [f"{engine.base_url}/api/job/{uuid}"], 7)
    took = time.monotonic() - owned
    assert took < engine.config.reconcile_every + 2, took
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
            figures = job_data(engine)["figures"]
            assert figures["disowned"] == 0 and figures["fenced"] is True, figures
        assert a.redis.smembers(keys.ENGINES) == {a.config.engine, b.config.engine}
    finally:
        for engine, web in engines:
            stop_engine(engine, web)
        redis_server.stop()


#: Slack on the answers' bounds below (health, reads, starts during a freeze): two cores shared
#: with other work may keep a worker waiting its turn for a few hundred ms.
SLACK = 1.5


@pytest.fixture(scope="module")
def sharing(short_tmp, activities):
    """Two engines with the default settings sharing a Redis of their own, which the tests
    freeze; kept for the module's freezes, each of which leaves nothing behind."""
    tmp = short_tmp / "sharing"
    with ExitStack() as stack:
        redis_server = EmbeddedRedis(str(tmp / "data")).start()
        stack.callback(redis_server.stop)
        engines = []
        for name in ("a", "b"):
            engine, web = start_engine(tmp / name, redis_server.url, activities)
            stack.callback(stop_engine, engine, web)
            engines.append(engine)
        yield engines, redis_server


@pytest.mark.parametrize("seconds", [3, 7, 12])
def test_a_freeze_of_3_7_or_12_s_with_the_default_timeouts_loses_nothing_on_either_engine(
        sharing, activities, seconds):
    """Redis freezes for 3, 7 and 12 s under the default timeouts: past redis_timeout (2 s)
    and a lease renewal (every 2.5 s) each time, past lease_ttl (10 s) at 12 s. Each freeze
    catches, on each engine, JobData's take of its inbox (woken as Redis stops, as a start
    wakes it, JobData sends the take into the frozen Redis, gives its reply up after
    redis_timeout, and Redis runs it on waking), starts queued in Redis's buffers meanwhile
    (on the inbox as it wakes), starts in flight through the API with and without an
    Idempotency-Key, and jobs whose tasks end and whose children are called meanwhile.

    Two engines share the Redis in all three freezes, and every assertion is made per
    engine: each engine's take, starts, jobs and lease are its own, so each engine is the
    one-engine case too, and what only two can get wrong (one taking the other's jobs once
    both leases lapsed) is checked on top. A lone engine has no path of its own here (its
    lease watch merely has nobody to watch), and a one-engine set-up beside would cost the
    suite these freezes' ~22 s again. reconcile_every keeps its default, 10 s."""
    engines, redis_server = sharing
    config = engines[0].config
    assert (config.redis_timeout, config.health_timeout, config.lease_ttl, config.reconcile_every) == (2, 1, 10, 10)
    names = dict(zip(engines, ("a", "b")))
    tag = f"f{seconds}"
    job_data_pids = {e: job_data(e)["pid"] for e in engines}
    # Given on each engine jobs under way whose first task (1.5 s) ends during the freeze:
    # its writes, and its three children's calls and writes, are due then
    running = {e: [start(e, f"{tag}-run-{i}", process="delayed") for i in range(2)] for e in engines}
    assert all(r.status_code == 201 for rs in running.values() for r in rs)
    running = {e: [r.headers["Location"] for r in rs] for e, rs in running.items()}

    def under_way():
        docs = [e.http.get(loc, timeout=15).json() for e, locs in running.items() for loc in locs]
        return all(doc["tasks"] and doc["tasks"][0]["status"]["current"] == "running" for doc in docs)
    wait_until(under_way, 15, "the first tasks to be running, and written")
    # ... and clients already connected to Redis (what they send waits in its buffers)
    clients = {e: [store.JobStore(store.connect(redis_server.url, timeout=30), e.config.engine)
                   for _ in range(2)] for e in engines}
    for jobs in (j for js in clients.values() for j in js):
        jobs.redis.ping()
    seen = {e: len(log_lines(e)) for e in engines}
    loads = {}
    pool = ThreadPoolExecutor(12)
    try:
        with frozen(redis_server, taking=job_data_pids):
            froze = time.monotonic()
            # When, while Redis is frozen, jobs are started on those connections
            queued = {e: [pool.submit(jobs.start, "foo", f"{tag}-queued-{names[e]}{i}", "d", "r")
                          for i, jobs in enumerate(clients[e])] for e in engines}
            # ... starts come to each API without an Idempotency-Key, and a stream with one
            bare = {e: [(key, pool.submit(timed, partial(start, e, key)))
                        for key in (f"{tag}-bare-{names[e]}{i}" for i in range(2))] for e in engines}
            loads = {e: KeyedLoad(e, f"{tag}-keyed-{names[e]}") for e in engines}
            # ... and each engine is asked for its health and for a job
            health = {e: pool.submit(timed, partial(requests.get, f"{e.base_url}/api/health", timeout=15))
                      for e in engines}
            reads = {e: pool.submit(timed, partial(requests.get, running[e][0], timeout=15)) for e in engines}
            # ... and each JobData's take, sent into the frozen Redis, times out
            wait_until(lambda: all(any("inbox not read" in line for line in log_lines(e)[seen[e]:])
                                   for e in engines),
                       froze + seconds - time.monotonic(), "each JobData's take to time out in the freeze",
                       interval=0.1)
            time.sleep(max(0.0, froze + seconds - time.monotonic()))  # the stall under test
        woke = time.monotonic()
        queued = {e: [f.result(15) for f in fs] for e, fs in queued.items()}
        bare = {e: [(key, *f.result(15)) for key, f in fs] for e, fs in bare.items()}
        health = {e: f.result(15) for e, f in health.items()}
        reads = {e: f.result(15) for e, f in reads.items()}
        counts = {e: load.count(201) for e, load in loads.items()}
        wait_until(lambda: all(load.count(201) >= counts[e] + 3 for e, load in loads.items()), 20,
                   "starts to be accepted again")
    finally:
        for load in loads.values():
            load.stop()
        pool.shutdown()
        for jobs in (j for js in clients.values() for j in js):
            jobs.redis.close()

    # Then each engine answered within its bounds while Redis was frozen: health within
    # health_timeout, a read and each start within redis_timeout, and each 503'd start said
    # its outcome is unknown
    for e in engines:
        (resp, took) = health[e]
        assert resp.status_code == 503 and took < config.health_timeout + SLACK, (resp.text, took)
        (resp, took) = reads[e]
        assert resp.status_code == 503 and took < config.redis_timeout + SLACK, (resp.text, took)
        for key, resp, took in bare[e]:
            assert resp.status_code == 503 and took < config.redis_timeout + SLACK, (resp.text, took)
        assert loads[e].count(503) >= 1, "no keyed start was in flight during the freeze"
        for key, resp, _ in bare[e]:
            assert resp.json()["outcome"] == "unknown" and resp.headers["Retry-After"], resp.text
        for key, resp in loads[e].answers:
            if resp is not None and resp.status_code == 503:
                assert resp.json()["outcome"] == "unknown", resp.text

    # Then every job each engine owned when Redis woke runs, each task once, within
    # reconcile_every of the engine seeing Redis again (its probe, every redis_timeout): the
    # jobs under way, the queued ones, and those the 503'd starts made (the waking Redis ran
    # them: a 503 does not mean "not created"); the 3 s of slack are for the hand-out, the
    # jobs' calls and the polling, on two shared cores
    unknown = {e: [(key, resp) for key, resp, _ in bare[e]]
               + [(key, resp) for key, resp in loads[e].answers if resp is not None and resp.status_code == 503]
               for e in engines}
    made = {}
    for e in engines:
        made[e] = []
        for key, resp in unknown[e]:
            there = answered(resp.json()["links"]["self"])
            assert there.status_code in (200, 404), there.text
            if there.status_code == 200:
                made[e].append(resp.json()["links"]["self"])
    for e in engines:
        assert_done_once(e, activities, running[e], 4)
        assert_done_once(e, activities, [f"{e.base_url}/api/job/{job.uuid}" for job in queued[e]] + made[e], 7)
    ran_within = time.monotonic() - woke
    assert ran_within < config.redis_timeout + config.reconcile_every + 3, ran_within

    # ... each 503'd start is either absent or found by its key, and every job accepted
    # around the freeze ends done, each task called once
    for e in engines:
        accepted = loads[e].accepted() + [loc for key, resp, _ in bare[e] if (loc := found(e, key, None, resp))]
        assert_done_once(e, activities, accepted, 7)
        print(f"freeze {seconds} s, engine {names[e]}: {len(unknown[e])} starts answered 503 (outcome "
              f"unknown), {len(made[e])} of them made by the waking Redis; {len(queued[e])} queued in its "
              f"buffers, {loads[e].count(201)} keyed starts answered 201 after; every job owned at waking "
              f"done {ran_within:.1f} s after it; health {health[e][1]:.2f} s, read {reads[e][1]:.2f} s")

    # ... nothing is left on an inbox, a taking list or a job set, no engine reports a job
    # disowned or took the other's jobs, and both are still engines; past lease_ttl, each
    # checked its writes after the stall (its lease may have lapsed)
    for e in engines:
        assert_nothing_left(e)
        assert not any("took over" in line for line in log_lines(e)[seen[e]:])
        if seconds > config.lease_ttl:
            assert job_data(e)["figures"]["fenced"] is True
    assert engines[0].redis.smembers(keys.ENGINES) == {e.config.engine for e in engines}
