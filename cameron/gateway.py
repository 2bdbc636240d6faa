"""The web layer's door into the running actor system: one ask per API request."""

import threading
from contextlib import contextmanager

import redis
from thespian.actors import PoisonMessage

from cameron import actorsys, keys
from cameron import messages as m
from cameron.config import Config


class EngineUnavailable(Exception):
    """The actor system did not answer in time, or said it cannot take the request now."""


@contextmanager
def job_store_errors():
    """Around calls to the engine's Redis from the API or the CLI: Redis not answering (within
    redis_timeout) is EngineUnavailable, a 503 or a message saying so."""
    try:
        yield
    except redis.RedisError as e:
        raise EngineUnavailable(f"job store unavailable: {e}") from None


class JobGone(Exception):
    """A cancel's job does not exist (status None) or has already ended (in `status`)."""

    def __init__(self, status: str | None):
        super().__init__(status)
        self.status = status


class ActorGateway:
    """Joins the actor system lazily, after gunicorn forked the worker (a system object made in
    the master and inherited by the workers mixes up their replies), and remembers where the
    supervised actors are until one stops answering."""

    def __init__(self, config: Config):
        self.config = config
        self._lock = threading.Lock()
        self._asys = None
        self._peers = None

    def ask(self, role: str, msg, timeout: float | None = None):
        """Send `msg` to the actor playing `role` and return its answer; retried once after
        looking the actors up again, since the supervisor may have replaced that one.
        `timeout` bounds each of the two tries (default: half the ask_timeout setting)."""
        return self._ask(lambda peers: getattr(peers, role), msg, timeout, f"the {role} actor")

    def ask_runner(self, job_uuid: str, msg, timeout: float | None = None):
        """ask() the runner that drives the job `job_uuid`."""
        return self._ask(lambda peers: peers.runners[m.runner_slot(job_uuid, len(peers.runners))],
                         msg, timeout, "the job's runner")

    def cancel(self, jobs, process: str, key: str, uuid: str) -> tuple[str, str]:
        """Record a cancel in the job's hash (`jobs`: the JobStore), then tell the job's runner,
        which remembers it if the job has not reached it yet; returns (the job's state, when
        the cancel was first asked for). A runner that restarts reads it back with the job."""
        found = jobs.request_cancel(process, key, uuid)
        if found is None or found[1] is None:
            raise JobGone(found and found[0])
        try:
            self.ask_runner(uuid, m.StopJob(uuid, keys.job_tag(process, key, uuid)))
        except EngineUnavailable as e:
            raise EngineUnavailable(f"the cancel is recorded, but the engine did not confirm it "
                                    f"({e}); ask again") from None
        return found

    def _ask(self, address_in, msg, timeout, what: str):
        for attempt in (1, 2):
            asys, peers = self._connect(refresh=attempt == 2)
            with asys.private() as ctx:
                reply = ctx.ask(address_in(peers), msg, timeout or self.config.ask_timeout / 2)
            if reply is not None and not isinstance(reply, PoisonMessage):
                if isinstance(reply, m.Unavailable):
                    raise EngineUnavailable(reply.reason)
                return reply
        raise EngineUnavailable(f"{what} did not answer")

    def _connect(self, refresh: bool):
        with self._lock:
            try:
                if self._asys is None:
                    self._asys = actorsys.join(self.config)
                if refresh or self._peers is None:
                    with self._asys.private() as ctx:
                        peers = ctx.ask(actorsys.supervisor(self._asys), m.WhereIs(self.config),
                                        self.config.ask_timeout / 2)
                    if not isinstance(peers, m.Peers):
                        raise EngineUnavailable("the supervisor did not answer")
                    self._peers = peers
            except actorsys.EngineDown as e:
                raise EngineUnavailable(str(e)) from None
            return self._asys, self._peers
