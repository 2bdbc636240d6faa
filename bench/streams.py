"""`python -m bench.streams`: what open event streams cost the engine. Foo jobs/s in the
throughput figure's closed loop without streams and with N streams open (each on a job that
sleeps through the run, so it stays open), the two interleaved A B B A A B ... so that drift
(the machine's other load, Redis growing) falls on both; the CPU each part of the stack spent
per job, Redis's own time per job by command, and what the web workers hold (threads, RSS)."""

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from urllib.parse import urlsplit

from bench import figures
from bench.__main__ import FULL
from bench.stack import Stack, wait_for
from cameron import actorsys, keys, procfs


#: Seconds each phase waits before its loop, with or without streams alike: a loop that
#: starts right after another runs slower than one after a pause (an A/A run showed it).
SETTLE = 2.0


def _threads_and_rss(pid: int) -> tuple[int, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.split()
    return int(fields["Threads"][0]), int(fields["VmRSS"][0]) // 1024


def web_workers(stack: Stack) -> list[int]:
    return actorsys.children(stack.web.pid)


class Streams:
    """N SSE connections from one asyncio loop on its own thread: each reads until closed."""

    def __init__(self, base: str, uuids: list[str]):
        parts = urlsplit(base)
        self.host, self.port, self.uuids = parts.hostname, parts.port, uuids
        self.opened = 0
        self.events = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks = []
        self.errors = []

    async def _one(self, uuid: str):
        try:
            await self._read(uuid)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.errors.append(repr(e))

    async def _read(self, uuid: str):
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(f"GET /api/job/{uuid}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n", 1)[0], head[:200]
        self.opened += 1
        try:
            while chunk := await reader.read(65536):
                self.events += chunk.count(b"\nevent: ")
        finally:
            writer.close()

    def open(self):
        self.thread.start()
        for uuid in self.uuids:
            self.tasks.append(asyncio.run_coroutine_threadsafe(self._one(uuid), self.loop))

    def close(self):
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _cpu_ms(pid: int) -> float:
    return procfs.cpu_seconds(pid) * 1000


def _redis_usec(stack: Stack) -> dict:
    """Redis's own count of calls and microseconds, per command."""
    return {name.removeprefix("cmdstat_"): (v["calls"], v["usec"])
            for name, v in stack.store.info("commandstats").items()}


def loop_jobs_per_s(stack: Stack, api: figures.Api, clients: int, seconds: float) -> dict:
    """The closed loop's jobs/s and latency; the CPU each part spent per job meanwhile (a
    figure that the machine's other load moves far less than the rate); Redis's time per job."""
    def one_job():
        return stack.watcher.wait(api.start("foo"), figures.JOB_DEADLINE)
    pids = {"web": web_workers(stack), "redis": [stack.redis.proc.pid],
            "actors": actorsys.system_pids(stack.config), "activities": [stack.acts.pid],
            "bench": [os.getpid()]}
    before = {k: sum(_cpu_ms(p) for p in v) for k, v in pids.items()}
    commands = _redis_usec(stack)
    spans = figures._closed_loop(clients, seconds, one_job)
    after = {k: sum(_cpu_ms(p) for p in v) for k, v in pids.items()}
    jobs = max(1, len(spans))
    redis_us = {name: ((calls - commands.get(name, (0, 0))[0]) / jobs, (usec - commands.get(name, (0, 0))[1]) / jobs)
                for name, (calls, usec) in _redis_usec(stack).items()}
    lat = [(t1 - t0) * 1000 for t0, t1 in spans]
    return {"jobs_per_s": round(len(spans) / seconds, 1), "p50_ms": round(figures.percentile(lat, 50), 1),
            "p99_ms": round(figures.percentile(lat, 99), 1),
            **{f"{k}_cpu_ms_per_job": round((after[k] - before[k]) / jobs, 3) for k in pids},
            # The stack's: everything but the bench's own process (its clients, and the streams' reader).
            "stack_cpu_ms_per_job": round(sum(after[k] - before[k] for k in pids if k != "bench") / jobs, 3),
            "redis_us_per_job": round(sum(us for _, us in redis_us.values()), 1),
            "redis_commands_per_job": {name: [round(calls, 2), round(us, 1)]
                                       for name, (calls, us) in sorted(redis_us.items(), key=lambda i: -i[1][1])
                                       if calls > 0.01}}


def upkeep(stack: Stack, seconds: float) -> dict:
    """CPU ms per second of the web workers and Redis, and Redis's commands per second, with
    no job moving but the sleeping ones: what the open streams cost by themselves."""
    pids = {"web": web_workers(stack), "redis": [stack.redis.proc.pid]}
    before = {k: sum(_cpu_ms(p) for p in v) for k, v in pids.items()}
    commands = _redis_usec(stack)
    time.sleep(seconds)
    after = {k: sum(_cpu_ms(p) for p in v) for k, v in pids.items()}
    calls = sum(c for c, _ in _redis_usec(stack).values()) - sum(c for c, _ in commands.values())
    return {**{f"{k}_cpu_ms_per_s": round((after[k] - before[k]) / seconds, 2) for k in pids},
            "redis_commands_per_s": round(calls / seconds, 1)}


def _subscribed(stack: Stack) -> int:
    """Job channels some web worker is subscribed to: 0 once every stream's end was noticed."""
    return len(stack.store.pubsub_channels(f"{keys.PREFIX}:job:*"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=FULL["clients"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs, without and with streams")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="how long the streams' upkeep is measured, the engine idle")
    parser.add_argument("--out", help="also write the results (JSON) here")
    args = parser.parse_args(argv)

    def say(text):
        print(f"bench.streams: {text}", file=sys.stderr, flush=True)

    sizes = {**FULL, "inflight_ms": 3_600_000}  # the streams' jobs sleep for an hour
    out = {"streams": args.streams, "clients": args.clients, "seconds": args.seconds, "runs": []}
    with Stack(sizes) as stack:
        api = figures.Api(stack.api)
        for _ in range(6):
            stack.watcher.wait(api.start("foo"), figures.JOB_DEADLINE)
        sleepers = [api.start("inflight") for _ in range(args.streams)]
        wait_for(lambda: stack.store.zcard("cameron:process:inflight:jobs:running") == args.streams,
                 60, "the sleeping jobs to run")
        events = 0
        time.sleep(2)
        out["upkeep_without"] = upkeep(stack, args.idle_seconds)
        say(f"upkeep without streams: {out['upkeep_without']}")
        figures._closed_loop(args.clients, 5, lambda: stack.watcher.wait(api.start("foo"), figures.JOB_DEADLINE))

        def without():
            time.sleep(SETTLE)
            run = loop_jobs_per_s(stack, api, args.clients, args.seconds)
            say(f"without streams: {run['jobs_per_s']} jobs/s {json.dumps(run)}")
            return run

        def with_streams():
            nonlocal events
            streams = Streams(stack.api, sleepers)
            streams.open()
            try:
                wait_for(lambda: streams.opened == args.streams, 60, "every stream to open")
            except TimeoutError:
                say(f"{streams.opened} open, errors: {streams.errors[:5]} ({len(streams.errors)})")
                raise
            time.sleep(SETTLE)
            if "upkeep_with" not in out:
                out["upkeep_with"] = upkeep(stack, args.idle_seconds)
                say(f"upkeep with {args.streams} streams: {out['upkeep_with']}")
            run = loop_jobs_per_s(stack, api, args.clients, args.seconds)
            run["workers"] = {pid: dict(zip(("threads", "rss_mib"), _threads_and_rss(pid)))
                              for pid in web_workers(stack)}
            say(f"with {streams.opened} streams: {run['jobs_per_s']} jobs/s {json.dumps(run)}")
            events += streams.events
            streams.close()
            # Until the server has noticed every stream's end (a B must not overlap the next A).
            wait_for(lambda: _subscribed(stack) == 0, 60, "every closed stream to end on the server", interval=0.5)
            return run

        for i in range(args.rounds):
            order = [("without", without), ("with", with_streams)]
            run = {name: phase() for name, phase in (order if i % 2 == 0 else order[::-1])}
            run["change_pct"] = round(100 * (run["with"]["jobs_per_s"] / run["without"]["jobs_per_s"] - 1), 1)
            say(f"round {i + 1}: {run['without']['jobs_per_s']} -> {run['with']['jobs_per_s']} jobs/s ({run['change_pct']:+} %), "
                f"CPU per job {run['without']['stack_cpu_ms_per_job']} -> {run['with']['stack_cpu_ms_per_job']} ms")
            out["runs"].append(run)
        out["events_read"] = events
    runs = out["runs"]
    out["median_without"] = statistics.median(r["without"]["jobs_per_s"] for r in runs)
    out["median_with"] = statistics.median(r["with"]["jobs_per_s"] for r in runs)
    out["change_pct"] = [r["change_pct"] for r in runs]
    out["median_change_pct"] = statistics.median(out["change_pct"])
    out["stack_cpu_change_pct"] = [round(100 * (r["with"]["stack_cpu_ms_per_job"] / r["without"]["stack_cpu_ms_per_job"] - 1), 1)
                                   for r in runs]
    out["median_stack_cpu_change_pct"] = statistics.median(out["stack_cpu_change_pct"])
    for part in ("web", "redis", "actors", "activities", "bench", "stack"):
        for phase in ("without", "with"):
            out[f"median_{part}_cpu_ms_per_job_{phase}"] = statistics.median(
                r[phase][f"{part}_cpu_ms_per_job"] for r in runs)
    for phase in ("without", "with"):
        out[f"median_redis_us_per_job_{phase}"] = statistics.median(r[phase]["redis_us_per_job"] for r in runs)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
