"""Server-Sent Events of a job's state changes (`GET /api/job/{uuid}/events`) and of every
job's start and end (`GET /api/events`), read from Redis streams and woken by one pub/sub
subscription per web worker."""

import functools
import json
import logging
import socket
import threading
import time
from contextlib import contextmanager

import falcon
import redis

from cameron import keys, store
from cameron.gateway import EngineUnavailable, job_store_errors

#: Seconds between comments on a quiet stream: they find clients that went away, and keep
#: proxies from closing the connection.
KEEPALIVE = 15.0
#: Seconds between looks at the job's stream without a wake-up. Wake-ups are lost only while
#: the subscription is down, and every stream reads again once it is back (its channel's
#: `subscribe` answer wakes it); this is a net under that, kept wide: a thousand quiet
#: streams look 3 times a second.
POLL = 300.0
#: What a browser's EventSource waits before it reconnects, in ms.
RETRY_MS = 2000
#: Stream entries read per round trip.
BATCH = 200
#: Redis connections a web worker's streams read with, at most.
READERS = 16

log = logging.getLogger("cameron.events")
#: Every Hub of this process, for stop_all().
_HUBS = []


def stop_all():
    """End every open stream of this process (the web worker is stopping): a client
    reconnects, to another worker, with its Last-Event-ID, instead of holding the stop up."""
    for hub in _HUBS:
        hub.stop()


class _ClientWatch:
    """Whether the client of a stream has gone. Under gunicorn's gevent worker a greenlet
    peeks at the connection, which a streaming client never writes to: when it reads the end
    (the client closed), the stream is woken and ends at once, instead of at its second
    keep-alive comment after, up to 30 s later. Elsewhere (no gevent, no socket) it never
    says gone: the keep-alive comments find such clients."""

    def __init__(self, req, wake: threading.Event):
        self.gone = False
        self.greenlet = None
        sock = req.env.get("gunicorn.socket")
        if sock is None or not hasattr(sock, "_wait"):  # not a gevent socket
            return
        import gevent  # here: only a gevent worker gets this far

        def peek():
            try:
                self.gone = sock.recv(1, socket.MSG_PEEK) == b""
            except socket.timeout:
                return  # not known: the keep-alive comments will tell
            except OSError:
                self.gone = True
            if self.gone:
                wake.set()
        self.greenlet = gevent.spawn(peek)

    def close(self):
        if self.greenlet is not None:
            self.greenlet.kill()


class Hub:
    """The web worker's one pub/sub connection: it subscribes to the channel of each job an
    open stream watches, for as long as one does, and wakes those streams when a
    write batch changed their job. A thousand open streams cost a thousand idle greenlets
    (gevent patches `threading`) and one Redis connection, not a thread or a poll each; and
    the worker hears only of the jobs someone watches. The listener blocks on the connection
    until a message comes: a stream subscribes and unsubscribes its channel itself (writes,
    under the lock), so nothing wakes on a timer (a 20 Hz look at the channels wanted was
    most of what a thousand idle streams cost a worker)."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.stopping = False
        _HUBS.append(self)
        self.lock = threading.Lock()
        self.channels = {}  # channel -> {threading.Event of each stream on it}
        self.thread = None
        self.pubsub = None  # the listener's, once it has subscribed

    @functools.cached_property
    def reader(self) -> redis.Redis:
        """What the streams read with: a bounded pool that greenlets wait on, so that a
        thousand streams waking at once share a few connections instead of opening a
        thousand (past Redis's listen backlog, connects fail)."""
        pool = self.client.connection_pool
        return redis.Redis(connection_pool=redis.BlockingConnectionPool(
            max_connections=READERS, timeout=10, connection_class=pool.connection_class,
            **pool.connection_kwargs))

    @contextmanager
    def watch(self, channel: str):
        """An Event for a stream, set whenever a message comes on the channel (and once the
        subscription is active)."""
        wake = threading.Event()
        with self.lock:
            watchers = self.channels.setdefault(channel, set())
            watchers.add(wake)
            if self.thread is None:
                self.thread = threading.Thread(target=self._listen, name="cameron-events", daemon=True)
                self.thread.start()
            elif len(watchers) == 1:
                self._send("subscribe", channel)
        try:
            yield wake
        finally:
            with self.lock:
                watchers = self.channels.get(channel, set())
                watchers.discard(wake)
                if not watchers:
                    self.channels.pop(channel, None)
                    self._send("unsubscribe", channel)

    def _send(self, command: str, channel: str):
        """(Un)subscribe on the listener's connection, if it has one (else it subscribes to
        what is wanted when it connects). A failure is the listener's to see: its read fails
        too, and it subscribes again to everything."""
        if self.pubsub is not None:
            try:
                getattr(self.pubsub, command)(channel)
            except Exception as e:
                log.debug("event subscription: %s %s failed (%s)", command, channel, e)

    def stop(self):
        with self.lock:
            self.stopping = True
            self._wake_all()

    def _wake_all(self):
        for watchers in self.channels.values():
            for wake in watchers:
                wake.set()

    def _listen(self):
        """Runs while a stream watches: subscribes to every channel wanted, then passes
        messages on as they come; ends once no stream watches (the last unsubscribe's
        answer wakes it)."""
        pool = self.client.connection_pool
        client = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class,
            **{**pool.connection_kwargs, "socket_timeout": None}))
        while True:
            pubsub = client.pubsub()
            try:
                with self.lock:
                    if not self.channels:
                        self.thread = None
                        pubsub.close()
                        return
                    pubsub.subscribe(*self.channels)
                    self.pubsub = pubsub
                while True:
                    message = pubsub.get_message(timeout=None)
                    with self.lock:
                        if message is not None:
                            self._on(message)
                        if not self.channels:
                            self.thread = self.pubsub = None
                            pubsub.close()
                            return
            except Exception as e:  # Redis gone: the streams wait for it to come back
                log.warning("event subscription lost (%s); retrying in 1 s", e)
                with self.lock:
                    self.pubsub = None
                    self._wake_all()
                pubsub.close()
                time.sleep(1)

    def _on(self, message):
        """(Under the lock.) Wake the streams of the message's channel; a `subscribe` answer
        too, so that a stream reads once more after its subscription is active."""
        if message["type"] not in ("message", "subscribe"):
            return
        for wake in self.channels.get(message["channel"], ()):
            wake.set()


def _frame(event: str, data, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _position(last_event_id: str | None) -> tuple[str, int]:
    """(stream entry id, index of the last change seen in it) from a Last-Event-ID; from the
    start when there is none. 400 for an id this server did not hand out."""
    if not last_event_id:
        return "0-0", -1
    entry, _, index = last_event_id.strip().rpartition(".")
    ms, _, seq = entry.partition("-")
    if not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()
            and index.isascii() and index.isdigit()) or len(last_event_id) > 60:
        raise falcon.HTTPBadRequest(title="Invalid Last-Event-ID",
                                    description="not an event id this server handed out")
    return f"{int(ms)}-{int(seq)}", int(index)


def _from_hash(h: dict) -> list[dict]:
    """A job's changes rebuilt from its hash, for a job whose stream has expired (or that
    ended before streams were kept): start order, each task's start then its end."""
    changes = []
    status = h.get(keys.JOB_STATUS, "")
    if keys.job_time(keys.RUNNING) in h:
        changes.append({"type": "job", "status": keys.RUNNING, "time": h[keys.job_time(keys.RUNNING)]})
    for t in store.tasks_of(h):
        n, i = t["n"], t["id"]
        changes.append({"type": "task", "n": n, "id": i, "name": t["name"], "status": keys.TASK_RUNNING,
                        "time": h.get(keys.task_time(i, keys.TASK_RUNNING)), "parent": t["parent"],
                        "requestor": t["requestor"]})
        if t["status"] != keys.TASK_RUNNING:
            changes.append({"type": "task", "n": n, "id": i, "status": t["status"],
                            "time": h.get(keys.task_time(i, t["status"])),
                            "duration_ms": int(h.get(keys.task_field(i, "duration_ms")) or 0),
                            "attempts": int(h.get(keys.task_field(i, "attempts")) or 1)})
    if status in keys.FINAL_STATES:
        changes.append({"type": "job", "status": status, "time": h.get(keys.job_time(status)),
                        "errors": int(h.get(keys.JOB_ERRORS) or 0)})
    return changes


def _final(change: dict) -> bool:
    return change["type"] == "job" and change["status"] in keys.FINAL_STATES


def _respond(resp, hub: Hub, req, channel: str, follow) -> None:
    """Answer with an event stream: the frames `follow(wake, client)` yields, woken by the
    wake-ups of `channel` and by the client going away."""
    resp.content_type = "text/event-stream"
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
    resp.stream = _watched(hub, req, channel, follow)


def _watched(hub: Hub, req, channel: str, follow):
    with hub.watch(channel) as wake:
        client = _ClientWatch(req, wake)
        try:
            yield from follow(wake, client)
        finally:
            client.close()


def _changes(entries, entry: str, seen: int) -> tuple[list, str, int]:
    """The changes a stream's `entries` hold, as (event id, change, new: whether it comes after
    change `seen` of entry `entry`, the last one sent), and the position after the last."""
    found = []
    for entry_id, fields in entries:
        changes = json.loads(fields["e"])
        found += [(f"{entry_id}.{i}", c, entry_id != entry or i > seen) for i, c in enumerate(changes)]
        entry, seen = entry_id, len(changes) - 1
    return found, entry, seen


def _until_woken(hub: Hub, wake):
    """Wait for a wake-up, a comment every KEEPALIVE s to find clients that went away; True
    when POLL s went by without one (a look anyway)."""
    waited = 0.0
    while waited < POLL and not hub.stopping and not wake.wait(KEEPALIVE):
        yield b": keepalive\n\n"
        waited += KEEPALIVE
    return waited >= POLL


class JobEvents:
    """`GET /api/job/{uuid}/events`: every change of the job as an SSE event (`job`, `task`
    or `cancel`, JSON data), each with an id; `Last-Event-ID` resumes after it. The stream
    ends with the job's final `job` event."""

    def __init__(self, client: redis.Redis | None, hub: Hub | None):
        self.hub = hub

    def on_get(self, req, resp, uuid):
        not_found = falcon.HTTPNotFound(title="Job not found", description=f"no job {uuid}")
        if self.hub is None or not keys.is_uuid(uuid):
            raise not_found
        after = _position(req.get_header("Last-Event-ID"))
        with job_store_errors():
            tag = self.hub.reader.get(keys.job_by_uuid(uuid))
        if tag is None:
            raise not_found
        stream_key = keys.job_events(uuid)
        _respond(resp, self.hub, req, stream_key,
                 lambda wake, client: self._follow(stream_key, tag, *after, wake, client))

    def _follow(self, stream_key, tag, entry, seen, wake, client):
        start = "-" if entry == "0-0" else entry  # the resumed entry again: its later changes
        yield f"retry: {RETRY_MS}\n\n".encode()
        quiet = False
        while not self.hub.stopping and not client.gone:
            wake.clear()
            try:
                entries = self.hub.reader.xrange(stream_key, min=start, count=BATCH)
                if not entries and (entry == "0-0" or quiet):
                    ending = self._ending(tag, entry, seen)
                    if ending is not None:
                        yield from ending
                        return
            except redis.RedisError:
                entries = []
            changes, entry, seen = _changes(entries, entry, seen)
            for event_id, change, new in changes:
                if new:
                    yield _frame(change["type"], change, event_id)
                if _final(change):  # sent now or before: the stream is over
                    return
            if entries:
                start = "(" + entry
                if len(entries) == BATCH:
                    continue
            quiet = yield from _until_woken(self.hub, wake)
            if client.gone:
                return

    def _ending(self, tag: str, entry: str, seen: int):
        """The frames that end the stream of a job that is final but whose stream has nothing
        more (expired, or never written); None while the job has not ended."""
        if self.hub.reader.hget(tag, keys.JOB_STATUS) not in keys.FINAL_STATES:
            return None
        changes = _from_hash(self.hub.reader.hgetall(tag))
        if entry == "0-0":
            return [_frame(c["type"], c, f"0-0.{i}") for i, c in enumerate(changes) if i > seen]
        return [_frame("job", changes[-1], f"{entry}.{seen + 1}")]



def _stream_id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq)


class JobsEvents:
    """`GET /api/events`: every job's job-level changes, of every process, as SSE `job` events
    (`{"status":"running"}` when it starts, its final state and errors when it ends, with its
    process, key and uuid), each with an id. Without `Last-Event-ID` it begins with what
    happens from then on (read the lists you show after it answered: nothing falls between);
    with one it goes on after that event, or, if the capped stream no longer holds what
    followed it, sends a `reset` event first: read your lists again. It ends only when the
    client goes (or the web worker stops)."""

    #: Seconds a woken stream waits for more before it reads: under load, a read every tenth
    #: of a second holds many write batches, not one per batch.
    GATHER = 0.1

    def __init__(self, hub: Hub | None):
        self.hub = hub

    def on_get(self, req, resp):
        given = req.get_header("Last-Event-ID")
        entry, seen = _position(given)
        if self.hub is None:
            raise EngineUnavailable("job store unavailable: no Redis")
        with job_store_errors():
            pipe = self.hub.reader.pipeline(transaction=False)
            pipe.xrange(keys.JOBS_EVENTS, count=1)
            pipe.xrevrange(keys.JOBS_EVENTS, count=1)
            first, last = pipe.execute()
        head = []
        if not given or not first or _stream_id(entry) < _stream_id(first[0][0]):
            # From now on: after the last entry written (from the start of a stream yet to be).
            entry, seen = (last[0][0], len(json.loads(last[0][1]["e"])) - 1) if last else ("0-0", -1)
            if given:
                head.append(_frame("reset", {"reason": "the changes after that event are no longer kept"},
                                   f"{entry}.{seen}" if last else None))
        _respond(resp, self.hub, req, keys.JOBS_EVENTS,
                 lambda wake, client: self._follow(entry, seen, head, wake, client))

    def _follow(self, entry, seen, head, wake, client):
        start = "-" if entry == "0-0" else entry  # the resumed entry again: its later changes
        yield f"retry: {RETRY_MS}\n\n".encode()
        yield from head
        while not self.hub.stopping and not client.gone:
            wake.clear()
            try:
                pipe = self.hub.reader.pipeline(transaction=False)
                pipe.xrange(keys.JOBS_EVENTS, count=1)
                pipe.xrevrange(keys.JOBS_EVENTS, count=1)
                pipe.xrange(keys.JOBS_EVENTS, min=start, count=BATCH)
                first, last, entries = pipe.execute()
            except redis.RedisError:
                first = last = entries = []
            if first and entry != "0-0" and _stream_id(first[0][0]) > _stream_id(entry):
                # This client fell behind the capped stream: what it missed is gone.
                entry, seen = last[0][0], len(json.loads(last[0][1]["e"])) - 1
                yield _frame("reset", {"reason": "this client fell behind: changes were dropped"},
                             f"{entry}.{seen}")
                start = "(" + entry
                continue
            changes, entry, seen = _changes(entries, entry, seen)
            yield from (_frame("job", change, event_id) for event_id, change, new in changes if new)
            if entries:
                start = "(" + entry
                if len(entries) == BATCH:
                    continue
            yield from _until_woken(self.hub, wake)
            if client.gone:
                return
            if wake.is_set() and not self.hub.stopping:
                time.sleep(self.GATHER)
