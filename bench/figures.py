"""The six performance figures, each one run of a measurement against a running Stack."""

import http.client
import itertools
import json
import re
import selectors
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from bench.stack import KEY, Stack, pss_kib, rss_kib
from cameron import procfs

#: Jobs not done this long after they could have been mean the engine is stuck: fail the run.
JOB_DEADLINE = 120.0


def percentile(values, p: float) -> float:
    """Nearest-rank percentile: with few samples, a value that was measured."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


class Api:
    """POSTs to the API's start endpoint, one keep-alive connection per thread. A few lines
    on a bare socket rather than http.client (which parses every answer's headers with the
    email package) or requests: the client shares the 2 cores with the engine, and each of
    its microseconds per start is one the engine does not get."""

    def __init__(self, base: str):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port
        self.local = threading.local()
        self.body = json.dumps({"key": KEY, "data": "bench", "requestor": "bench"}).encode()
        self.requests = {}  # process -> the whole request, made once

    def _request(self, process: str) -> bytes:
        request = self.requests.get(process)
        if request is None:
            request = self.requests[process] = (
                f"POST /api/process/{process}/start HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
            ).encode() + self.body
        return request

    def start(self, process: str) -> str:
        """Start a job; its uuid."""
        request = self._request(process)
        for attempt in (1, 2):
            sock = getattr(self.local, "sock", None)
            if sock is None:
                sock = self.local.sock = self._connect()
            try:
                sock.sendall(request)
                status, close, payload = _read_answer(sock)
            except ConnectionError:
                # gunicorn closes keep-alive connections idle for 2 s: reconnect once.
                sock.close()
                self.local.sock = None
                if attempt == 2:
                    raise
                continue
            if close:
                sock.close()
                self.local.sock = None
            return _uuid(process, status, payload)

    def start_all(self, process: str, jobs: int, connections: int) -> list[str]:
        """`jobs` starts over `connections` connections at once, each sending its next request
        as soon as its answer came: their uuids. One thread and a selector rather than a
        thread per connection: 50 threads' hand-offs of the GIL cost more than their requests."""
        request, uuids, left = self._request(process), [], jobs
        selector = selectors.DefaultSelector()

        def open_one() -> socket.socket:
            sock = self._connect()
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, b"")
            return sock

        try:
            for _ in range(min(connections, jobs)):
                open_one().sendall(request)  # a few hundred bytes: the socket's buffer takes them
                left -= 1
            while len(uuids) < jobs:
                for key, _ in selector.select(JOB_DEADLINE) or _timeout(jobs - len(uuids)):
                    sock, data = key.fileobj, key.data + key.fileobj.recv(65536)
                    if not data:
                        raise ConnectionResetError("the API closed a connection with a start unanswered")
                    answer = _parse_answer(data)
                    if answer is None:
                        selector.modify(sock, selectors.EVENT_READ, data)
                        continue
                    status, close, payload = answer
                    uuids.append(_uuid(process, status, payload))
                    if close or not left:
                        selector.unregister(sock)
                        sock.close()
                        if not left:
                            continue
                        sock = open_one()
                    else:
                        selector.modify(sock, selectors.EVENT_READ, b"")
                    sock.sendall(request)
                    left -= 1
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()
            selector.close()
        return uuids

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def _timeout(unanswered: int):
    raise TimeoutError(f"{unanswered} starts unanswered after {JOB_DEADLINE:g} s")


def _uuid(process: str, status: int, payload: bytes) -> str:
    if status != 201:
        raise RuntimeError(f"POST {process}/start answered {status}: {payload[:200]!r}")
    return json.loads(payload)["uuid"]


def _parse_answer(data: bytes) -> tuple[int, bool, bytes] | None:
    """An HTTP/1.1 answer with a Content-Length, (status, whether the server closes the
    connection after it, body), if `data` holds all of it; else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end].decode("latin-1").lower()
    length = int(re.search(r"\r\ncontent-length: *(\d+)", head).group(1))
    body = data[end + 4:]
    if len(body) < length:
        return None
    return int(head[9:12]), "\r\nconnection: close" in head, body


def _read_answer(sock) -> tuple[int, bool, bytes]:
    """One answer off a blocking `sock`."""
    data = b""
    while (answer := _parse_answer(data)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the API closed the connection")
        data += chunk
    return answer


def _closed_loop(clients: int, seconds: float, one_job) -> list[tuple[float, float]]:
    """`clients` threads each run `one_job()` back to back until `seconds` have passed;
    (start, end) of every job that ended within the window."""
    end = time.perf_counter() + seconds
    spans, lock, failures = [], threading.Lock(), []

    def client():
        try:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                t1 = one_job()
                if t1 <= end:
                    with lock:
                        spans.append((t0, t1))
        except Exception as e:  # reported below: a thread's exception would be lost
            failures.append(e)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + JOB_DEADLINE)
    if failures:
        raise failures[0]
    return spans


# --- 1. hop overhead -----------------------------------------------------------

def hop(stack: Stack, api: Api, *, chain: int, jobs: int) -> dict:
    """Jobs one after the other: a chain of `chain` instant activities, and a one-task job.
    Job time is POST sent -> done marker set in Redis; the activities' own time (from the
    activity server) is subtracted, the rest divided by the hops."""
    def job_ms(process):
        before = stack.activity_stats()["busy_ms"]
        t0 = time.perf_counter()
        uuid = api.start(process)
        t1 = stack.watcher.wait(uuid, JOB_DEADLINE)
        inside = stack.activity_stats()["busy_ms"] - before
        return uuid, (t1 - t0) * 1000, inside

    chains, singles = [job_ms("chain") for _ in range(jobs)], [job_ms("chain1") for _ in range(jobs)]
    errors = stack.job_errors("chain", [u for u, _, _ in chains]) + \
        stack.job_errors("chain1", [u for u, _, _ in singles])
    chain_ms = statistics.median(ms - inside for _, ms, inside in chains)
    single_ms = statistics.median(ms - inside for _, ms, inside in singles)
    return {"hop_overhead_ms": chain_ms / chain,
            # The cost of one more task, without the job's fixed cost (POST, accept, end).
            "hop_marginal_ms": (chain_ms - single_ms) / (chain - 1),
            "chain_job_ms": statistics.median(ms for _, ms, _ in chains),
            "single_task_job_ms": single_ms,
            "activity_ms_per_chain": statistics.median(inside for _, _, inside in chains),
            "errors": errors}


# --- 2. throughput -----------------------------------------------------------------

def throughput(stack: Stack, api: Api, *, clients: int, seconds: float) -> dict:
    """Closed loop: `clients` clients each start a foo job and wait until it is done, then the next."""
    uuids = []

    def one_job():
        uuid = api.start("foo")
        uuids.append(uuid)
        return stack.watcher.wait(uuid, JOB_DEADLINE)

    # The engine's CPU: its actors, gunicorn and Redis (not the activity server, nor the bench).
    engine = stack.engine_pids() + [stack.redis.proc.pid]
    cpu = sum(procfs.cpu_seconds(pid) for pid in engine)
    spans = _closed_loop(clients, seconds, one_job)
    stack.wait_idle()
    cpu = sum(procfs.cpu_seconds(pid) for pid in engine) - cpu
    latencies = [(t1 - t0) * 1000 for t0, t1 in spans]
    return {"throughput_jobs_per_s": len(spans) / seconds,
            "job_p50_ms": percentile(latencies, 50), "job_p99_ms": percentile(latencies, 99),
            "engine_cpu_ms_per_job": cpu * 1000 / len(spans) if spans else None,
            "jobs": len(spans), "errors": stack.job_errors("foo", uuids)}


# --- 3. the limit ------------------------------------------------------------------

class DirectClient:
    """The foo job's HTTP calls made straight, with no engine: the same server, bodies and
    headers, and the same parallelism (a task's children at once, each child's own children
    as soon as it answers). http.client on kept-alive connections, as the engine's TaskActor."""

    def __init__(self, start_url: str, pool_size: int):
        self.start_url = start_url
        self.pool = ThreadPoolExecutor(pool_size)
        self.local = threading.local()
        self.calls = 0
        self.lock = threading.Lock()

    def _post(self, url: str, body: dict, headers: dict) -> dict:
        parts = urlsplit(url)
        conn = getattr(self.local, "conn", None)
        if conn is None:  # one activity server: one connection per thread does
            conn = self.local.conn = http.client.HTTPConnection(parts.netloc, timeout=30)
        for attempt in range(10):
            try:
                conn.request("POST", parts.path, json.dumps(body).encode(), headers)
                # As lean as the engine: no 40 ms delayed ACK with servers that write twice
                # (its TaskActor acknowledges at once too); an HTTP/1.0 server's answer closes
                # the connection, and http.client opens a new one for the next request.
                conn.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", 12), 1)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                # A server with a small listen backlog resets connections under a burst; the
                # engine calls again too (a reset is retried, after a back-off), so the limit
                # does as well.
                conn.close()
                if attempt == 9:
                    raise
                time.sleep(min(0.5, 0.01 * 2 ** attempt))
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
        return json.loads(raw)

    def run_job(self, job: str) -> float:
        self._task(job, 0, "start", self.start_url, "bench", "bench")
        return time.perf_counter()

    def _task(self, job, n, name, url, data, requestor) -> None:
        body = {"job": job, "key": KEY, "data": data, "requestor": requestor}
        answer = self._post(url, body, {"Content-Type": "application/json", "X-Cameron-Job": job,
                                        "X-Cameron-Task": f"{n}:{name}", "X-Cameron-Attempt": "1"})
        with self.lock:
            self.calls += 1
        defs = (answer.get("next_activities") or {}).get("definitions", [])
        # All but the last child on the pool, the last one here: foo's only child with children
        # of its own is its last, so pool threads never wait on the pool.
        futures = [self.pool.submit(self._task, job, n, d["name"], d["url"], answer["data"], answer["name"])
                   for d in defs[:-1]]
        if defs:
            self._task(job, n, defs[-1]["name"], defs[-1]["url"], answer["data"], answer["name"])
        for f in futures:
            f.result()

    def close(self):
        self.pool.shutdown(wait=True)


def limit(stack: Stack, *, clients: list, seconds: float) -> dict:
    """The minimal client's calls/s at each number of concurrent jobs; the best is the limit."""
    by_clients = {}
    counter = iter(range(10**9))
    for n in clients:
        client = DirectClient(f"{stack.acts_url}/foo/v0.0.1/start", pool_size=n * 4)
        try:
            spans = _closed_loop(n, seconds, lambda: client.run_job(f"{next(counter):032x}"))
        finally:
            client.close()
        by_clients[n] = round(len(spans) * 7 / seconds)
    return {"limit_calls_per_s": max(by_clients.values()), "limit_by_clients": by_clients}


def requests_client(stack: Stack, *, threads: int, seconds: float) -> dict:
    """A bare client as users write one: `requests`, a thread per job in flight, each making
    a foo job's 7 calls one after the other. The engine must never be slower than this."""
    import requests
    local, counter = threading.local(), iter(range(10**9))

    def post(url, body):
        session = getattr(local, "session", None) or setattr(local, "session", requests.Session()) \
            or local.session
        for attempt in range(10):
            try:
                resp = session.post(url, json=body, timeout=30)
                break
            except requests.ConnectionError:
                # A reset under a burst (a small listen backlog) is called again, as the engine
                # and the limit's client do: else one reset ends the whole figure.
                if attempt == 9:
                    raise
                time.sleep(min(0.5, 0.01 * 2 ** attempt))
        resp.raise_for_status()
        return resp.json()

    def one_job():
        job = f"{next(counter):032x}"
        todo = [(f"{stack.acts_url}/foo/v0.0.1/start", "bench", "bench")]
        while todo:
            url, data, requestor = todo.pop(0)
            answer = post(url, {"job": job, "key": KEY, "data": data, "requestor": requestor})
            todo += [(d["url"], answer["data"], answer["name"])
                     for d in (answer.get("next_activities") or {}).get("definitions", [])]
        return time.perf_counter()

    spans = _closed_loop(threads, seconds, one_job)
    return {"requests_jobs_per_s": len(spans) / seconds}


# --- 4. wide fan-out -----------------------------------------------------------------

def fanout(stack: Stack, api: Api) -> dict:
    """One job whose start names many children that each take a while: its time, POST to done."""
    t0 = time.perf_counter()
    uuid = api.start("fanout")
    t1 = stack.watcher.wait(uuid, JOB_DEADLINE)
    return {"fanout_s": t1 - t0, "errors": stack.job_errors("fanout", [uuid])}


# --- 5. in flight ---------------------------------------------------------------------

class MemorySampler:
    """Peak resident memory of the engine's processes, summed: RSS sampled every 100 ms, PSS
    every second (reading it walks every page of a process: at 10 per second over a dozen
    processes, it took a tenth of the 2 cores from the engine under test)."""

    PSS_EVERY = 10  # RSS samples

    def __init__(self, pids):
        self.pids = pids
        self.peak_rss = self.peak_pss = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="memory")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(5)

    def _run(self):
        for n in itertools.count():
            self.peak_rss = max(self.peak_rss, sum(rss_kib(p) for p in self.pids))
            if n % self.PSS_EVERY == 0:
                self.peak_pss = max(self.peak_pss, sum(pss_kib(p) for p in self.pids))
            if self.stopping.wait(0.1):
                return


def inflight(stack: Stack, api: Api, *, jobs: int, posters: int) -> dict:
    """`jobs` jobs started at once over `posters` connections: time from the first POST
    until the last job is done, and the peak memory of the engine meanwhile."""
    pids = stack.engine_pids()
    idle_rss = sum(rss_kib(p) for p in pids)
    with MemorySampler(pids) as memory:
        t0 = time.perf_counter()
        uuids = api.start_all("inflight", jobs, posters)
        accepted = time.perf_counter() - t0
        last = max(stack.watcher.wait_all(uuids, JOB_DEADLINE))
    return {"inflight_s": last - t0, "inflight_accept_s": accepted,
            "inflight_rss_mib": memory.peak_rss / 1024, "inflight_pss_mib": memory.peak_pss / 1024,
            "idle_rss_mib": idle_rss / 1024, "processes": len(pids),
            "errors": stack.job_errors("inflight", uuids)}


# --- 6. acceptance rate ------------------------------------------------------------------

def accept(stack: Stack, api: Api, *, requests_: int, clients: int) -> dict:
    """`requests_` POSTs to start a job by `clients` concurrent clients: rate and latency."""
    latencies, lock = [], threading.Lock()
    todo = iter(range(requests_))

    def client():
        for _ in todo:
            t0 = time.perf_counter()
            api.start("accept")
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    stack.wait_idle()
    return {"accept_rps": len(latencies) / wall, "accept_p50_ms": percentile(latencies, 50),
            "accept_p99_ms": percentile(latencies, 99)}
