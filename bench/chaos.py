"""`python -m bench.chaos [--seconds 600]`: a chaos soak of the real stack. Clients start jobs
while every few seconds a random engine process gets `kill -9` (the Supervisor, a runner,
JobData, the scheduler or the catalog, a TaskActor, a gunicorn worker) and Redis is paused
for 3 s every minute (once in a short run); nobody helps from outside. The activity server counts every call and looks the task
up in Redis as it comes: a call of a task Redis already records `done` or `error` is one the
engine must never make. It prints the counts, and exits 1 if any promise was broken: every
accepted job final with every task final, no finished task called, as many processes after
as before. The test suite runs it for half a minute (tests/test_stack_chaos.py)."""

import argparse
import collections
import json
import os
import random
import signal
import sys
import threading
import time

import requests

from bench.stack import KEY, Stack, wait_for
from cameron import actorsys, keeper, keys, procfs, store
from cameron.activity_server import ActivityServer

#: Sizes of the processes the clients start (see bench.stack.catalog).
SIZES = {"chain": 5, "fanout_n": 4, "fanout_ms": 500, "inflight_ms": 300}
PROCESSES = ["foo", "foo", "chain", "fanout", "inflight"]
#: Kinds of process killed in turn.
VICTIMS = ["supervisor", "runner", "job_data, scheduler or catalog", "task_actor", "gunicorn worker"]


class CheckingServer(ActivityServer):
    """Looks each called task up in Redis (`redis` is set once the stack's Redis is up)."""

    redis = None

    def __init__(self):
        super().__init__("127.0.0.1", 0)
        self.finished_calls = []  # (job, task, attempt, state recorded when it was called)
        self.looked_up = collections.Counter()

    def count(self, path, job=None, task=None, attempt=1, again=False):
        super().count(path, job, task, attempt, again=again)
        if self.redis is None or not job or not task:
            return
        try:
            tag = self.redis.get(keys.job_by_uuid(job))
            state = tag and self.redis.hget(tag, keys.task_field(task.split(":", 1)[1], "status.current"))
        except Exception:  # Redis paused or the header odd: not the engine's fault
            return
        with self._lock:
            self.looked_up[state] += 1
            if state in (keys.TASK_DONE, keys.TASK_ERROR):
                self.finished_calls.append((job, task, attempt, state))


def _tree(stack) -> dict:
    return {p: procfs.ppid(p) for p in actorsys.system_pids(stack.config)}


def _engine_processes(stack) -> int:
    """The actor system's processes, gunicorn's, and the keeper."""
    return len(_tree(stack)) + 1 + len(actorsys.children(stack.web.pid)) + keeper.pidfile(stack.config).exists()


def _victim(stack, kind: str):
    tree = _tree(stack)
    admin = next((p for p, parent in tree.items() if parent not in tree), None)
    tops = [p for p, parent in tree.items() if parent == admin]
    supervisor = max(tops, key=lambda p: sum(1 for q in tree.values() if q == p), default=None)
    children = [p for p, parent in tree.items() if parent == supervisor]
    runners = [p for p in children if p in tree.values()]
    pools = {"supervisor": [supervisor] if supervisor else [],
             "runner": runners,
             "job_data, scheduler or catalog": [p for p in children if p not in runners],
             "task_actor": [p for p, parent in tree.items() if parent in runners],
             "gunicorn worker": actorsys.children(stack.web.pid)}
    return random.choice(pools[kind]) if pools[kind] else None


def run(seconds: float, clients: int = 8, say=print) -> dict:
    """The soak; its counts, and `ok` when every promise held."""
    acts = CheckingServer().start_in_thread()
    try:
        with Stack(SIZES, acts_url=acts.url) as stack:
            acts.redis = store.connect(stack.redis.url)
            return _soak(stack, acts, seconds, clients, say)
    finally:
        acts.stop()


def _soak(stack, acts, seconds, clients, say) -> dict:
    accepted, stop = [], threading.Event()

    def client(n):
        session, i = requests.Session(), 0
        while not stop.is_set():
            process = random.choice(PROCESSES)
            i += 1
            try:
                resp = session.post(f"{stack.api}/api/process/{process}/start", timeout=10,
                                    json={"key": KEY, "data": f"{n}-{i}", "requestor": "chaos"})
            except requests.RequestException:
                continue  # its gunicorn worker was killed: not accepted, nothing promised
            if resp.status_code == 201:
                accepted.append((process, resp.json()["uuid"]))
            time.sleep(0.05)

    # `cameron start` leaves the keeper last: count once it is there.
    wait_for(lambda: keeper.pidfile(stack.config).exists(), 10, "the keeper")
    processes_before = _engine_processes(stack)
    kills = collections.Counter()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    began = time.monotonic()
    # Redis paused every minute in a long run, once half-way in a short one.
    pause_every = min(60.0, seconds / 2)
    last_pause = began
    try:
        while time.monotonic() - began < seconds:
            time.sleep(random.uniform(2, 4))
            if time.monotonic() - last_pause > pause_every:
                last_pause = time.monotonic()
                os.kill(stack.redis.proc.pid, signal.SIGSTOP)
                try:
                    time.sleep(3)
                finally:
                    os.kill(stack.redis.proc.pid, signal.SIGCONT)
                kills["redis paused 3 s"] += 1
                continue
            kind = VICTIMS[sum(kills.values()) % len(VICTIMS)]
            pid = _victim(stack, kind)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                kills[kind] += 1
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    say(f"chaos: {len(accepted)} jobs accepted in {seconds:g} s; kills: {dict(kills)}; waiting for them to end")

    def unfinished():
        pipe = stack.store.pipeline(transaction=False)
        for process, uuid in accepted:
            pipe.hget(keys.job_tag(process, KEY, uuid), keys.JOB_STATUS)
        return [job for job, state in zip(accepted, pipe.execute()) if state not in (keys.DONE, keys.CANCELLED)]
    try:
        wait_for(lambda: not unfinished(), 120, "every accepted job to end", interval=0.5)
    except TimeoutError:
        pass  # counted below
    left = unfinished()
    tasks_not_final = 0
    for process, uuid in accepted:
        job = stack.store.hgetall(keys.job_tag(process, KEY, uuid))
        tasks_not_final += sum(1 for t in store.tasks_of(job) if t["status"] not in (keys.TASK_DONE, keys.TASK_ERROR))
    try:
        wait_for(lambda: _engine_processes(stack) == processes_before, 10, "the processes to be back")
    except TimeoutError:
        pass
    counts = {"seconds": seconds, "clients": clients, "accepted": len(accepted), "kills": dict(kills),
              "calls": sum(acts.calls().values()), "unfinished_jobs": len(left),
              "tasks_not_final": tasks_not_final, "finished_task_calls": len(acts.finished_calls),
              "first_finished_task_calls": acts.finished_calls[:5],
              "processes_before": processes_before, "processes_after": _engine_processes(stack)}
    counts["ok"] = (not left and not tasks_not_final and not acts.finished_calls
                    and counts["processes_after"] == processes_before and bool(accepted))
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    counts = run(args.seconds, args.clients, say=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(counts, indent=2))
    return 0 if counts["ok"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("chaos: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
