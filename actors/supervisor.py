"""Supervisor: creates the engine's actors and restarts any that dies (cameron_process_sup)."""

import logging
import os
import time
from collections import deque

from thespian.actors import ActorTypeDispatcher

from cameron import messages as m

from actors.job_data import JobData
from actors.job_runner import JobRunner
from actors.job_scheduler import JobScheduler
from actors.process_catalog import ProcessCatalog

#: The name gunicorn workers and the CLI find the supervisor by.
GLOBAL_NAME = "cameron-supervisor"

#: Like OTP's intensity/period: more restarts than this of one child within PERIOD
#: seconds means restarting does not help; the child is left down and it is logged.
MAX_RESTARTS, PERIOD = 5, 10.0

log = logging.getLogger("cameron.supervisor")


class Supervisor(ActorTypeDispatcher):
    """one_for_one: a dead child is replaced and every child is told the new addresses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.peers = m.Peers()
        self.roles = []  # [child address, role name] (addresses are not hashable)
        self.restarts = {}  # role -> deque of restart times
        self.stopping = False

    # --- client API -------------------------------------------------------

    def receiveMsg_WhereIs(self, msg: m.WhereIs, sender):
        if self.config is None:
            self._boot(msg.config)
        self.send(sender, self.peers)

    def receiveMsg_Ping(self, msg, sender):
        given_up = sorted(r for r, times in self.restarts.items() if times is None)
        self.send(sender, m.Pong("supervisor", os.getpid(), 0,
                                 {"children": len(self.roles), "given_up": given_up}))

    # --- supervision ------------------------------------------------------

    def _boot(self, config):
        self.config = config
        self._spawn("catalog")
        self._spawn("job_data")
        self._spawn("scheduler")
        for i in range(config.runners):
            self._spawn(f"runner:{i}")
        self._announce()

    def _spawn(self, role):
        cls = {"catalog": ProcessCatalog, "job_data": JobData,
               "scheduler": JobScheduler}.get(role, JobRunner)
        addr = self.createActor(cls)
        self.roles.append([addr, role])
        if role.startswith("runner:"):
            i = int(role.split(":")[1])
            runners = self.peers.runners
            runners.extend([None] * (i + 1 - len(runners)))
            runners[i] = addr
        else:
            setattr(self.peers, role, addr)
        return addr

    def _announce(self):
        for addr, role in self.roles:
            self.send(addr, m.Setup(self.config, self.peers))

    def receiveMsg_ActorExitRequest(self, msg, sender):
        self.stopping = True

    def receiveMsg_ChildActorExited(self, msg, sender):
        gone = [entry for entry in self.roles if entry[0] == msg.childAddress]
        if not gone or self.stopping:
            return
        self.roles.remove(gone[0])
        role = gone[0][1]
        times = self.restarts.setdefault(role, deque())
        if times is None:
            return
        now = time.monotonic()
        while times and now - times[0] > PERIOD:
            times.popleft()
        if len(times) >= MAX_RESTARTS:
            log.error("%s died %d times within %.0f s; not restarting it again", role,
                      len(times) + 1, PERIOD)
            self.restarts[role] = None
            return
        times.append(now)
        log.warning("%s exited; restarting it", role)
        self._spawn(role)
        self._announce()
