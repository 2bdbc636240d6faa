"""The operations side of the job schema in a real Redis: listing indexes, paging, cancel,
idempotent starts, and finished jobs expiring with their index entries."""

import pytest

from cameron import keys, store
from cameron import messages as m
from test_store import FOO, T1, T4, create, new_job, task_done, task_started  # noqa: F401 (fixtures below)
from test_store import client, jobs  # noqa: F401


def states(client, process="foo"):
    return {s: set(client.zrange(keys.process_jobs(process, s), 0, -1)) for s in keys.JOB_STATES}


def test_a_job_moves_through_the_state_indexes_of_its_process(client, jobs):
    job = new_job()
    create(jobs, job)
    assert states(client)["scheduled"] == {job.tag}
    jobs.apply([m.JobStarted(job.tag, T1)])
    assert states(client) == {"scheduled": set(), "running": {job.tag}, "done": set(), "cancelled": set()}
    jobs.apply([m.JobEnded(job.tag, T4, errors=0)])
    assert states(client) == {"scheduled": set(), "running": set(), "done": {job.tag}, "cancelled": set()}
    # Every job of the process, and of its key, stays listed whatever its state.
    assert client.zrange(keys.process_jobs("foo"), 0, -1) == [job.tag]
    assert client.zrange(keys.key_jobs("foo", job.key), 0, -1) == [job.tag]


def test_a_job_cancelled_before_it_started_ends_cancelled_straight_from_scheduled(client, jobs):
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobEnded(job.tag, T4, errors=0, status=keys.CANCELLED)])
    assert states(client)["cancelled"] == {job.tag} and not states(client)["scheduled"]
    assert client.hget(job.tag, "job.status.current") == "cancelled"
    assert client.hget(job.tag, "job.status.cancelled.time") == T4
    assert client.exists(f"{job.tag}:cancelled") and not client.exists(f"{job.tag}:pending")


def test_pages_go_newest_first_and_the_cursor_walks_every_job_once(client, jobs):
    created = []
    for i in range(7):
        job = new_job(key=f"k{i % 2}")
        create(jobs, job)
        created.append(job.uuid)
    seen, cursor = [], None
    while True:
        page, cursor = jobs.list_jobs("foo", limit=3, cursor=cursor)
        seen += [j["uuid"] for j in page]
        if cursor is None:
            break
        # What the API hands out comes back as the same cursor.
        cursor = store.decode_cursor(store.encode_cursor(cursor))
    assert sorted(seen) == sorted(created) and len(seen) == 7
    # Newest first (several were created within one millisecond: ties still come once each).
    scores = [client.zscore(keys.process_jobs("foo"), keys.job_tag("foo", j["key"], j["uuid"]))
              for j in jobs.list_jobs("foo", limit=7)[0]]
    assert scores == sorted(scores, reverse=True)
    by_key, _ = jobs.list_jobs("foo", key="k1")
    assert {j["key"] for j in by_key} == {"k1"} and len(by_key) == 3


def test_a_summary_names_the_job_and_its_state(client, jobs):
    job = new_job()
    create(jobs, job)
    [summary], cursor = jobs.list_jobs("foo", state="scheduled")
    assert cursor is None
    assert summary["uuid"] == job.uuid and summary["key"] == job.key and summary["process"] == "foo"
    assert summary["status"] == {"current": "scheduled",
                                 "time": client.hget(job.tag, keys.job_time(keys.SCHEDULED))}
    assert summary["scheduled"] == summary["status"]["time"]
    assert summary["requestor"] == "bob_the_thin"


@pytest.mark.parametrize("text", ["", "nope", "e30", store.encode_cursor((1.0, "x"))])
def test_a_cursor_the_server_did_not_make_is_refused(text):
    with pytest.raises(ValueError):
        store.decode_cursor(text)


def test_a_job_is_found_by_its_uuid_alone(client, jobs):
    job = new_job(key="a:b/c")
    create(jobs, job)
    assert jobs.find(job.uuid)["key"] == "a:b/c"
    assert jobs.find("0" * 32) is None


def test_the_same_idempotency_key_and_request_give_back_the_first_job(client, jobs):
    first, second = new_job(), new_job()
    assert not create(jobs, first, "req-1", "fp").replayed
    assert create(jobs, second, "req-1", "fp") == store.Created("foo", first.key, first.uuid, "scheduled", True)
    assert not client.exists(second.tag)
    assert 0 < client.ttl(keys.idempotency("foo", "", "req-1")) <= 86400


def test_the_same_idempotency_key_with_another_request_is_a_conflict(client, jobs):
    create(jobs, new_job(), "req-2", "fp-a")
    with pytest.raises(store.IdempotencyConflict):
        create(jobs, new_job(), "req-2", "fp-b")


def test_a_cancel_is_recorded_once_and_refused_for_a_finished_job(client, jobs):
    job = new_job()
    create(jobs, job)
    status, requested = jobs.request_cancel("foo", job.key, job.uuid)
    assert status == "scheduled" and requested
    assert jobs.request_cancel("foo", job.key, job.uuid) == ("scheduled", requested)
    assert client.hget(job.tag, keys.JOB_CANCEL_REQUESTED) == requested
    assert jobs.get("foo", job.key, job.uuid)["cancel_requested"] == requested
    jobs.apply([m.JobEnded(job.tag, T4, errors=0, status=keys.CANCELLED)])
    assert jobs.request_cancel("foo", job.key, job.uuid) == ("cancelled", None)
    assert jobs.request_cancel("foo", job.key, "f" * 32) is None


def test_with_a_retention_a_finished_job_expires_and_leaves_the_indexes(client):
    jobs = store.JobStore(client, "me:1", retention=60)
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobStarted(job.tag, T1), task_started(job, 0, "start"),
                task_done(job, 0, {"x": 1}), m.JobEnded(job.tag, T4, errors=0, task_ids=("start",))])
    for key in (job.tag, f"{job.tag}:done", f"{job.tag}:start:done", keys.job_by_uuid(job.uuid)):
        assert 0 < client.ttl(key) <= 60, key
    # Given the hash gone (as Redis expires it) and the sweep's time come
    client.delete(job.tag)
    client.zadd(keys.EXPIRING, {job.tag: 0})
    assert jobs.prune_expired() == 1
    assert not any(client.zcard(k) for k in (
        keys.process_jobs("foo"), keys.process_jobs("foo", "done"), keys.key_jobs("foo", job.key),
        keys.EXPIRING))


def test_a_listing_drops_a_job_that_expired_before_the_sweep(client, jobs):
    job = new_job()
    create(jobs, job)
    client.delete(job.tag)
    assert jobs.list_jobs("foo") == ([], None)
    assert client.zcard(keys.process_jobs("foo")) == 0


def test_without_a_retention_a_finished_job_stays(client, jobs):
    job = new_job()
    create(jobs, job)
    jobs.apply([m.JobEnded(job.tag, T4, errors=0)])
    assert client.ttl(job.tag) == -1 and client.zcard(keys.EXPIRING) == 0


def _state(client, jobs, job):
    """Every key of the job and its index memberships, values as Redis holds them."""
    found = {}
    for k in client.scan_iter(f"{job.tag}*"):
        t = client.type(k)
        found[k] = client.hgetall(k) if t == "hash" else client.get(k)
    for s in keys.JOB_STATES:
        found[f"index:{s}"] = client.zscore(keys.process_jobs("foo", s), job.tag) is not None
    found["owned"] = client.sismember(jobs.owned, job.tag)
    return found


def test_a_whole_job_written_in_one_batch_leaves_what_its_moments_one_by_one_leave(client, jobs):
    # Given the moments of a job with a task that ends done and one that ends in error
    def moments(job):
        return [m.JobStarted(job.tag, T1),
                m.TaskStarted(job.tag, 0, "start", "start", "http://a/s", "bob", -1, "", "start", T1),
                m.TaskEnded(job.tag, 0, "start", keys.TASK_DONE, '{"x": 1}', '{"definitions": []}', T1, 5),
                m.TaskStarted(job.tag, 1, "next", "next", "http://a/n", "start", 0, "start", "start,next", T1),
                m.TaskEnded(job.tag, 1, "next", keys.TASK_ERROR, '{"error": "e"}', "undefined", T4, 7, 3),
                m.JobEnded(job.tag, T4, errors=1, task_ids=("start", "next"))]
    one_by_one, together = new_job(), new_job()
    for job in (one_by_one, together):
        create(jobs, job)
    # When one is written a moment per batch, the other all in one batch
    for op in moments(one_by_one):
        jobs.apply([op])
    jobs.apply(moments(together))
    # Expect the same keys, fields, markers and index entries (the tags aside)
    a = {k.replace(one_by_one.tag, "TAG"): v for k, v in _state(client, jobs, one_by_one).items()}
    b = {k.replace(together.tag, "TAG"): v for k, v in _state(client, jobs, together).items()}
    assert a == b
    assert b["TAG"]["task.next.status.current"] == "error" and b["index:done"] and not b["index:running"]
    assert "TAG:start:running" not in b and b["TAG:next:error"] == T4 and not b["owned"]
