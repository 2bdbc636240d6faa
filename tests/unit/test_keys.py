"""Redis key and field names, as operators type them into redis-cli (docs/redis-schema.md)."""

from cameron import keys

TAG = "cameron:process:foo:key:(id,007):job:0123456789abcdef0123456789abcdef"


def test_the_job_hash_is_named_after_process_key_and_uuid():
    assert keys.job_tag("foo", "(id,007)", "0123456789abcdef0123456789abcdef") == TAG


def test_a_key_is_kept_verbatim_in_the_job_tag():
    # Given a key with capitals, spaces and a slash: nothing is lowercased or escaped
    assert keys.job_tag("Billing", "Bob Smith/Acme", "u") == "cameron:process:Billing:key:Bob Smith/Acme:job:u"


def test_job_markers_say_pending_running_or_done():
    assert keys.job_marker(TAG, keys.SCHEDULED) == TAG + ":pending"
    assert keys.job_marker(TAG, keys.RUNNING) == TAG + ":running"
    assert keys.job_marker(TAG, keys.DONE) == TAG + ":done"


def test_task_markers_carry_the_task_name_and_state():
    assert keys.task_marker(TAG, "start", keys.TASK_RUNNING) == TAG + ":start:running"
    assert keys.task_marker(TAG, "act_1", keys.TASK_DONE) == TAG + ":act_1:done"
    assert keys.task_marker(TAG, "act_1#2", keys.TASK_ERROR) == TAG + ":act_1#2:error"


def test_job_and_task_field_names_match_the_spec():
    assert (keys.JOB_KEY, keys.JOB_DATA, keys.JOB_REQUESTOR) == ("job.key", "job.data", "job.requestor")
    assert (keys.JOB_STATUS, keys.JOB_TASKS) == ("job.status.current", "job.tasks")
    assert keys.job_time("scheduled") == "job.status.scheduled.time"
    assert keys.task_field("act_3", "status.current") == "task.act_3.status.current"
    assert keys.task_field("start", "output.next_activities") == "task.start.output.next_activities"
    assert keys.task_time("act_2", "error") == "task.act_2.status.error.time"


def test_task_ids_are_read_by_the_status_suffix_whatever_dots_the_names_hold():
    h = {"job.status.current": "running", "task.start.status.current": "done", "task.start.index": "0",
         "task.a.status.status.current": "running", "task.a.status.index": "1",
         "task.x:y#2.status.current": "error"}
    assert sorted(keys.task_ids(h)) == ["a.status", "start", "x:y#2"]
