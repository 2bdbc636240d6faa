"""Every rule of a job's life (cameron.job), in memory: no actor, no Redis, no HTTP."""

import json

from cameron import keys, store
from cameron import messages as m
from cameron.activity import ActivityResult, Definition
from cameron.catalog import Process
from cameron.config import Config
from cameron.job import Effects, Job, Jobs

UUID = "ab" * 16
SPEC = m.JobSpec(process=Process("foo", "http://a/start"), key="k", data={"in": 1}, requestor="bob",
                 uuid=UUID, tag=keys.job_tag("foo", "k", UUID))
CONFIG = Config(max_depth=3, max_tasks=6, max_job_bytes=10_000)


def answer(name="whois", data=None, children=(), leaf=False):
    nxt = None if leaf else {"definitions": [{"name": c, "url": f"http://a/{c}"} for c in children]}
    return ActivityResult(name, data, nxt, tuple(Definition(c, f"http://a/{c}") for c in children))


def outcome(n, result=None, error=None, attempts=1):
    return m.ActivityOutcome(UUID, n, result, error, 5, attempts)


def kinds(fx):
    return [type(op).__name__ for op in fx.moments]


def started_job(config=CONFIG):
    fx = Effects()
    return Job.start(SPEC, config, fx), fx


def test_a_job_starts_by_calling_its_start_task_with_the_jobs_data():
    job, fx = started_job()
    assert kinds(fx) == ["JobStarted", "TaskStarted"]
    [call] = fx.calls
    assert (call.n, call.name, call.url, call.again) == (0, "start", "http://a/start", False)
    assert call.body == {"job": UUID, "key": "k", "data": {"in": 1}, "requestor": "bob"}
    started = fx.moments[1]
    assert (started.id, started.parent, started.parent_id, started.tasks_csv) == ("start", -1, "", "start")
    assert job.final is None


def test_an_answer_starts_its_next_activities_with_its_data_and_name_as_requestor():
    job, _ = started_job()
    fx = Effects()
    assert job.task_ended(outcome(0, answer(data={"who": 7}, children=["a", "b"])), fx).id == "start"
    assert kinds(fx) == ["TaskEnded", "TaskStarted", "TaskStarted"]
    ended = fx.moments[0]
    assert (ended.status, json.loads(ended.data_json), json.loads(ended.next_json)["definitions"][1]["name"]) == (
        keys.TASK_DONE, {"who": 7}, "b")
    assert [(c.n, c.name, c.body["data"], c.body["requestor"]) for c in fx.calls] == [
        (1, "a", {"who": 7}, "whois"), (2, "b", {"who": 7}, "whois")]
    assert [(op.parent, op.parent_id) for op in fx.moments[1:]] == [(0, "start"), (0, "start")]
    assert [op.tasks_csv for op in fx.moments[1:]] == ["", "start,a,b"]  # the list once, whole


def test_a_leaf_records_undefined_next_activities_and_the_job_ends_done_when_none_runs():
    job, _ = started_job()
    job.task_ended(outcome(0, answer(children=["a"])), Effects())
    fx = Effects()
    job.task_ended(outcome(1, answer(data="x", leaf=True)), fx)
    assert kinds(fx) == ["TaskEnded", "JobEnded"]
    assert fx.moments[0].next_json == "undefined"
    end = fx.moments[1]
    assert (end.status, end.errors, end.task_ids) == (keys.DONE, 0, ("start", "a"))
    assert job.final == keys.DONE


def test_a_failed_call_ends_its_task_in_error_with_the_url_and_starts_nothing():
    job, _ = started_job()
    fx = Effects()
    job.task_ended(outcome(0, error="activity answered HTTP 500", attempts=3), fx)
    ended, end = fx.moments
    assert (ended.status, ended.attempts, ended.next_json) == (keys.TASK_ERROR, 3, "undefined")
    assert json.loads(ended.data_json) == {"error": "activity answered HTTP 500", "url": "http://a/start"}
    assert not fx.calls and (end.status, end.errors) == (keys.DONE, 1)  # a failed task does not fail the job


def test_two_tasks_of_one_name_are_name_and_name_2_and_an_activitys_own_name_2_is_kept_apart():
    job, _ = started_job()
    fx = Effects()
    job.task_ended(outcome(0, answer(children=["twin", "twin", "twin#2", "twin"])), fx)
    assert [c.name for c in fx.calls] == ["twin", "twin#2", "twin#2#2", "twin#3"]
    assert fx.moments[-1].tasks_csv == "start,twin,twin#2,twin#2#2,twin#3"
    assert [op.name for op in fx.moments[1:]] == ["twin", "twin", "twin#2", "twin"]


def test_the_depth_limit_ends_the_parent_in_error_naming_it():
    job, _ = started_job()                                  # start: depth 0
    job.task_ended(outcome(0, answer(children=["a"])), Effects())          # a: depth 1
    job.task_ended(outcome(1, answer(children=["b"])), Effects())          # b: depth 2
    fx = Effects()
    job.task_ended(outcome(2, answer(children=["c"])), fx)  # c would be depth 3 = max_depth
    assert not fx.calls
    assert "depth limit of 3" in json.loads(fx.moments[0].data_json)["error"]


def test_the_task_limit_counts_every_task_of_the_job():
    job, _ = started_job()
    job.task_ended(outcome(0, answer(children=["a", "b", "c"])), Effects())  # 4 tasks
    fx = Effects()
    job.task_ended(outcome(1, answer(children=["d", "e", "f"])), fx)         # 7 > 6
    assert not fx.calls and "past its limit of 6 tasks" in json.loads(fx.moments[0].data_json)["error"]
    fx = Effects()
    job.task_ended(outcome(2, answer(children=["d", "e"])), fx)              # 6: allowed
    assert [c.name for c in fx.calls] == ["d", "e"]


def test_the_stored_bytes_limit_refuses_the_answer_that_would_pass_it():
    job, _ = started_job(Config(max_job_bytes=100))
    fx = Effects()
    job.task_ended(outcome(0, answer(data="x" * 200)), fx)
    error = json.loads(fx.moments[0].data_json)["error"]
    assert fx.moments[0].status == keys.TASK_ERROR and "bytes of stored answers" in error


def test_a_cancel_starts_no_new_task_and_ends_the_job_cancelled_once_none_runs():
    job, _ = started_job()
    job.task_ended(outcome(0, answer(children=["a", "b"])), Effects())
    fx = Effects()
    job.cancel(fx)
    assert not fx.moments and job.final is None  # a and b still run
    job.task_ended(outcome(1, answer(children=["c"])), fx)
    assert not fx.calls and kinds(fx) == ["TaskEnded"]  # done, but c does not start
    job.task_ended(outcome(2, answer(leaf=True)), fx)
    assert fx.moments[-1].status == keys.CANCELLED and job.final == keys.CANCELLED


def test_a_job_cancelled_before_it_started_ends_without_a_call():
    fx = Effects()
    job = Job.start(SPEC, CONFIG, fx, cancelled=True)
    assert not fx.calls and kinds(fx) == ["JobEnded"] and job.final == keys.CANCELLED


def test_an_outcome_for_a_task_no_longer_running_ends_nothing():
    job, _ = started_job()
    job.task_ended(outcome(0, answer(children=["a"])), Effects())
    fx = Effects()
    assert job.task_ended(outcome(0, answer(children=["a"])), fx) is None  # a late duplicate
    assert not fx.moments and not fx.calls


def test_resume_calls_running_tasks_again_with_their_parents_output_and_keeps_the_rest():
    tasks = [
        {"n": 0, "id": "start", "name": "start", "url": "http://a/start", "requestor": "bob", "parent": -1,
         "status": keys.TASK_DONE, "output": json.dumps({"who": 7})},
        {"n": 1, "id": "a", "name": "a", "url": "http://a/a", "requestor": "whois", "parent": 0,
         "status": keys.TASK_ERROR, "output": json.dumps({"error": "e", "url": "http://a/a"})},
        {"n": 2, "id": "a#2", "name": "a", "url": "http://a/a", "requestor": "whois", "parent": 0,
         "status": keys.TASK_RUNNING, "output": None},
    ]
    fx = Effects()
    job = Job.resume(SPEC, CONFIG, tasks, fx)
    assert not fx.moments
    [call] = fx.calls
    assert (call.n, call.name, call.body["data"], call.body["requestor"]) == (2, "a#2", {"who": 7}, "whois")
    assert call.again  # the activity hears that an earlier call may have reached it
    # Its next children continue the names: a third `a` is a#3.
    fx = Effects()
    job.task_ended(outcome(2, answer(children=["a"])), fx)
    assert fx.calls[0].name == "a#3" and fx.moments[-1].tasks_csv == "start,a,a#2,a#3"
    fx = Effects()
    job.task_ended(outcome(3, answer(leaf=True)), fx)
    assert fx.moments[-1].errors == 1  # the error recorded before the resume counts


def test_resume_with_nothing_running_ends_the_job_and_without_tasks_starts_it():
    done = [{"n": 0, "id": "start", "name": "start", "url": "u", "requestor": "bob", "parent": -1,
             "status": keys.TASK_DONE, "output": "1"}]
    fx = Effects()
    assert Job.resume(SPEC, CONFIG, done, fx).final == keys.DONE and kinds(fx) == ["JobEnded"]
    fx = Effects()
    Job.resume(SPEC, CONFIG, [], fx)
    assert kinds(fx) == ["JobStarted", "TaskStarted"]


def test_a_recall_calls_again_only_the_tasks_still_running_and_says_so():
    job, _ = started_job()
    job.task_ended(outcome(0, answer(children=["a", "b"])), Effects())
    # An answer the dead caller sent before it died still counts: `a` is done, not called again.
    fx = Effects()
    assert job.task_ended(outcome(1, answer(leaf=True)), fx).id == "a"
    job.recall([1, 2], fx)
    assert [(c.name, c.again) for c in fx.calls] == [("b", True)]
    fx = Effects()
    assert job.task_ended(outcome(2, answer(leaf=True)), fx).id == "b" and job.final == keys.DONE


def test_process_settings_override_the_engines_for_each_call():
    spec = m.JobSpec(process=Process("foo", "http://a/s", read_timeout=2.5, max_attempts=1), key="k",
                     data="d", requestor="r", uuid=UUID, tag=SPEC.tag)
    fx = Effects()
    Job.start(spec, CONFIG, fx)
    call = fx.calls[0]
    assert (call.read_timeout, call.connect_timeout, call.retry.max_attempts) == (2.5, CONFIG.connect_timeout, 1)


def test_a_runners_job_both_resumed_and_taken_off_the_inbox_runs_once_even_after_it_ended():
    jobs, fx = Jobs(CONFIG), Effects()
    assert jobs.resume(m.ResumeJob(SPEC, keys.SCHEDULED, []), fx) == 0  # started: no call again
    jobs.start(SPEC, fx)
    assert len(fx.calls) == 1 and len(jobs) == 1
    [(job, task, _)] = jobs.outcomes([outcome(0, answer(leaf=True))], fx)
    assert task.id == "start" and job.final == keys.DONE and len(jobs) == 0 and jobs.finished == 1
    jobs.start(SPEC, fx)
    assert len(fx.calls) == 1 and len(jobs) == 0
    # ... and a reconcile asks only about what it neither drives nor ended
    other = keys.job_tag("foo", "k", "cd" * 16)
    assert jobs.missing([SPEC.tag, other]) == [other]


def test_a_cancel_that_overtakes_its_job_ends_it_cancelled_when_it_comes():
    jobs, fx = Jobs(CONFIG), Effects()
    assert jobs.cancel(UUID, SPEC.tag, fx) is None and not fx.moments
    jobs.start(SPEC, fx)
    assert not fx.calls and kinds(fx) == ["JobEnded"] and fx.moments[0].status == keys.CANCELLED


def test_a_resumed_job_counts_its_tasks_called_again_and_a_job_taken_over_is_dropped():
    running = [{"n": 0, "id": "start", "name": "start", "url": "http://a/start", "requestor": "bob",
                "parent": -1, "status": keys.TASK_RUNNING, "output": None}]
    jobs, fx = Jobs(CONFIG), Effects()
    assert jobs.resume(m.ResumeJob(SPEC, keys.RUNNING, running), fx) == 1
    assert jobs.running() == [(UUID, [0])]
    [job] = jobs.drop([SPEC.tag])
    assert job.spec == SPEC and len(jobs) == 0 and jobs.drop([SPEC.tag]) == []


def _hash_of(moments) -> dict:
    """The task fields the moments would write to the job's hash, as store.tasks_of reads them."""
    h = {}
    for op in moments:
        f = lambda name, value: h.__setitem__(keys.task_field(op.id, name), value)  # noqa: E731
        if isinstance(op, m.TaskStarted):
            for name, value in [("index", str(op.n)), ("name", op.name), ("url", op.url),
                                ("requestor", op.requestor), ("parent", op.parent_id),
                                ("status.current", keys.TASK_RUNNING)]:
                f(name, value)
        elif isinstance(op, m.TaskEnded):
            for name, value in [("status.current", op.status), ("output.data", op.data_json),
                                ("output.next_activities", op.next_json)]:
                f(name, value)
    return h


def test_resume_counts_the_stored_answers_as_the_running_job_did():
    # Given a job whose start answered with next activities, one child done, one in error
    job, fx = started_job()
    job.task_ended(outcome(0, answer(data="x" * 50, children=["a", "b"])), fx)
    job.task_ended(outcome(1, answer(data="y" * 30, leaf=True)), fx)
    job.task_ended(outcome(2, error="refused"), fx)
    assert job.stored_bytes > 80  # the answers' data and their next activities (JSON)
    # When a runner resumes it from what Redis holds
    resumed = Job.resume(SPEC, CONFIG, store.tasks_of(_hash_of(fx.moments)), Effects())
    # Expect the same count: max_job_bytes goes on from where the job was
    assert resumed.stored_bytes == job.stored_bytes
