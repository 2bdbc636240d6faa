"""Killing real engine processes mid-job: every accepted job still ends done."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from cameron import actorsys, keeper, keys, store
from cameron.redis_server import EmbeddedRedis
from conftest import start_engine, start_web, stop_engine, wait_until

pytestmark = pytest.mark.stack

SLOW_PATH = "/lab/sleep/2000"


@pytest.fixture
def own_engine(short_tmp, activities, request):
    """A disposable engine with a Redis of its own: these tests kill its processes, and its
    boot-time recovery must not touch other engines' jobs."""
    tmp = short_tmp / f"f{abs(hash(request.node.name)) % 10**6}"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    engine, engine.web = start_engine(tmp, redis_server.url, activities)
    yield engine
    try:
        stop_engine(engine, engine.web)
    finally:
        redis_server.stop()


def actor_pids(engine) -> dict:
    """Role -> pid of the actors that answer `cameron status` (a dead one has no pid)."""
    out = engine.cli("status", "--json")
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return {a["role"]: a.get("pid") for a in json.loads(out.stdout)["actors"]}


def start_slow_jobs(engine, activities, count: int) -> list[str]:
    before = activities.calls().get(SLOW_PATH, 0)
    locations = []
    for i in range(count):
        resp = engine.start_job("slow", key=f"victim-{i}")
        assert resp.status_code == 201
        locations.append(resp.headers["Location"])
    wait_until(lambda: activities.calls().get(SLOW_PATH, 0) - before >= count, 15,
               "every slow job's activity call to be in flight")
    return locations


def assert_all_done_once(engine, locations):
    for location in locations:
        doc = engine.wait_done(location, timeout=30)
        assert [t["status"]["current"] for t in doc["tasks"]] == ["done"], doc["tasks"]


def assert_calls_made_again_say_so(activities, jobs: dict, at_least: int = 0):
    """A call made again (not a retry within one call) of a task Redis recorded running when an
    engine part died carries X-Cameron-Again. `jobs`: job uuid -> those tasks (`n:id`, as
    X-Cameron-Task names them), or None for all of the job's. (A task whose start had not yet
    reached Redis may be called again unmarked: the engine cannot know.)"""
    repeats = 0
    for job, running in jobs.items():
        called = set()
        for call in activities.log(job):
            if call["attempt"] != 1:
                continue  # a retry within one call: X-Cameron-Attempt says so
            if call["task"] in called and (running is None or call["task"] in running):
                assert call["again"], (job, call)
                repeats += 1
            called.add(call["task"])
    assert repeats >= at_least, repeats


def running_tasks(engine, locations) -> dict:
    """Job uuid -> the tasks Redis records running (`n:id`), for the jobs at `locations`."""
    found = {}
    for location in locations:
        h = engine.job_hash(engine.http.get(location, timeout=5).json())
        found[location.rsplit("/", 1)[1]] = {f"{t['n']}:{t['id']}" for t in store.tasks_of(h)
                                             if t["status"] == "running"}
    return found


def test_jobs_survive_a_killed_task_actor(own_engine, activities):
    locations = start_slow_jobs(own_engine, activities, 10)
    for role, pid in actor_pids(own_engine).items():
        if role.startswith("runner:"):
            for task_actor in actorsys.children(pid):
                os.kill(task_actor, signal.SIGKILL)
    assert_all_done_once(own_engine, locations)
    # Each call in flight was made again, and said so.
    assert_calls_made_again_say_so(activities, {loc.rsplit("/", 1)[1]: None for loc in locations}, at_least=10)


def test_jobs_survive_killed_job_runners(own_engine, activities):
    locations = start_slow_jobs(own_engine, activities, 10)
    wait_until(lambda: all(running_tasks(own_engine, locations).values()), 10, "the calls recorded running")
    pids = actor_pids(own_engine)
    for role, pid in pids.items():
        if role.startswith("runner:"):
            os.kill(pid, signal.SIGKILL)
    # The supervisor replaced them, and the new runners took the jobs over from Redis.
    def replaced():
        now = actor_pids(own_engine)
        return all(now[r] not in (None, pids[r]) for r in pids if r.startswith("runner:"))
    wait_until(replaced, 15, "new runners", interval=0.2)
    assert_all_done_once(own_engine, locations)
    assert_calls_made_again_say_so(activities, {loc.rsplit("/", 1)[1]: None for loc in locations}, at_least=10)


def test_unfinished_jobs_resume_after_the_admin_is_killed_and_the_engine_restarted(own_engine, activities):
    locations = start_slow_jobs(own_engine, activities, 10)
    config = own_engine.config
    sid, admin = map(int, actorsys._pidfile(config).read_text().split())
    keeper_pid = keeper.running_pid(config)
    assert keeper_pid
    # kill -9 of the admin: its actors die with it (linked), its logger is left holding the
    # port until cleared, and the keeper, with no system left to keep, ends by itself.
    os.kill(admin, signal.SIGKILL)
    wait_until(lambda: not actorsys.alive(keeper_pid), 10, "the keeper to end with its engine")
    restarted = own_engine.cli("start")
    assert restarted.returncode == 0, restarted.stderr
    assert "left by an engine that died" in restarted.stderr
    assert_all_done_once(own_engine, locations)


def kill_engine(engine, web):
    """kill -9 of every process of one engine: its actors, its admin, its keeper and gunicorn."""
    pids = actorsys.system_pids(engine.config)
    assert pids
    for pid in [web.pid] + actorsys.children(web.pid) + pids + [keeper.running_pid(engine.config)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    web.wait()
    actorsys.kill_and_wait(pids, engine.config)


def test_two_engines_on_one_redis_never_run_the_same_job_and_the_survivor_takes_over(short_tmp, activities):
    tmp = short_tmp / "lease"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    engines = []
    try:
        # Given two engines sharing one Redis, with leases of 1 s (renewed every 0.25 s)
        for name in ("a", "b"):
            engines.append(start_engine(tmp / name, redis_server.url, activities, CAMERON_LEASE_TTL="1"))
        (a, web_a), (b, web_b) = engines
        # When A runs jobs of 2 s, eight of B's lease checks long
        first = start_slow_jobs(a, activities, 5)
        assert_all_done_once(a, first)
        # Then B took none of them: each job's one task was called exactly once
        for location in first:
            assert len(activities.log(location.rsplit("/", 1)[1])) == 1

        # When A dies hard with jobs in flight
        second = start_slow_jobs(a, activities, 5)
        kill_engine(a, web_a)
        engines.remove((a, web_a))
        # Then B takes them over once A's lease expires, and ends them all
        for location in second:
            doc = b.wait_done(location.replace(a.base_url, b.base_url), timeout=30)
            assert [t["status"]["current"] for t in doc["tasks"]] == ["done"]
        assert not b.redis.exists(keys.engine_jobs(a.config.engine))
        assert b.redis.smembers(keys.ENGINES) == {b.config.engine}
        assert b.redis.scard(keys.engine_jobs(b.config.engine)) == 0
    finally:
        for engine, web in engines:
            stop_engine(engine, web)
        redis_server.stop()


class Load:
    """Starts foo jobs from a thread, about a hundred a second, until stopped (or 3,000 jobs);
    keeps every answer."""

    def __init__(self, engine, process="foo"):
        self.engine, self.process, self.answers = engine, process, []
        self.stopped = threading.Event()
        self.http = requests.Session()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.wait(0.01) and len(self.answers) < 3000:
            started = time.monotonic()
            try:
                resp = self.http.post(f"{self.engine.base_url}/api/process/{self.process}/start",
                                      json={"key": f"load-{len(self.answers)}", "data": "d", "requestor": "r"},
                                      timeout=15)
            except requests.RequestException:
                resp = None  # the engine was killed under us: no answer, so no promise made
            self.answers.append((resp, time.monotonic() - started))

    def count(self, status):
        return sum(1 for resp, _ in self.answers if resp is not None and resp.status_code == status)

    def stop(self):
        self.stopped.set()
        self.thread.join(20)


def test_while_redis_is_down_starts_get_a_fast_503_and_nothing_accepted_is_lost(short_tmp, activities):
    tmp = short_tmp / "redisdown"
    redis_server = EmbeddedRedis(str(tmp / "data")).start()
    engine, web = start_engine(tmp, redis_server.url, activities)
    load = None
    try:
        pids = actor_pids(engine)
        # Given slow jobs in flight and a steady stream of new foo jobs
        slow = start_slow_jobs(engine, activities, 5)
        load = Load(engine)
        wait_until(lambda: load.count(201) >= 20, 20, "the load to get going")
        # When Redis stops (the slow jobs end while it is down)
        redis_server.stop()
        down_at = len(load.answers)
        wait_until(lambda: load.count(503) >= 10, 20, "starts to be refused with 503")
        job_read = engine.http.get(slow[0], timeout=15)
        # ... for a few seconds
        time.sleep(2.5)  # a deliberate outage, not a wait for a condition
        redis_server.start()
        # Then new jobs are accepted again, without restarting anything
        accepted_before = load.count(201)
        wait_until(lambda: load.count(201) > accepted_before + 20, 30, "starts to be accepted again")
        load.stop()

        refused = [(resp, took) for resp, took in load.answers[down_at:] if resp.status_code == 503]
        assert refused and all(took < 3 for _, took in refused), [took for _, took in refused][:5]
        for resp, _ in refused[:3]:
            assert resp.headers["Retry-After"] and "unavailable" in resp.json()["description"]
        assert {resp.status_code for resp, _ in load.answers} <= {201, 503}
        assert job_read.status_code == 503 and job_read.headers["Retry-After"]
        # ... and every job that got a 201, before, during and after, ends done
        for location in slow + [resp.headers["Location"] for resp, _ in load.answers
                                if resp.status_code == 201]:
            doc = engine.wait_done(location, timeout=30)
            assert {t["status"]["current"] for t in doc["tasks"]} == {"done"}, doc
        assert actor_pids(engine) == pids
    finally:
        if load:
            load.stop()
        stop_engine(engine, web)
        redis_server.stop()


def start_jobs(engine, process, count) -> list[str]:
    locations = []
    for i in range(count):
        resp = engine.start_job(process, key=f"{process}-{i}")
        assert resp.status_code == 201, resp.text
        locations.append(resp.headers["Location"])
    return locations


def assert_each_task_done_once(engine, locations, tasks_per_job):
    for location in locations:
        doc = engine.wait_done(location, timeout=60)
        assert [t["status"]["current"] for t in doc["tasks"]] == ["done"] * tasks_per_job, doc["tasks"]
        assert [t["index"] for t in doc["tasks"]] == list(range(tasks_per_job))


@pytest.mark.parametrize("victim", ["runner", "task_actor"])
def test_100_jobs_end_done_while_runners_or_task_actors_are_killed_again_and_again(own_engine, activities, victim):
    # Given 100 jobs of a start and five 2 s children
    locations = start_jobs(own_engine, "wider", 100)
    unfinished = lambda: own_engine.redis.scard(keys.engine_jobs(own_engine.config.engine))  # noqa: E731
    # When, every 0.7 s while jobs are unfinished, one runner (or one runner's TaskActor) is
    # killed: at most 4 kills of one runner within 10 s, under the restart limit of 5
    kills = 0
    while kills < 8 and unfinished():
        runners = {r: p for r, p in actor_pids(own_engine).items() if r.startswith("runner:") and p}
        role = sorted(runners)[kills % len(runners)]
        targets = [runners[role]] if victim == "runner" else actorsys.children(runners[role])
        for pid in targets:
            os.kill(pid, signal.SIGKILL)
            kills += 1
        time.sleep(0.7)  # the pace of the kills, not a wait for an outcome
    assert kills >= 3, "the jobs ended before the kills began: the test proved nothing"
    # Then every job ends done, each of its six tasks recorded once, as done
    assert_each_task_done_once(own_engine, locations, 6)


def test_after_kill_9_of_the_whole_engine_under_load_no_accepted_job_is_lost_and_no_done_task_is_called_again(
        own_engine, activities):
    engine = own_engine
    # Given 50 jobs that are chains of six 0.3 s activities, and more being started
    locations = start_jobs(engine, "slowchain", 50)
    load = Load(engine, process="slowchain")
    wait_until(lambda: load.count(201) >= 10, 20, "the load to get going")
    wait_until(lambda: any(activities.log(loc.rsplit("/", 1)[1])[1:] for loc in locations), 20,
               "jobs to be half-way")
    # When every engine process is killed at once (actors, admin, gunicorn)
    web = engine.web
    kill_engine(engine, web)
    load.stop()
    # ... and what Redis had recorded as done, and as running, at that moment is noted
    done_before, running_before = {}, {}
    for tag in engine.redis.smembers(keys.engine_jobs(engine.config.engine)):
        tasks = store.tasks_of(engine.redis.hgetall(tag))
        uuid = keys.parse_tag(tag)[2]
        # as X-Cameron-Task names them: n:id
        done_before[uuid] = {f"{t['n']}:{t['id']}" for t in tasks if t["status"] == "done"}
        running_before[uuid] = {f"{t['n']}:{t['id']}" for t in tasks if t["status"] == "running"}
    assert any(done_before.values()), "no task was done at the kill: the test proved nothing"
    # When the engine is started again
    restarted = engine.cli("start")
    assert restarted.returncode == 0, restarted.stderr
    engine.web = start_web(engine)
    # Then every job that got a 201 ends done, each of its six tasks once
    accepted = locations + [resp.headers["Location"] for resp, _ in load.answers
                            if resp is not None and resp.status_code == 201]
    assert_each_task_done_once(engine, accepted, 6)
    # ... and no task done before the kill was called again
    for job, done in done_before.items():
        calls = [c["task"] for c in activities.log(job)]
        again = {task for task in done if calls.count(task) != 1}
        assert not again, (job, again, calls)
    # ... while a task recorded running, called again by the restarted engine, says so
    assert_calls_made_again_say_so(activities, running_before)


def test_jobs_survive_killed_job_data_scheduler_and_catalog_under_load(own_engine, activities):
    engine = own_engine
    # Given jobs in flight and a stream of new ones
    slow = start_slow_jobs(engine, activities, 5)
    load = Load(engine)
    try:
        wait_until(lambda: load.count(201) >= 20, 20, "the load to get going")
        # When JobData, the JobScheduler and the ProcessCatalog are killed
        pids = actor_pids(engine)
        for role in ("job_data", "scheduler", "catalog"):
            os.kill(pids[role], signal.SIGKILL)
        # Then the Supervisor replaces them and new jobs are accepted again
        def replaced():
            now = actor_pids(engine)
            return all(now[r] not in (None, pids[r]) for r in ("job_data", "scheduler", "catalog"))
        wait_until(replaced, 20, "new JobData, JobScheduler and ProcessCatalog", interval=0.2)
        accepted = load.count(201)
        wait_until(lambda: load.count(201) >= accepted + 20, 30, "jobs to be accepted again")
    finally:
        load.stop()
    # ... and every accepted job ends done with every task done: no write died with JobData
    locations = slow + [resp.headers["Location"] for resp, _ in load.answers
                        if resp is not None and resp.status_code == 201]
    for location in locations:
        doc = engine.wait_done(location, timeout=30)
        assert {t["status"]["current"] for t in doc["tasks"]} == {"done"}, doc
        assert len(doc["tasks"]) == (1 if location in slow else 7)
    statuses = json.loads(engine.cli("status", "--json").stdout)["actors"]
    assert all(a.get("figures", {}).get("unacked_writes", 0) == 0 for a in statuses), statuses


def test_a_child_that_keeps_dying_is_given_up_after_five_restarts_in_ten_seconds(own_engine):
    engine = own_engine
    killed = []
    # When the ProcessCatalog is killed six times in a row, each time as soon as it is back
    for _ in range(6):
        pid = wait_until(lambda: (p := actor_pids(engine).get("catalog")) not in [None, *killed] and p,
                         20, "a new ProcessCatalog", interval=0.1)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    # Then the Supervisor stops restarting it, says so in `status` and in the log
    def given_up():
        out = engine.cli("status", "--json")
        report = json.loads(out.stdout)
        sup = [a for a in report["actors"] if a["role"] == "supervisor"]
        return out.returncode == 1 and (sup or [{}])[0].get("figures", {}).get("given_up") == ["catalog"]
    wait_until(given_up, 20, "the supervisor to give the catalog up", interval=0.2)
    log = (Path(engine.config.data_dir) / "log" / "actors.log").read_text()
    assert "catalog died 6 times within 10 s; not restarting it again" in log
    # ... while the rest of the engine goes on serving jobs
    assert engine.run_job("foo")["errors"] == 0


def test_starts_accepted_while_the_actors_are_stopped_wait_in_the_inbox_and_run_when_they_start(
        own_engine, activities):
    engine = own_engine
    # Given the engine's actors stopped (Redis and the API still up)
    stopped = engine.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    # When jobs are started: accepted, since the engine's catalog is in Redis
    waiting = start_jobs(engine, "foo", 3)
    # ... and one of them is cancelled while it waits (as JobData would record it)
    jobs = store.JobStore(engine.redis, engine.config.engine)
    cancelled = waiting.pop()
    process, key, uuid = "foo", "foo-2", cancelled.rsplit("/", 1)[1]
    assert jobs.request_cancel(process, key, uuid)[0] == "scheduled"
    assert engine.redis.llen(keys.engine_inbox(engine.config.engine)) == 3
    # Then once the actors start again, the waiting jobs run, and the cancelled one ends
    # cancelled without a single activity call
    started = engine.cli("start")
    assert started.returncode == 0, started.stderr
    for location in waiting:
        doc = engine.wait_done(location, timeout=30)
        assert len(doc["tasks"]) == 7 and doc["errors"] == 0
        # ... once each, though both the boot's recovery and the inbox hand them out
        calls = [c["task"] for c in activities.log(doc["uuid"])]
        assert sorted(calls) == sorted(set(calls)) and len(calls) == 7, calls
    doc = wait_until(lambda: (d := engine.http.get(cancelled, timeout=15).json())["status"]["current"]
                     == "cancelled" and d, 30, "the cancelled job to end cancelled")
    assert doc["tasks"] == [] and activities.log(uuid) == []
    assert engine.redis.llen(keys.engine_inbox(engine.config.engine)) == 0
