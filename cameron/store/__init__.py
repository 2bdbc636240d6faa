"""The job store: every read and write of the engine's Redis (JobStore), the connection
rules, and the schema's parts re-exported: documents (encoding and reading back), moments
(how each moment of a job is written) and scripts (the Lua)."""

import hashlib
import json
import select
import time
import uuid as uuid_module
from contextlib import contextmanager
from dataclasses import dataclass

import hiredis
import redis

from cameron import keys
from cameron import messages as m
from cameron.store.documents import (UNDEFINED, decode_cursor, decode_data, document, encode_answer,  # noqa: F401
                                     encode_cursor, encode_data, encode_error, ms, now, summary,
                                     SUMMARY_FIELDS, tasks_of)
from cameron.store.moments import WRITERS, NetWrites, event, job_list_changes, unindex
from cameron.store.scripts import CLAIM, CREATE, RENEW, TAKE, TAKEN_FIELDS

#: Expired jobs taken out of the indexes per round trip.
PRUNE_BATCH = 1000


def connect(url: str, timeout: float = 5.0) -> redis.Redis:
    """A client whose every command gives up after `timeout` seconds: a Redis that is down or
    stalled must turn into a quick 503, not a hung worker. It never sends a command again by
    itself (redis-py can retry): after a timeout, whether the command ran is unknown, and
    the caller decides what to do about it."""
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                socket_connect_timeout=min(timeout, 2), health_check_interval=30,
                                retry=None, command_packer=_PACKER)


class _Packer:
    """Packs a command as redis-py's own hiredis packer does, without first copying every
    argument through a Python generator (to turn a bytearray or memoryview into bytes): JobData's
    batches have thousands of arguments, and that copy was a quarter of its CPU. A command
    with a two-word name, or an argument hiredis does not take, goes to redis-py's packer."""

    def __init__(self):
        self.standard = redis.connection.HiredisRespSerializer()

    def pack(self, *args):
        name = args[0]
        if " " not in name if isinstance(name, str) else b" " not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return self.standard.pack(*args)


_PACKER = _Packer()


_poll = None  # select.poll, as the OS gives it (not gevent's, which waits in its hub)


def _readable(connection) -> bool:
    """Whether a client's idle connection has anything to read: an end (Redis closed it) or a
    reply nobody read. A poll that never waits, so it needs no cooperation from gevent."""
    global _poll
    sock = getattr(connection, "_sock", None)  # None: not connected (connects on its next command)
    if sock is None:
        return False
    if _poll is None:
        from gevent import monkey  # a dependency; importing it patches nothing
        _poll = monkey.get_original("select", "poll") if monkey.is_module_patched("select") else select.poll
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def never_sent(error: redis.RedisError) -> bool:
    """Whether a command that failed with `error` certainly did not reach Redis: the
    connection could not be made. Any other failure (a timeout waiting for the reply, a
    connection lost after the command went) leaves it unknown whether Redis ran it."""
    return isinstance(error, redis.ConnectionError) and "connecting" in str(error)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used for a different request."""


class UnknownProcess(Exception):
    """No process of that name in the engine's catalog."""


class EngineStarting(Exception):
    """The engine has not yet published its catalog: no start can be checked."""


@dataclass(frozen=True)
class Created:
    """The job a start made, or (replayed) the one its Idempotency-Key had made before."""

    process: str
    key: str
    uuid: str
    status: str
    replayed: bool


def fingerprint(process: str, key: str, data, requestor: str) -> str:
    """What a start asked for: the same Idempotency-Key with another request is refused."""
    return hashlib.sha256(json.dumps([process, key, data, requestor]).encode()).hexdigest()


def new_uuid() -> str:
    return uuid_module.uuid4().hex


#: Seconds the engine's health record outlives its last report (one a second): gone, it says
#: the supervision tree (or its JobData, or Redis for it) has stopped reporting.
HEALTH_TTL = 3


def _run(script, keys: list, args: list, via=None):
    """`script`'s reply, run by the store's client, or by `via` (a client from lend()) on its
    one connection directly: the client's own path (its lock, retry wrapper, command lookup
    and argument checks) cost a start more than sending and reading did. A connection error
    closes the connection either way (redis-py's send and read do that themselves)."""
    if via is None:
        return script(keys=keys, args=args)
    connection = via.connection
    try:
        connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return connection.read_response()
    except redis.exceptions.NoScriptError:  # Redis restarted, or SCRIPT FLUSH: loads it again
        return script(keys=keys, args=args, client=via)


class Wakeups:
    """A pub/sub subscription to one channel, watched through its socket: a message only says
    "look now" (the data it points at is the truth), so those waiting are drained unread."""

    def __init__(self, client: redis.Redis, channel: str):
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)

    def fileno(self) -> int | None:
        """The subscription's socket, to wait on (None once closed)."""
        # redis-py keeps the socket private, and has no public way to wait on a subscription
        # together with other sockets; this is its one reader.
        sock = getattr(self.pubsub.connection, "_sock", None)
        return sock.fileno() if sock is not None else None

    def drain(self) -> None:
        while self.pubsub.get_message(timeout=0) is not None:
            pass

    def close(self) -> None:
        self.pubsub.close()


class JobStore:
    """Writes and reads jobs; every write of one call goes in a single MULTI/EXEC round trip.
    `engine` is the engine this store works for: the jobs it creates are that engine's.
    `retention` (seconds, 0 for never) is how long a finished job is kept; `idempotency_ttl`
    how long an Idempotency-Key names its job."""

    def __init__(self, client: redis.Redis, engine: str, *, retention: int = 0,
                 idempotency_ttl: int = 86400):
        self.redis = client
        self.engine = engine
        self.owned = keys.engine_jobs(engine)
        self._claim = client.register_script(CLAIM)
        self._renew = client.register_script(RENEW)
        self._create_script = client.register_script(CREATE)
        self._take_script = client.register_script(TAKE)
        self.retention = retention
        self.idempotency_ttl = idempotency_ttl
        self._lent = []  # clients lend() made, idle

    @contextmanager
    def lend(self):
        """A client with a connection of its own (on this store's pool), lent for one request's
        commands. The shared pool polls a connection before each command (closed by Redis? a
        reply left unread?), under gevent through its hub: about a tenth of the API's CPU per
        start. A lent one is polled once per lending, by the OS directly (_readable). What can
        leave a reply unread is an exception in mid-command that is not Redis's own (a greenlet
        killed, a gevent timeout): the connection is closed then, and opened again by the next
        command."""
        lent = self._lent.pop() if self._lent else \
            redis.Redis(connection_pool=self.redis.connection_pool, single_connection_client=True)
        if _readable(lent.connection):
            # Before a command nothing may be readable: Redis closed the connection (it
            # restarted, or dropped idle clients) or a reply was left unread. A new one, as the
            # pool does: the start then fails as "not sent" if Redis is down, or just works.
            lent.connection.disconnect()
        try:
            yield lent
        except (redis.RedisError, IdempotencyConflict, UnknownProcess, EngineStarting):
            raise  # the reply was read (or redis-py closed the connection itself)
        except BaseException:
            lent.connection.disconnect()
            raise
        finally:
            self._lent.append(lent)

    def start(self, process: str, key: str, data, requestor: str, *, idempotency_key: str = "",
              fingerprint: str = "", client: str = "", job_id: str = "", via=None) -> "Created":
        """Accept a job for a process of the engine's catalog (as the ProcessCatalog published
        it): stored, indexed and queued for the engine, atomically. An Idempotency-Key names
        a job within its process and `client` (the API token's name; "" without tokens).
        `job_id` (a new uuid by default) lets the caller name the job before it knows whether
        Redis answered; `via`, a client from lend(), sends the script instead of the store's own."""
        job_id = job_id or new_uuid()
        tag = keys.job_tag(process, key, job_id)
        data, data_json = encode_data(data)
        reply = _run(self._create_script, [
            tag, keys.job_marker(tag, keys.SCHEDULED), self.owned, keys.process_jobs(process),
            keys.process_jobs(process, keys.SCHEDULED), keys.key_jobs(process, key),
            keys.job_by_uuid(job_id),
            keys.idempotency(process, client, idempotency_key) if idempotency_key else "",
            keys.engine_inbox(self.engine), keys.ENGINES,
            keys.engine_catalog(self.engine)],
            [self.engine, process, key, data, requestor, now(), ms(),
             fingerprint, self.idempotency_ttl, "1" if data_json else ""], via)
        outcome = reply[0]
        if outcome == "conflict":
            raise IdempotencyConflict(idempotency_key)
        if outcome == "unknown":
            raise UnknownProcess(process)
        if outcome == "starting":
            raise EngineStarting("the engine has not published its catalog yet")
        if outcome == "same":
            return Created(*keys.parse_tag(reply[1]), status=reply[2], replayed=True)
        return Created(process, key, job_id, status=keys.SCHEDULED, replayed=False)

    def take_new(self, count: int = 500, handed=()) -> list[tuple[str, dict]]:
        """Up to `count` jobs off the engine's inbox, oldest first: (tag, fields) of each.
        They stay in the engine's taking list, and come back from every take, until a take
        names them in `handed`: call again with what was handed to the scheduler."""
        flat = self._take_script(keys=[keys.engine_inbox(self.engine), keys.engine_taking(self.engine)],
                                 args=[count, *handed])
        return [(flat[i], {n: v for n, v in zip(TAKEN_FIELDS, flat[i + 1]) if v is not None})
                for i in range(0, len(flat), 2)]

    def publish_catalog(self, processes) -> None:
        """The catalog the API checks starts against: exactly these processes."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.engine_catalog(self.engine))
        # A placeholder keeps the hash in existence when the catalog is empty: "no process"
        # must read as 404, not as "the engine is starting" (process names cannot hold ' ').
        pipe.hset(keys.engine_catalog(self.engine),
                  mapping={" ": "", **{p.name: p.start_url for p in processes}})
        pipe.execute()

    def apply(self, ops: list, token: str = "") -> None:
        """Write a batch of job moments (messages.JobStarted, TaskStarted, ...) atomically, as
        if one after the other: what they leave behind, in a few commands (_NetWrites). With a
        `token`, the same transaction records it (written_token() reads it back)."""
        net = NetWrites()
        events = {}  # tag -> the job's changes in this batch, for its event stream
        for op in ops:
            WRITERS[type(op)](net, op)
            events.setdefault(op.tag, []).append(event(op))
            if type(op) is m.JobEnded:
                net.srem(self.owned, op.tag)
                net.expire(keys.job_events(op.tag[-32:]), min(keys.EVENTS_TTL, self.retention or keys.EVENTS_TTL))
            if self.retention and isinstance(op, m.JobEnded):
                self._expire(net, op)
        # One stream entry and one wake-up per job per batch (a foo job's changes come in about
        # four batches: a few commands per job, not sixteen). A PUBLISH nobody listens to costs
        # Redis a lookup; web workers hear only of the jobs someone watches.
        for tag, changes in events.items():
            net.xadd(keys.job_events(tag[-32:]), json.dumps(changes, separators=(",", ":")))
            net.publish(keys.job_events(tag[-32:]), "")
        pipe = self.redis.pipeline(transaction=True)
        net.write(pipe)
        job_list_changes(pipe, ops)
        if token:
            pipe.set(keys.engine_written(self.engine), token)
        pipe.execute()

    def report_health(self, tree, progress: float) -> None:
        """The engine's health record (keys.engine_health): its tree as the Supervisor reports
        it, when a job last moved; it expires HEALTH_TTL seconds after the last report."""
        record = keys.engine_health(self.engine)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(record, mapping={"supervisor_pid": tree.pid, "children": tree.children,
                                   "expected": tree.expected, "given_up": ",".join(tree.given_up),
                                   "progress": f"{progress:.3f}", "at": f"{time.time():.3f}"})
        pipe.expire(record, HEALTH_TTL)
        pipe.execute()

    def written_token(self) -> str | None:
        """The token of the last apply() that reached Redis."""
        return self.redis.get(keys.engine_written(self.engine))

    def _expire(self, pipe, op: m.JobEnded):
        """A finished job's hash and markers go after the retention period; EXPIRING tells the
        index sweep (prune_expired) when to take it out of the sorted sets."""
        uuid = keys.parse_tag(op.tag)[2]
        for key in [op.tag, keys.job_marker(op.tag, op.status), keys.job_by_uuid(uuid)] + [
                keys.task_marker(op.tag, t, state) for t in op.task_ids
                for state in (keys.TASK_DONE, keys.TASK_ERROR)]:
            pipe.expire(key, self.retention)
        pipe.zadd(keys.EXPIRING, {op.tag: ms() + self.retention * 1000})

    def prune_expired(self, batch: int = PRUNE_BATCH) -> int:
        """Take jobs whose hash has expired out of the indexes; returns how many."""
        tags = self.redis.zrangebyscore(keys.EXPIRING, "-inf", ms(), start=0, num=batch)
        if tags:
            pipe = self.redis.pipeline(transaction=True)
            for tag in tags:
                unindex(pipe, tag)
            pipe.execute()
        return len(tags)

    def request_cancel(self, process: str, key: str, uuid: str) -> tuple[str, str | None] | None:
        """Record a cancel in the job hash; (state, requested time), with time None when the
        job had already ended, or None when there is no such job."""
        tag = keys.job_tag(process, key, uuid)

        def record(pipe):
            status, requested = pipe.hmget(tag, keys.JOB_STATUS, keys.JOB_CANCEL_REQUESTED)
            if status is None:
                return None
            if status in keys.FINAL_STATES:
                return status, None
            if requested is None:
                requested = now()
                pipe.multi()
                pipe.hset(tag, keys.JOB_CANCEL_REQUESTED, requested)
                change = {"type": "cancel", "status": status, "time": requested}
                pipe.xadd(keys.job_events(uuid), {"e": json.dumps([change])})
                pipe.publish(keys.job_events(uuid), "")
            return status, requested
        return self.redis.transaction(record, tag, value_from_callable=True)

    def list_jobs(self, process: str, *, key: str | None = None, state: str | None = None,
                  limit: int = 50, cursor: tuple | None = None) -> tuple[list, tuple | None]:
        """One page of job summaries, newest first, and the cursor of the next page (None at
        the end); None for a process neither in the catalog nor with any job kept. With both
        a key and a state the page may hold fewer than `limit` jobs."""
        index = keys.key_jobs(process, key) if key is not None else keys.process_jobs(process, state)
        if cursor is None:
            rows = self.redis.zrevrange(index, 0, limit, withscores=True)
        else:
            score, after = cursor
            # Jobs with the cursor's own score come in reverse member order: skip those up to it.
            ties = self.redis.zcount(index, score, score)
            rows = [(t, s) for t, s in self.redis.zrevrangebyscore(
                        index, score, "-inf", start=0, num=limit + 1 + ties, withscores=True)
                    if s < score or t < after]
        if not rows and cursor is None and not self._process_known(process):
            return None
        page = rows[:limit]
        next_cursor = (page[-1][1], page[-1][0]) if len(rows) > limit else None
        pipe = self.redis.pipeline(transaction=False)
        for tag, _ in page:
            pipe.hmget(tag, *SUMMARY_FIELDS)
        jobs, gone = [], []
        for (tag, _), values in zip(page, pipe.execute() if page else []):
            h = {f: v for f, v in zip(SUMMARY_FIELDS, values) if v is not None}
            if not h:
                gone.append(tag)  # expired before the sweep took it out
            elif key is None or state is None or h[keys.JOB_STATUS] == state:
                jobs.append(summary(tag, h))
        if gone:
            pipe = self.redis.pipeline(transaction=True)
            for tag in gone:
                unindex(pipe, tag)
            pipe.execute()
        return jobs, next_cursor

    def _process_known(self, process: str) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hexists(keys.engine_catalog(self.engine), process)
        pipe.exists(keys.process_jobs(process))
        return any(pipe.execute())

    def find(self, uuid: str) -> dict | None:
        """The job document of a uuid alone, or None."""
        tag = self.redis.get(keys.job_by_uuid(uuid))
        if tag is None:
            return None
        return self.get(*keys.parse_tag(tag))

    def count_by_state(self, process: str) -> dict:
        """How many jobs of the process are in each state, from the indexes."""
        pipe = self.redis.pipeline(transaction=False)
        for state in keys.JOB_STATES:
            pipe.zcard(keys.process_jobs(process, state))
        return dict(zip(keys.JOB_STATES, pipe.execute()))

    def unfinished(self, runner: int | None, runners: int) -> list[tuple[str, dict]]:
        """(tag, hash) of every job of this engine not yet done, or only those of one runner slot."""
        tags = [t for t in self.redis.smembers(self.owned)
                if runner is None or m.runner_slot(keys.parse_tag(t)[2], runners) == runner]
        return self.hashes(tags)

    def hashes(self, tags: list[str]) -> list[tuple[str, dict]]:
        pipe = self.redis.pipeline(transaction=False)
        for tag in tags:
            pipe.hgetall(tag)
        return [(tag, h) for tag, h in zip(tags, pipe.execute()) if h]

    def renew_lease(self, ttl: float) -> tuple[bool, dict]:
        """Renew this engine's lease with a fresh value; whether it still held (False: it had
        expired, or another engine took this one's jobs), and every other engine's lease
        value ('' for none), to watch for engines that stopped renewing."""
        reply = self._renew(keys=[keys.ENGINES, keys.engine_lease(self.engine)],
                            args=[self.engine, f"{time.time():.6f}", int(ttl * 1000)])
        return reply[0] != "", dict(zip(reply[1::2], reply[2::2]))

    def claim_orphans(self, dead: dict | None = None) -> list[str]:
        """Take over the unfinished jobs of the engines in `dead` (engine -> the lease value
        seen unchanged for a whole lease) whose lease still holds that value; returns every
        tag taken over and not yet acknowledged with adopted()."""
        pairs = [x for engine, value in (dead or {}).items() for x in (engine, value)]
        return self._claim(keys=[keys.ENGINES, keys.engine_adopting(self.engine)],
                           args=[self.engine, *pairs])

    def adopted(self, tags) -> None:
        """The jobs taken over that are now handed to the runners."""
        self.redis.srem(keys.engine_adopting(self.engine), *tags)

    def handed_out(self) -> set[str]:
        """The engine's unfinished jobs that are neither waiting on its inbox, nor being taken
        off it, nor taken over and not yet handed out: those its runners should be driving."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.smembers(self.owned)
        pipe.lrange(keys.engine_inbox(self.engine), 0, -1)
        pipe.lrange(keys.engine_taking(self.engine), 0, -1)
        pipe.smembers(keys.engine_adopting(self.engine))
        owned, inbox, taking, adopting = pipe.execute()
        return owned.difference(inbox, taking, adopting)

    def get(self, process: str, key: str, uuid: str) -> dict | None:
        """The job document of the API, or None when there is no such job."""
        h = self.redis.hgetall(keys.job_tag(process, key, uuid))
        if not h:
            return None
        return document(process, key, uuid, h)
