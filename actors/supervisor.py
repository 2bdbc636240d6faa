"""Supervisor: OTP's one_for_one supervisor on the shared actor base (OneForOne), and the
engine's own (cameron_process_sup): the catalog, JobData, the scheduler and the runners,
restarted when they die, each told where the others are."""

import datetime
import os
import time
from collections import deque
from dataclasses import dataclass, field

from cameron import actorsys, procfs
from cameron import messages as m

from actors.base import CameronActor
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


@dataclass
class Child:
    """One child of a supervisor: what to start, and where it runs now."""

    name: str  # "job_data", "runner", ...
    cls: type
    slot: int | None = None  # which one, for children started several times (the runners)
    address: object = None
    pid: int | None = None  # from its Pong: what the sweep watches
    restarts: deque | None = field(default_factory=deque)  # recent restart times; None: given up

    @property
    def label(self) -> str:
        return self.name if self.slot is None else f"{self.name}:{self.slot}"


class OneForOne(CameronActor):
    """Starts the children child_specs() names; a child that dies is started again alone,
    unless it died more than MAX_RESTARTS times within PERIOD seconds (then it stays down and
    that is logged). Subclasses say what happens around a (re)start: started()."""

    role = "supervisor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kids = []  # of Child
        self.stopping = False

    def child_specs(self) -> list:
        """Hook: the children, in start order."""
        return []

    def started(self, child: Child, restart: bool) -> None:
        """Hook: `child` was started (again, after a death, when `restart`)."""

    def boot(self):
        for child in self.child_specs():
            self.kids.append(child)
            self._start(child)
        self.wakeupAfter(SWEEP)

    def _start(self, child: Child):
        child.address, child.pid = self.createActor(child.cls), None
        self.send(child.address, m.Ping())  # its Pong tells the pid the sweep watches

    def children(self):
        return tuple(c.address for c in self.kids if c.address is not None)

    def given_up(self) -> tuple:
        return tuple(sorted(c.label for c in self.kids if c.restarts is None))

    def status(self):
        return {"children": len(self.children()), "given_up": list(self.given_up())}

    def receiveMsg_ActorExitRequest(self, msg, sender):
        self.stopping = True

    def receiveMsg_Pong(self, msg: m.Pong, sender):
        for child in self.kids:
            if child.address == sender:
                child.pid = msg.pid

    def receiveMsg_ChildActorExited(self, msg, sender):
        self._exited(msg.childAddress)

    def receiveMsg_WakeupMessage(self, msg, sender):
        if self.stopping:
            return
        for child in self.kids:
            if child.pid is not None and not _alive(child.pid):
                self._exited(child.address)
        self.swept()
        self.wakeupAfter(SWEEP)

    def swept(self) -> None:
        """Hook: every SWEEP."""

    def _exited(self, address):
        child = next((c for c in self.kids if c.address == address and address is not None), None)
        if child is None or self.stopping:
            return
        child.address = child.pid = None
        if child.restarts is None:
            return
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > PERIOD:
            child.restarts.popleft()
        if len(child.restarts) >= MAX_RESTARTS:
            self.log.error("%s died %d times within %.0f s; not restarting it again", child.label,
                           len(child.restarts) + 1, PERIOD)
            child.restarts = None
            return
        child.restarts.append(now)
        self.log.warning("%s exited; restarting it", child.label)
        self._start(child)
        self.started(child, restart=True)


class Supervisor(OneForOne):
    """The engine's tree. The first WhereIs boots it with the engine's settings; every
    (re)start tells all children the new addresses (Setup), and a restart also has the jobs
    that lived in the dead child handed out again (Recover)."""

    BOOT_MESSAGES = OneForOne.BOOT_MESSAGES + (m.WhereIs,)

    def receiveMsg_WhereIs(self, msg: m.WhereIs, sender):
        if self.config is None:
            self.config = msg.config
            actorsys.warn_if_exposed(self.log, "the actor system", actorsys.thespian_address())
            self.boot()
            self._announce()
            self.swept()  # at once: `cameron start` waits for the engine's first health record
            # Jobs a previous engine accepted but did not finish go on now.
            self.send(self.peers.scheduler, m.Recover(None, self.peers))
        self.send(sender, self.peers)

    def child_specs(self):
        return [Child("catalog", ProcessCatalog), Child("job_data", JobData), Child("scheduler", JobScheduler)] + [
            Child("runner", JobRunner, slot=i) for i in range(self.config.runners)]

    def _start(self, child: Child):
        super()._start(child)
        if child.name == "runner":
            self.peers.runners.extend([None] * (child.slot + 1 - len(self.peers.runners)))
            self.peers.runners[child.slot] = child.address
        else:
            setattr(self.peers, child.name, child.address)

    def _announce(self):
        self.peers.generation += 1
        for child in self.kids:
            if child.address is not None:
                self.send(child.address, m.Setup(self.config, self.peers))

    def started(self, child: Child, restart: bool):
        self._announce()
        if child.name == "runner":
            # Its jobs lived in its memory: the new runner picks them up from Redis.
            self.send(self.peers.scheduler, m.Recover(child.slot, self.peers))
        elif child.name in ("scheduler", "job_data"):
            # New jobs pass through them off the inbox: a batch may have died with one. Every
            # unfinished job is handed out again; runners ignore the ones they already run.
            self.send(self.peers.scheduler, m.Recover(None, self.peers))

    def swept(self):
        """The tree as it is, for the engine's health record (what /api/health and `cameron
        status` read, rather than asking an actor)."""
        if self.peers.job_data is not None:
            self.send(self.peers.job_data, m.TreeReport(os.getpid(), len(self.children()),
                                                        len(self.kids), self.given_up()))


def _alive(pid: int) -> bool:
    """False once the child has exited; reaps it if Thespian has not (a missed SIGCHLD)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return procfs.alive(pid)  # not our child (already reaped): gone once it is not alive
