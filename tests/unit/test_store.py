"""The job schema in a real Redis: what each moment of a job writes, and how it reads back."""

import json
import re
import select
import uuid as uuidlib
from datetime import datetime, timedelta, timezone

import pytest
import redis

from cameron import keys, store
from cameron import messages as m
from cameron.catalog import Process

TIME = re.compile(r"^\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2}$")
FOO = Process(name="foo", start_url="http://127.0.0.1:9292/foo/v0.0.1/start")
T1, T2, T3, T4 = (f"01-02-2025 03:04:0{i}" for i in range(1, 5))




@pytest.fixture
def client(redis_url):
    c = store.connect(redis_url)
    c.flushdb()  # our own throwaway server: nothing else lives in it
    yield c
    c.close()


@pytest.fixture
def jobs(client):
    return store.JobStore(client, "me:1")


def new_job(key="(id,007)", process=FOO, data="be careful with that data", requestor="bob_the_thin"):
    uuid = uuidlib.uuid4().hex
    return m.JobSpec(process=process, key=key, data=data, requestor=requestor, uuid=uuid,
                     tag=keys.job_tag(process.name, key, uuid))


def create(jobs, job, idempotency_key="", fingerprint="") -> store.Created:
    """Store `job` as the API does: its process in the engine's published catalog, then started."""
    jobs.redis.hset(keys.engine_catalog(jobs.engine), job.process.name, job.process.start_url)
    return jobs.start(job.process.name, job.key, job.data, job.requestor, job_id=job.uuid,
                      idempotency_key=idempotency_key, fingerprint=fingerprint)


#: (job tag, n) -> the id task_started gave that task, for the helpers below.
_IDS = {}


def task_started(job, n, name, parent=-1, requestor="bob_the_thin", tasks_csv="start", time=T2, task_id=None):
    _IDS[job.tag, n] = task_id or name
    return m.TaskStarted(tag=job.tag, n=n, id=task_id or name, name=name, url=f"http://a.example/{name}",
                         requestor=requestor, parent=parent, parent_id=_IDS.get((job.tag, parent), ""),
                         tasks_csv=tasks_csv, time=time)


def task_done(job, n, data, next_activities=None, time=T3):
    next_json = "undefined" if next_activities is None else json.dumps(next_activities)
    return m.TaskEnded(tag=job.tag, n=n, id=_IDS[job.tag, n], status="done", data_json=json.dumps(data),
                       next_json=next_json, time=time, duration_ms=12)


def task_error(job, n, error, url, time=T3):
    return m.TaskEnded(tag=job.tag, n=n, id=_IDS[job.tag, n], status="error",
                       data_json=json.dumps({"error": error, "url": url}),
                       next_json="undefined", time=time, duration_ms=5)


def markers(client, job) -> set:
    """The job's marker keys, as suffixes after JOBTAG (`pending`, `0:running`, ...)."""
    return {k[len(job.tag) + 1:] for k in client.keys("*") if k.startswith(job.tag + ":")}


# --- job created --------------------------------------------------------------

def test_creating_a_job_writes_the_spec_fields_and_a_pending_marker(client, jobs):
    # Given the request of the original's docs
    job = new_job()
    # When the job is stored
    create(jobs, job)
    # Expect the job hash under the documented name, with the original schema's fields exactly ...
    tag = f"cameron:process:foo:key:(id,007):job:{job.uuid}"
    h = client.hgetall(tag)
    assert {f: h.get(f) for f in ("job.key", "job.data", "job.requestor", "job.status.current")} == {
        "job.key": "(id,007)", "job.data": "be careful with that data", "job.requestor": "bob_the_thin",
        "job.status.current": "scheduled"}
    assert TIME.match(h["job.status.scheduled.time"])
    # ... plus only our documented restart fields (no task fields, no other job moment yet)
    assert set(h) - {"job.key", "job.data", "job.requestor", "job.status.current",
                     "job.status.scheduled.time"} == {"job.process", "job.start_url"}
    assert (h["job.process"], h["job.start_url"]) == ("foo", FOO.start_url)
    # ... one marker, JOBTAG:pending, and the job listed as unfinished
    assert markers(client, job) == {"pending"}
    assert client.exists(tag + ":pending")
    assert client.sismember(keys.engine_jobs("me:1"), tag)
    # ... the job in the listing indexes, findable by its uuid, and queued for the engine
    assert set(client.keys("*")) == {
        tag, tag + ":pending", keys.engine_jobs("me:1"), f"cameron:job:{job.uuid}", "cameron:process:foo:jobs",
        "cameron:process:foo:jobs:scheduled", "cameron:process:foo:key:(id,007):jobs",
        keys.engine_inbox("me:1"), keys.ENGINES, keys.engine_catalog("me:1")}  # (the catalog: the test's)
    assert client.lrange(keys.engine_inbox("me:1"), 0, -1) == [tag]


# --- the moments of a job ---------------------------------------------------------

def test_a_job_moves_its_markers_from_pending_to_running_to_done(client, jobs):
    # Given a stored job
    job = new_job()
    create(jobs, job)

    # When it starts
    jobs.apply([m.JobStarted(tag=job.tag, time=T1)])
    # Expect running, with its time, and the pending marker replaced by the running one
    h = client.hgetall(job.tag)
    assert (h["job.status.current"], h["job.status.running.time"]) == ("running", T1)
    assert TIME.match(h["job.status.scheduled.time"])
    assert markers(client, job) == {"running"}

    # When it ends
    jobs.apply([m.JobEnded(tag=job.tag, time=T4, errors=0)])
    # Expect done, with its time, and only the done marker; no longer unfinished
    h = client.hgetall(job.tag)
    assert (h["job.status.current"], h["job.status.done.time"]) == ("done", T4)
    assert h["job.status.running.time"] == T1
    assert markers(client, job) == {"done"}
    assert not client.sismember(keys.engine_jobs("me:1"), job.tag)


def test_a_task_start_writes_its_spec_fields_and_a_running_marker(client, jobs):
    # Given a running job
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1)])
    # When its start task starts
    jobs.apply([task_started(job, 0, "start", tasks_csv="start", time=T2)])
    # Expect the original schema's fields of the start task (task.start.*), job.tasks, and the JOBTAG:start:running marker
    h = client.hgetall(job.tag)
    assert h["task.start.requestor"] == "bob_the_thin"
    assert h["task.start.status.current"] == "running"
    assert h["task.start.status.running.time"] == T2
    assert h["job.tasks"] == "start"
    assert markers(client, job) == {"running", "start:running"}


def test_a_task_that_ends_done_keeps_its_output_and_moves_its_marker(client, jobs):
    # Given a start task running
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start", time=T2)])
    nxt = {"definitions": [{"name": "act_1", "url": "http://a.example/act_1"}]}
    # When it ends well, with data and one next activity
    jobs.apply([task_done(job, 0, {"who_id": "(id,007)"}, nxt, time=T3)])
    # Expect done with its time, the outputs as JSON text, and JOBTAG:start:running -> JOBTAG:start:done
    h = client.hgetall(job.tag)
    assert h["task.start.status.current"] == "done"
    assert h["task.start.status.done.time"] == T3
    assert json.loads(h["task.start.output.data"]) == {"who_id": "(id,007)"}
    assert json.loads(h["task.start.output.next_activities"]) == nxt
    assert markers(client, job) == {"running", "start:done"}


def test_a_leaf_task_records_undefined_next_activities(client, jobs):
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start")])
    jobs.apply([task_done(job, 0, "just data")])
    assert client.hget(job.tag, "task.start.output.next_activities") == "undefined"


def test_a_task_that_fails_records_the_error_and_url_and_moves_its_marker(client, jobs):
    # Given a start task running
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start", time=T2)])
    # When its call fails
    jobs.apply([task_error(job, 0, "activity answered HTTP 500 Internal Server Error",
                           FOO.start_url, time=T3)])
    # Expect error with its time, output.data {"error", "url"}, and JOBTAG:start:running -> JOBTAG:start:error
    h = client.hgetall(job.tag)
    assert h["task.start.status.current"] == "error"
    assert h["task.start.status.error.time"] == T3
    assert "task.start.status.done.time" not in h
    assert json.loads(h["task.start.output.data"]) == {
        "error": "activity answered HTTP 500 Internal Server Error", "url": FOO.start_url}
    assert markers(client, job) == {"running", "start:error"}


def test_a_whole_foo_shaped_job_has_every_spec_field_and_only_final_markers(client, jobs):
    # Given the sample workflow's shape: start -> act_1..act_5, act_5 -> act_5_sub_1
    job = new_job()
    create(jobs, job)
    names = ["start"] + [f"act_{i}" for i in range(1, 6)] + ["act_5_sub_1"]
    parents = [-1, 0, 0, 0, 0, 0, 5]
    # When every moment is applied, children started in one batch as the runner does
    jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start")])
    jobs.apply([task_done(job, 0, {"who_id": "(id,007)"}, {"definitions": []})])
    jobs.apply([task_started(job, n, names[n], parent=0, requestor="whois",
                             tasks_csv=",".join(names[:n + 1])) for n in range(1, 6)])
    jobs.apply([task_done(job, n, {"act": n}) for n in range(1, 5)])
    jobs.apply([task_done(job, 5, {"act": 5}, {"definitions": []}),
                task_started(job, 6, "act_5_sub_1", parent=5, requestor="foo_act_5",
                             tasks_csv=",".join(names))])
    jobs.apply([task_done(job, 6, {"sub": 1}), m.JobEnded(tag=job.tag, time=T4, errors=0)])
    # Expect the original schema's 8 job fields and 6 fields for each of the 7 tasks (50)
    h = client.hgetall(job.tag)
    spec_fields = {"job.key", "job.data", "job.requestor", "job.status.current", "job.tasks",
                   "job.status.scheduled.time", "job.status.running.time", "job.status.done.time"}
    for name in names:
        spec_fields |= {f"task.{name}.{f}" for f in ("requestor", "status.current", "status.running.time",
                                                   "status.done.time", "output.data",
                                                   "output.next_activities")}
    assert len(spec_fields) == 50
    assert spec_fields <= set(h)
    assert h["job.tasks"] == "start,act_1,act_2,act_3,act_4,act_5,act_5_sub_1"
    # ... and only the final markers: the job done, every task done
    assert markers(client, job) == {"done"} | {f"{name}:done" for name in names}
    assert [h[f"task.{name}.parent"] for name in names] == ["" if p < 0 else names[p] for p in parents]
    assert [int(h[f"task.{name}.index"]) for name in names] == list(range(7))


def test_the_embedded_redis_keeps_a_jobs_hash_compact_and_forks_for_no_snapshot(client, jobs):
    # Given the embedded Redis (this module's), and a job whose seven tasks answered 600 bytes each
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1)] + [task_started(job, n, f"act_{n}") for n in range(7)])
    jobs.apply([task_done(job, n, {"text": "x" * 600}) for n in range(7)] + [m.JobEnded(tag=job.tag, time=T4, errors=0)])
    # Expect its hash in the compact encoding (ziplist, listpack from Redis 7 on)
    assert client.object("encoding", job.tag) in ("ziplist", "listpack")
    # and no RDB snapshot scheduled: the append-only file is the durable copy
    assert client.config_get("save")["save"] == "" and client.config_get("appendonly")["appendonly"] == "yes"


def test_a_batch_is_one_transaction_that_redis_applies_all_at_once(client, jobs):
    # Given a stored job, and a watcher of every command Redis runs
    job = new_job()
    create(jobs, job)
    with client.monitor() as monitor:
        # When a batch of several moments is written
        jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start", time=T2)])
        commands = []
        for event in monitor.listen():
            commands.append(event["command"].split()[0].upper())
            if commands[-1] == "EXEC":
                break
    # Expect its writes between one MULTI and its EXEC: no client sees half of it, and a
    # connection lost before EXEC writes none of it
    assert commands.count("MULTI") == 1, commands
    before, inside = commands[:commands.index("MULTI")], commands[commands.index("MULTI") + 1:-1]
    assert set(before) <= {"PING", "HELLO", "CLIENT"}, commands  # the connection's greeting
    assert {"HSET", "MSET", "DEL", "ZADD", "XADD", "PUBLISH"} <= set(inside), commands


# --- times ------------------------------------------------------------------------

def test_now_uses_the_original_time_format_in_utc():
    # When the store stamps a moment
    stamp = store.now()
    # Expect MM-DD-YYYY hh:mm:ss, and the current UTC time
    assert TIME.match(stamp), stamp
    parsed = datetime.strptime(stamp, "%m-%d-%Y %H:%M:%S").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - parsed) < timedelta(minutes=1)


def test_now_follows_the_clock_from_one_second_to_the_next(monkeypatch):
    # (made once per second and kept for the second's other moments)
    import time
    from types import SimpleNamespace
    from cameron.store import documents
    clock = [1_764_460_800.2]  # 2025-11-30 00:00:00.2 UTC
    monkeypatch.setattr(documents, "time", SimpleNamespace(time=lambda: clock[0], strftime=time.strftime,
                                                           gmtime=time.gmtime))
    first = store.now()
    clock[0] += 0.5
    assert store.now() == first == "11-30-2025 00:00:00"
    clock[0] += 0.5
    assert store.now() == "11-30-2025 00:00:01"


def test_every_time_of_a_job_read_back_has_the_original_format(jobs):
    # Given a job run with times stamped by store.now()
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=store.now()),
                task_started(job, 0, "start", time=store.now())])
    jobs.apply([task_done(job, 0, 1, time=store.now()), m.JobEnded(tag=job.tag, time=store.now(), errors=0)])
    # When it is read back / Expect
    doc = jobs.get("foo", job.key, job.uuid)
    assert TIME.match(doc["status"]["time"])
    assert TIME.match(doc["tasks"][0]["status"]["time"])


# --- reading a job back -----------------------------------------------------------

def test_get_returns_the_job_document_with_tasks_in_start_order(jobs):
    # Given a job whose start task spawned two children, one done and one failed
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start", time=T1)])
    jobs.apply([task_done(job, 0, {"who_id": "(id,007)", "n": [1, 2]},
                          {"definitions": [{"name": "act_2", "url": "http://a/2"},
                                           {"name": "act_1", "url": "http://a/1"}]}, time=T2)])
    jobs.apply([task_started(job, 1, "act_2", parent=0, requestor="whois", tasks_csv="start,act_2", time=T2),
                task_started(job, 2, "act_1", parent=0, requestor="whois", tasks_csv="start,act_2,act_1",
                             time=T2)])
    jobs.apply([task_error(job, 2, "answer is not JSON: 'oops'", "http://a/1", time=T3)])
    jobs.apply([task_done(job, 1, "plain string data", time=T4), m.JobEnded(tag=job.tag, time=T4, errors=1)])
    # When it is read back
    doc = jobs.get("foo", "(id,007)", job.uuid)
    # Expect the original schema's fields of the job ...
    assert {k: doc[k] for k in ("process", "uuid", "key", "requestor", "status")} == {
        "process": "foo", "uuid": job.uuid, "key": "(id,007)", "requestor": "bob_the_thin",
        "status": {"current": "done", "time": T4}}
    # ... and the tasks in the order they started, each with its own status time and parsed data
    assert [(t["name"], t["requestor"], t["status"], t["data"]) for t in doc["tasks"]] == [
        ("start", "bob_the_thin", {"current": "done", "time": T2}, {"who_id": "(id,007)", "n": [1, 2]}),
        ("act_2", "whois", {"current": "done", "time": T4}, "plain string data"),
        ("act_1", "whois", {"current": "error", "time": T3},
         {"error": "answer is not JSON: 'oops'", "url": "http://a/1"}),
    ]
    assert doc["errors"] == 1
    assert json.loads(json.dumps(doc)) == doc  # the API can send it as it is


def test_a_running_task_reads_back_as_running_without_data(jobs):
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start", time=T2)])
    doc = jobs.get("foo", job.key, job.uuid)
    assert doc["status"] == {"current": "running", "time": T1}
    assert [(t["name"], t["status"], t["data"]) for t in doc["tasks"]] == [
        ("start", {"current": "running", "time": T2}, None)]


def test_a_job_just_created_reads_back_scheduled_with_no_tasks(jobs):
    job = new_job()
    create(jobs, job)
    doc = jobs.get("foo", job.key, job.uuid)
    assert doc["status"]["current"] == "scheduled" and TIME.match(doc["status"]["time"])
    assert doc["tasks"] == []


def test_two_tasks_of_the_same_activity_keep_their_own_records(jobs):
    # Given a parent naming the same activity twice (the original overwrote one with the other)
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(tag=job.tag, time=T1), task_started(job, 0, "start")])
    jobs.apply([task_done(job, 0, 0, {"definitions": []})])
    jobs.apply([task_started(job, 1, "twin", parent=0, tasks_csv="start,twin"),
                task_started(job, 2, "twin", parent=0, tasks_csv="start,twin,twin#2", task_id="twin#2")])
    jobs.apply([task_done(job, 1, "first"), task_error(job, 2, "boom", "http://a/twin")])
    # When / Expect both twins, each with its own outcome, the second under `twin#2`
    doc = jobs.get("foo", job.key, job.uuid)
    assert [(t["id"], t["name"], t["status"]["current"], t["data"]) for t in doc["tasks"][1:]] == [
        ("twin", "twin", "done", "first"),
        ("twin#2", "twin", "error", {"error": "boom", "url": "http://a/twin"})]
    assert [t["parent"] for t in store.tasks_of(jobs.redis.hgetall(job.tag))] == [-1, 0, 0]


def test_an_unknown_job_reads_back_as_none(jobs):
    # Given one stored job
    job = new_job()
    create(jobs, job)
    # When asking for another uuid, another key or another process / Expect None
    assert jobs.get("foo", job.key, uuidlib.uuid4().hex) is None
    assert jobs.get("foo", "(id,008)", job.uuid) is None
    assert jobs.get("bar", job.key, job.uuid) is None


@pytest.mark.parametrize("key", ["(id,007)", "Bob", "Mary Ann Smith", "acme/orders/42",
                                 "Mixed Case (a/b), c", "ünïcödé ✓"])
def test_keys_with_capitals_spaces_slashes_parentheses_and_commas_read_back(client, jobs, key):
    # Given a job stored for an unusual key
    job = new_job(key=key)
    create(jobs, job)
    # Expect its hash named with the key verbatim, and the job readable by that exact key
    assert client.exists(f"cameron:process:foo:key:{key}:job:{job.uuid}")
    doc = jobs.get("foo", key, job.uuid)
    assert doc["key"] == key
    assert doc["uuid"] == job.uuid


def test_keys_differing_only_in_case_are_different_jobs(jobs):
    # Given one job for "Bob" and one for "bob" (the original lowercased keys)
    upper, lower = new_job(key="Bob", data="upper"), new_job(key="bob", data="lower")
    create(jobs, upper)
    create(jobs, lower)
    # When / Expect each reads back with its own data, and not under the other's key
    assert jobs.get("foo", "Bob", upper.uuid)["data"] == "upper"
    assert jobs.get("foo", "bob", lower.uuid)["data"] == "lower"
    assert jobs.get("foo", "bob", upper.uuid) is None


# --- leases: one engine per job ----------------------------------------------------

def test_a_lease_is_renewed_and_reports_whether_it_had_lapsed_and_the_other_leases(client, jobs):
    assert jobs.renew_lease(5) == (False, {})  # the first renewal finds none
    first = client.get(keys.engine_lease("me:1"))
    other = store.JobStore(client, "other:2")
    assert other.renew_lease(5)[0] is False
    held, others = jobs.renew_lease(5)
    assert held is True and others == {"other:2": client.get(keys.engine_lease("other:2"))}
    assert client.get(keys.engine_lease("me:1")) != first  # a fresh value at each renewal
    assert 4000 < client.pttl(keys.engine_lease("me:1")) <= 5000
    assert client.smembers(keys.ENGINES) == {"me:1", "other:2"}
    client.delete(keys.engine_lease("me:1"))  # as if it had expired
    assert jobs.renew_lease(5)[0] is False


def test_the_jobs_of_a_dead_engine_are_taken_over_once_and_only_if_its_lease_did_not_change(client, jobs):
    # Given two engines with a job each, both leases held
    other = store.JobStore(client, "other:2")
    mine, theirs = new_job(), new_job()
    create(jobs, mine)
    create(other, theirs)
    jobs.renew_lease(5)
    other.renew_lease(5)
    seen = jobs.renew_lease(5)[1]["other:2"]
    # Expect nothing taken when the other renewed since it was seen
    other.renew_lease(5)
    assert jobs.claim_orphans({"other:2": seen}) == []
    # When its lease keeps the value seen (or is gone, as one that expired)
    seen = jobs.renew_lease(5)[1]["other:2"]
    # Then its job is ours, exactly once, and the dead engine is forgotten
    assert jobs.claim_orphans({"other:2": seen}) == [theirs.tag]
    assert client.smembers(keys.engine_adopting("me:1")) == {theirs.tag}
    # ... handed out again by every claim until acknowledged (a claim's reply may be lost)
    assert jobs.claim_orphans({}) == [theirs.tag]
    jobs.adopted([theirs.tag])
    assert jobs.claim_orphans({"other:2": seen}) == []
    seen_by_other = client.get(keys.engine_lease("me:1"))
    jobs.renew_lease(5)
    assert other.claim_orphans({"me:1": seen_by_other}) == []  # we renewed since: ours holds
    assert client.smembers(keys.engine_jobs("me:1")) == {mine.tag, theirs.tag}
    assert client.smembers(keys.ENGINES) == {"me:1"}
    assert not client.exists(keys.engine_lease("other:2"))
    assert [t for t, _ in jobs.unfinished(None, 2)] != []


# --- starts through the API: the engine's catalog and inbox --------------------------

def test_a_start_is_checked_against_the_published_catalog_and_queued_on_the_inbox(client, jobs):
    # Given no catalog yet: the engine is starting
    with pytest.raises(store.EngineStarting):
        jobs.start("foo", "k", "d", "r")
    # When the catalog is published
    jobs.publish_catalog([FOO])
    # Then an unknown process is refused, and a known one stored with the catalog's start URL
    with pytest.raises(store.UnknownProcess):
        jobs.start("nope", "k", "d", "r")
    with pytest.raises(store.UnknownProcess):
        jobs.start(" ", "k", "d", "r")  # the placeholder that keeps an empty catalog in existence
    created = jobs.start("foo", "k", "d", "r")
    tag = keys.job_tag("foo", "k", created.uuid)
    assert client.hget(tag, "job.start_url") == FOO.start_url
    # ... and taken off the inbox once, with what the scheduler needs
    [(taken, h)] = jobs.take_new()
    assert taken == tag
    assert (h["job.key"], h["job.data"], h["job.requestor"], h["job.process"], h["job.status.current"]) == \
        ("k", "d", "r", "foo", "scheduled")
    assert jobs.take_new(handed=[taken]) == []


def test_a_start_wakes_the_engine_only_when_it_lands_in_an_empty_inbox(client, jobs):
    # Given the engine's inbox subscription (as JobData has it) and a published catalog
    jobs.publish_catalog([FOO])
    wakeups = client.pubsub(ignore_subscribe_messages=True)
    wakeups.subscribe(keys.engine_inbox(jobs.engine))
    wakeups.get_message(timeout=5)  # the subscription's confirmation

    def count():
        # A PING's reply comes after every message published before it: nothing is missed.
        wakeups.ping()
        seen = []
        while (msg := wakeups.get_message(timeout=5)) and msg["type"] != "pong":
            seen.append(msg)
        return len(seen)

    # When three jobs are started before the engine takes any
    for i in range(3):
        jobs.start("foo", f"k{i}", "d", "r")
    # Expect one wake-up: the jobs behind the first are taken with it
    assert count() == 1
    taken = jobs.take_new()
    assert len(taken) == 3
    # ... and once the inbox is empty again, the next start wakes it again
    jobs.start("foo", "k3", "d", "r")
    assert count() == 1
    wakeups.close()


def test_a_lent_client_is_reused_and_skips_the_pools_check_before_each_command(client, jobs, monkeypatch):
    # Given a store whose pool counts the connections it hands out (and checks for unread replies)
    jobs.redis.hset(keys.engine_catalog(jobs.engine), "foo", FOO.start_url)
    pool = jobs.redis.connection_pool
    handed = []
    real = pool.get_connection
    monkeypatch.setattr(pool, "get_connection", lambda *a, **k: handed.append(1) or real(*a, **k))
    # When ten starts go one after the other through lent clients
    for i in range(10):
        with jobs.lend() as via:
            jobs.start("foo", f"k{i}", "d", "r", via=via)
    # Expect them through one connection taken from the pool once, and the ten jobs queued
    assert len(handed) == 1
    assert client.llen(keys.engine_inbox(jobs.engine)) == 10


def test_a_lent_connection_that_redis_closed_is_opened_again_before_the_next_start(client, jobs):
    # Given a lent connection that Redis closed while it was idle (a restart, a client timeout)
    jobs.redis.hset(keys.engine_catalog(jobs.engine), "foo", FOO.start_url)
    with jobs.lend() as via:
        jobs.start("foo", "k0", "d", "r", via=via)
        first = via.client_id()
    client.client_kill_filter(_id=first)
    assert select.select([via.connection._sock], [], [], 5)[0]  # its end has arrived
    # When the next start borrows it, expect that start to go through on a new connection
    with jobs.lend() as again:
        jobs.start("foo", "k1", "d", "r", via=again)
    assert again is via and again.client_id() != first
    assert client.llen(keys.engine_inbox(jobs.engine)) == 2


class Killed(BaseException):
    """What a greenlet killed in mid-command sees."""


def test_a_client_lent_to_a_request_killed_in_mid_command_is_not_reused_with_its_reply_unread(jobs):
    # Given a lent client whose request dies after sending a command, before its reply is read
    with pytest.raises(Killed):
        with jobs.lend() as via:
            via.connection.send_command("ECHO", "stale")
            raise Killed()
    # When it is lent again, expect its next command to get its own reply, not the stale one
    with jobs.lend() as via:
        assert via.echo("fresh") == "fresh"
    # and after an ordinary failure (a Redis error, the reply read) the connection is kept
    with pytest.raises(store.UnknownProcess), jobs.lend() as via:
        jobs.redis.hset(keys.engine_catalog(jobs.engine), " ", "")
        jobs.start("nope", "k", "d", "r", via=via)
    kept = via.connection._sock
    with jobs.lend() as again:
        assert again is via and again.ping() and again.connection._sock is kept


def test_a_start_through_a_lent_client_loads_the_script_again_when_redis_lost_it(client, jobs):
    # Given a lent client that started a job, then Redis forgot its scripts (a restart, SCRIPT FLUSH)
    jobs.publish_catalog([FOO])
    with jobs.lend() as via:
        jobs.start("foo", "k0", "d", "r", via=via)
    client.script_flush()
    # When the next start goes through it, expect it created all the same
    with jobs.lend() as via:
        created = jobs.start("foo", "k1", "d", "r", via=via)
    assert client.hget(keys.job_tag("foo", "k1", created.uuid), "job.status.current") == "scheduled"
    assert client.llen(keys.engine_inbox(jobs.engine)) == 2


def test_a_take_whose_reply_is_lost_leaves_its_jobs_for_the_next_take(client, jobs):
    # Given three jobs on the inbox, and a take of two whose reply never arrived
    jobs.publish_catalog([FOO])
    tags = [keys.job_tag("foo", "k", jobs.start("foo", "k", "d", "r").uuid) for _ in range(3)]
    jobs.take_new(2)
    assert client.llen(keys.engine_inbox("me:1")) == 1
    # When JobData takes again, acknowledging nothing (it never saw them)
    again = [t for t, _ in jobs.take_new(2)]
    # Then it gets the same two, oldest first; once acknowledged, the third; then nothing
    assert again == tags[:2]
    assert [t for t, _ in jobs.take_new(2, handed=again)] == tags[2:]
    assert jobs.take_new(2, handed=tags[2:]) == []
    assert not client.exists(keys.engine_taking("me:1"))


def test_the_stores_client_sends_every_kind_of_argument_and_two_word_commands(client):
    # hiredis packs str, bytes and numbers itself; a bytearray or memoryview, a command named
    # in two words, and a value Redis cannot take go by redis-py's own packer
    client.set("packed:str", "é")
    client.set("packed:bytearray", bytearray(b"ba"))
    client.set("packed:memoryview", memoryview(b"mv"))
    client.hset("packed:numbers", mapping={"int": 7, "float": 0.5})
    assert client.mget("packed:str", "packed:bytearray", "packed:memoryview") == ["é", "ba", "mv"]
    assert client.hgetall("packed:numbers") == {"int": "7", "float": "0.5"}
    assert client.client_setname("packer") and client.client_getname() == "packer"
    with pytest.raises(redis.DataError):
        client.set("packed:none", None)


def test_a_write_records_its_token_in_the_same_transaction(client, jobs):
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(job.tag, T1)], "a:1")
    assert jobs.written_token() == "a:1"
    assert client.hget(job.tag, "job.status.current") == "running"


def test_an_empty_catalog_refuses_every_process_instead_of_saying_starting(client, jobs):
    jobs.publish_catalog([])
    with pytest.raises(store.UnknownProcess):
        jobs.start("foo", "k", "d", "r")


def test_a_dead_engines_inbox_goes_with_its_jobs_to_the_engine_that_takes_them_over(client, jobs):
    other = store.JobStore(client, "other:2")
    job = new_job()
    create(other, job)
    assert jobs.claim_orphans({"other:2": ""}) == [job.tag]
    assert not client.exists(keys.engine_inbox("other:2"))
