"""Whether an engine is whole and its jobs move, read from Redis alone: /api/health and
`cameron status` must tell the truth without asking an actor, since asking one by name
creates it when it is missing and so repairs what it was meant to report."""

import time

import redis

from cameron import keys


def engine_health(client, engine: str, stall_after: float, now: float | None = None) -> dict:
    """The engine's supervision tree and job progress, from its health record (which JobData
    refreshes every second) and its set of unfinished jobs. `ok` is False, with `error`
    saying why, when the record cannot be read (`unknown` too), is gone (no Supervisor, or no JobData, for a few seconds), a
    child is missing or given up, or unfinished jobs have not moved for `stall_after` s."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.engine_health(engine))
    pipe.scard(keys.engine_jobs(engine))
    try:
        record, unfinished = pipe.execute()
    except redis.RedisError as e:
        # `unknown`: Redis, not the engine, is what cannot be judged.
        return {"ok": False, "unknown": True, "error": f"the engine's health record cannot be read: {e}"}
    return judge(record, unfinished, stall_after, time.time() if now is None else now)


def judge(record: dict, unfinished: int, stall_after: float, now: float) -> dict:
    if not record:
        return {"ok": False, "unfinished_jobs": unfinished,
                "error": "the supervision tree has not reported for a few seconds "
                         "(no Supervisor or no JobData, or they cannot reach Redis)"}
    children, expected = int(record["children"]), int(record["expected"])
    given_up = [role for role in record.get("given_up", "").split(",") if role]
    idle = max(0.0, now - float(record["progress"]))
    health = {"ok": True, "supervisor_pid": int(record["supervisor_pid"]), "children": children,
              "expected": expected, "given_up": given_up, "unfinished_jobs": unfinished,
              "idle_s": round(idle, 1)}
    problems = []
    if given_up:
        problems.append(f"given up restarting {', '.join(given_up)}")
    elif children < expected:
        problems.append(f"{expected - children} of the Supervisor's {expected} children missing")
    if unfinished and idle > stall_after:
        moved = "job has" if unfinished == 1 else "jobs have"
        problems.append(f"{unfinished} unfinished {moved} not moved for {idle:.0f} s")
    if problems:
        health.update(ok=False, error="; ".join(problems))
    return health
