"""The store's Lua scripts (the .lua files beside this one), their $NAMEs filled in from keys.py."""

import json
from pathlib import Path
from string import Template

from cameron import keys

#: The fields of a job that a take off the inbox returns (what the scheduler needs to run it).
TAKEN_FIELDS = (keys.JOB_KEY, keys.JOB_DATA, keys.JOB_REQUESTOR, keys.JOB_PROCESS, keys.JOB_START_URL,
                keys.JOB_STATUS, keys.job_time(keys.SCHEDULED), keys.JOB_CANCEL_REQUESTED,
                keys.JOB_DATA_JSON)


def _lua(value) -> str:
    """A Lua literal of a string, or of a table of strings."""
    if isinstance(value, tuple):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    return json.dumps(value)  # a JSON string is a valid Lua string literal for these names


#: What the scripts' $NAMEs stand for: every key and field name comes from keys.py (key
#: patterns with %s for an engine's id, for string.format).
_NAMES = {
    "JOB_KEY": keys.JOB_KEY, "JOB_DATA": keys.JOB_DATA, "JOB_REQUESTOR": keys.JOB_REQUESTOR,
    "JOB_STATUS": keys.JOB_STATUS, "JOB_SCHEDULED_TIME": keys.job_time(keys.SCHEDULED),
    "JOB_PROCESS": keys.JOB_PROCESS, "JOB_START_URL": keys.JOB_START_URL, "JOB_DATA_JSON": keys.JOB_DATA_JSON,
    "SCHEDULED": keys.SCHEDULED, "TAKEN": TAKEN_FIELDS,
    "ENGINE_JOBS": keys.engine_jobs("%s"), "ENGINE_LEASE": keys.engine_lease("%s"),
    "ENGINE_INBOX": keys.engine_inbox("%s"), "ENGINE_TAKING": keys.engine_taking("%s"),
    "ENGINE_ADOPTING": keys.engine_adopting("%s"), "ENGINE_WRITTEN": keys.engine_written("%s"),
}


def _script(name: str) -> str:
    """The Lua script cameron/store/<name>.lua, its $NAMEs replaced (an unknown one raises)."""
    text = (Path(__file__).parent / f"{name}.lua").read_text()
    return Template(text).substitute({k: _lua(v) for k, v in _NAMES.items()})


RENEW, CLAIM, CREATE, TAKE = (_script(n) for n in ("renew_lease", "claim_orphans", "create_job", "take_new"))
