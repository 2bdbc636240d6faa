"""Redis key and field names, as operators type them into redis-cli (SPEC.md, Redis schema)."""

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


def test_task_markers_carry_the_task_index_and_state():
    assert keys.task_marker(TAG, 0, keys.TASK_RUNNING) == TAG + ":0:running"
    assert keys.task_marker(TAG, 6, keys.TASK_DONE) == TAG + ":6:done"
    assert keys.task_marker(TAG, 12, keys.TASK_ERROR) == TAG + ":12:error"


def test_job_and_task_field_names_match_the_spec():
    assert (keys.JOB_KEY, keys.JOB_DATA, keys.JOB_REQUESTOR) == ("job.key", "job.data", "job.requestor")
    assert (keys.JOB_STATUS, keys.JOB_TASKS) == ("job.status.current", "job.tasks")
    assert keys.job_time("scheduled") == "job.status.scheduled.time"
    assert keys.task_field(3, "status.current") == "task.3.status.current"
    assert keys.task_field(0, "output.next_activities") == "task.0.output.next_activities"
    assert keys.task_time(2, "error") == "task.2.status.error.time"
