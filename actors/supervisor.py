"""Supervisor: creates the engine's actors and restarts any that dies (cameron_process_sup)."""

import datetime
import logging
import os
import time
from collections import deque

from thespian.actors import ActorTypeDispatcher

from cameron import actorsys
from cameron import messages as m

from actors.base import link_to_parent
from actors.job_data import JobData
from actors.job_runner import JobRunner
from actors.job_scheduler import JobScheduler
from actors.process_catalog import ProcessCatalog

#: Like OTP's intensity/period: more restarts than this of one child within PERIOD
#: seconds means restarting does not help; the child is left down and it is logged.
MAX_RESTARTS, PERIOD = 5, 10.0

#: How often the supervisor looks for children that died unnoticed: Thespian learns of
#: child exits from SIGCHLD, and two children dying at once can raise a single signal.
SWEEP = datetime.timedelta(seconds=1)

log = logging.getLogger("cameron.supervisor")


class Supervisor(ActorTypeDispatcher):
    """one_for_one: a dead child is replaced and every child is told the new addresses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.peers = m.Peers()
        self.roles = []  # [child address, role name, pid or None] (addresses are not hashable)
        self.restarts = {}  # role -> deque of restart times
        self.stopping = False
        self.handled = 0

    def receiveMessage(self, message, sender):
        if not self.handled:
            link_to_parent(self)  # its children die with it, and it with the admin
        self.handled += 1
        return super().receiveMessage(message, sender)

    # --- client API -------------------------------------------------------

    def receiveMsg_WhereIs(self, msg: m.WhereIs, sender):
        if self.config is None:
            self._boot(msg.config)
        self.send(sender, self.peers)

    def receiveMsg_Ping(self, msg, sender):
        given_up = sorted(r for r, times in self.restarts.items() if times is None)
        self.send(sender, m.Pong("supervisor", os.getpid(), self.handled,
                                 {"children": len(self.roles), "given_up": given_up},
                                 type(self).__name__, tuple(addr for addr, _, _ in self.roles)))

    # --- supervision ------------------------------------------------------

    def _boot(self, config):
        self.config = config
        actorsys.warn_if_exposed(log, "the actor system", actorsys.thespian_address())
        self._spawn("catalog")
        self._spawn("job_data")
        self._spawn("scheduler")
        for i in range(config.runners):
            self._spawn(f"runner:{i}")
        self._announce()
        self._report()  # at once: `cameron start` waits for the engine's first health record
        # Jobs a previous engine accepted but did not finish go on now.
        self.send(self.peers.scheduler, m.Recover(None, self.peers))
        self.wakeupAfter(SWEEP)

    def _spawn(self, role):
        cls = {"catalog": ProcessCatalog, "job_data": JobData,
               "scheduler": JobScheduler}.get(role, JobRunner)
        addr = self.createActor(cls)
        self.roles.append([addr, role, None])
        self.send(addr, m.Ping())  # its Pong tells the pid the sweep watches
        if role.startswith("runner:"):
            i = int(role.split(":")[1])
            runners = self.peers.runners
            runners.extend([None] * (i + 1 - len(runners)))
            runners[i] = addr
        else:
            setattr(self.peers, role, addr)
        return addr

    def _announce(self):
        self.peers.generation += 1
        for addr, role, _ in self.roles:
            self.send(addr, m.Setup(self.config, self.peers))

    def receiveMsg_ActorExitRequest(self, msg, sender):
        self.stopping = True

    def receiveMsg_Pong(self, msg: m.Pong, sender):
        for entry in self.roles:
            if entry[0] == sender:
                entry[2] = msg.pid

    def receiveMsg_WakeupMessage(self, msg, sender):
        if self.stopping:
            return
        for addr, role, pid in list(self.roles):
            if pid is not None and not _alive(pid):
                self._child_exited(addr)
        self._report()
        self.wakeupAfter(SWEEP)

    def _report(self):
        """The tree as it is, for the engine's health record (what /api/health and `cameron
        status` read, rather than asking an actor)."""
        if self.peers.job_data is not None:
            given_up = tuple(sorted(r for r, times in self.restarts.items() if times is None))
            self.send(self.peers.job_data, m.TreeReport(os.getpid(), len(self.roles),
                                                        3 + self.config.runners, given_up))

    def receiveMsg_ChildActorExited(self, msg, sender):
        self._child_exited(msg.childAddress)

    def _child_exited(self, address):
        gone = [entry for entry in self.roles if entry[0] == address]
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
        if role.startswith("runner:"):
            # Its jobs lived in its memory: the new runner picks them up from Redis.
            self.send(self.peers.scheduler, m.Recover(int(role.split(":")[1]), self.peers))
        elif role in ("scheduler", "job_data"):
            # New jobs pass through them off the inbox: a batch may have died with one. Every
            # unfinished job is handed out again; runners ignore the ones they already run.
            self.send(self.peers.scheduler, m.Recover(None, self.peers))


def _alive(pid: int) -> bool:
    """False once the child has exited; reaps it if Thespian has not (a missed SIGCHLD)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return os.path.exists(f"/proc/{pid}")  # not our child (already reaped): gone if absent
