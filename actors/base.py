"""What every Cameron actor shares: its settings, its peers, its lanes to them, a liveness answer."""

import ctypes
import datetime
import logging
import os
import signal

from thespian.actors import ActorSystemMessage, ActorTypeDispatcher, ThespianWatch, WakeupMessage, WatchMessage
from thespian.system.transport import TransmitIntent

from cameron import messages as m
from cameron.lane import LaneClosed, Lanes

#: What goes between sibling actors by lane when one is open (cameron.lane.Lanes): the
#: messages every job causes. Anything else, and these when no lane is open, go by Thespian.
BY_LANE = (m.NewJobs, m.RunJobs, m.WriteBatch, m.Written)
#: How soon what a lane's socket could not take yet is written again.
FLUSH_AGAIN = datetime.timedelta(milliseconds=5)
_FLUSH_LANES = "cameron: flush lanes"


def link_to_parent(actor) -> None:
    """OTP's link, for an actor's process: it dies with its parent. Thespian does not tell a
    child that its parent died, and a killed Supervisor left its whole tree running, working and
    unseen beside the new one. The kernel sends this process SIGKILL when its parent exits
    (PR_SET_PDEATHSIG); a parent already gone by now means this process is an orphan too.
    Only in an actor's own process (not in a unit test that builds an actor by hand)."""
    if not hasattr(getattr(actor, "_myRef", None), "_send_intent"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent == 1 or os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


class CameronActor(ActorTypeDispatcher):
    """Receives Setup from its supervisor (again after any restart) and answers Ping."""

    role = "actor"
    #: What an actor handles before its first Setup; anything else waits for it.
    BOOT_MESSAGES = (m.Setup, m.Ping, ActorSystemMessage)
    #: Whether this actor takes and opens lanes to its siblings (cameron.lane.Lanes).
    LANES = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.peers = m.Peers()
        self.handled = 0
        self.log = logging.getLogger(f"cameron.{self.role}")
        self._early = []  # work that arrived before the first Setup
        self.lanes = None  # to sibling actors, if LANES
        self._due = set()  # payloads of the wake_once() wake-ups on their way

    def receiveMessage(self, message, sender):
        if not self.handled:
            link_to_parent(self)
            self._open_lanes()
        self.handled += 1
        if isinstance(message, WakeupMessage):
            self._due.discard(message.payload)
        if isinstance(message, WatchMessage) and self.lanes is not None:
            for by_lane, peer in self.lanes.ready(message.ready):
                self.receiveMessage(by_lane, peer)
            mine = [fd for fd in message.ready if fd in self.watched()]
            if mine:
                self._dispatch(WatchMessage(mine), sender)
        elif isinstance(message, WakeupMessage) and message.payload == _FLUSH_LANES:
            self._flush_lanes()
        else:
            self._dispatch(message, sender)
        fds = self.watched() + (self.lanes.fds(self.lanes_watched()) if self.lanes is not None else [])
        return ThespianWatch(fds) if fds else None

    def _dispatch(self, message, sender):
        if self.config is None and not isinstance(message, self.BOOT_MESSAGES):
            # Messages from different senders are not ordered: a peer can reach a freshly
            # (re)started actor before its supervisor's Setup does. Keep it for after.
            self._early.append((message, sender))
            return
        super().receiveMessage(message, sender)

    def watched(self) -> list:
        """Hook: file descriptors of the actor's own to watch (a WatchMessage names those ready)."""
        return []

    def _open_lanes(self):
        if self.LANES and hasattr(getattr(self, "_myRef", None), "_send_intent"):
            try:
                self.lanes = Lanes(self.myAddress)
            except OSError as e:
                self.log.warning("no lanes (%s): every message goes by Thespian", e)

    def send(self, addr, msg):
        if not self._by_lane(addr, msg):
            super().send(addr, msg)

    def _by_lane(self, addr, msg) -> bool:
        """Send `msg` by lane if it is one of BY_LANE and a lane to `addr` is (or can be) open."""
        if self.lanes is None or not isinstance(msg, BY_LANE) or not self.lanes.send(addr, msg):
            return False
        self.flush_later()
        return True

    def lanes_watched(self) -> bool:
        """Hook: whether a message arriving on a sibling lane wakes the actor; one that says
        no reads them itself (read_lanes) when it wants what they hold."""
        return True

    def read_lanes(self):
        """Handle what the sibling lanes hold now, as if each had woken the actor."""
        for by_lane, peer in self.lanes.read_all():
            self.receiveMessage(by_lane, peer)

    def own_lanes(self) -> list:
        """Hook: lanes of the actor's own, besides those to its siblings (written from its
        Thespian thread only)."""
        return []

    def wake_once(self, after, payload):
        """A wake-up with `payload` `after` from now, unless one with it is on its way already."""
        if payload not in self._due:
            self._due.add(payload)
            self.wakeupAfter(after, payload=payload)

    def flush_later(self):
        """One wake-up, FLUSH_AGAIN from now, writes what waits on any lane (what its socket
        could not take yet)."""
        if (self.lanes is not None and self.lanes.pending()) or any(lane.pending for lane in self.own_lanes()):
            self.wake_once(FLUSH_AGAIN, _FLUSH_LANES)

    def _flush_lanes(self):
        if self.lanes is not None:
            self.lanes.flush()
        for lane in self.own_lanes():
            try:
                lane.flush()
            except LaneClosed:
                pass  # its process died: what waited goes with it (and is made again)
        self.flush_later()

    def receiveMsg_Setup(self, msg: m.Setup, sender):
        first = self.config is None
        self.config = msg.config
        if first:
            # Thespian leaves an actor's root logger open to every level and forwards each
            # record to its logger process, where the handlers' level drops it: urllib3's debug
            # line per activity call cost that process a millisecond a job. Drop them here.
            logging.getLogger().setLevel(self.config.log_level)
        self.adopt(msg.peers)
        self.setup(first)
        early, self._early = self._early, []
        for message, original_sender in early:
            self.receiveMessage(message, original_sender)

    def adopt(self, peers: m.Peers) -> None:
        if peers.generation >= self.peers.generation:
            self.peers = peers

    def setup(self, first: bool) -> None:
        """Hook: the settings or a peer's address changed (first=True on the first Setup)."""

    def receiveMsg_Ping(self, msg, sender):
        self.send(sender, m.Pong(self.role, os.getpid(), self.handled, self.status(),
                                 type(self).__name__, tuple(self.children())))

    def status(self) -> dict:
        """Hook: figures for `cameron status`."""
        return {}

    def children(self):
        """Hook: the actors this one created and supervises, for `cameron status`."""
        return ()

    def send_then(self, addr, msg, done) -> None:
        """send(), then done() once the transport has delivered the message or given up on it.
        Thespian's Actor.send() takes no callback; its transport does (thespian is pinned)."""
        manager = getattr(self, "_myRef", None)
        if not hasattr(manager, "_send_intent"):  # not in a Thespian system: a unit test
            self.send(addr, msg)
            done()
            return
        if self._by_lane(addr, msg):
            done()  # written: the next may follow at once
            return

        def failed(result, intent):
            manager.actor_send_fail(result, intent)  # what send() does: dead letters
            done()
        manager._send_intent(TransmitIntent(addr, msg, onSuccess=lambda result, intent: done(),
                                            onError=failed))

    def receiveUnrecognizedMessage(self, message, sender):
        if not isinstance(message, (m.Pong,)):
            self.log.debug("ignored %r from %s", type(message).__name__, sender)


class Pipe:
    """One message in flight to a peer at a time: items put while the transport still
    delivers the last message wait here and go together as the next one.

    Thespian's TCP transport sends one message per peer at a time, each waiting for its
    acknowledgement, and walks every queued one on every turn of its loop: a stream of small
    messages costs each side far more than a few big ones. An idle pipe sends at once, so
    nothing waits when the engine is quiet; a busy one batches as much as the load brings."""

    def __init__(self, actor: CameronActor, make):
        self.actor = actor
        self.make = make  # list of items -> the message
        self.items = []
        self.addr = None  # where the items go
        self.in_flight = None  # the address of the message in flight, if any

    def put(self, addr, items=()) -> None:
        """Items for the peer at `addr`; with none, only say where the peer now is (what waits
        goes there at once, rather than after the old peer's delivery, which may never come)."""
        self.items.extend(items)
        self.addr = addr
        if self.in_flight != addr and self.items:  # idle, or the peer was replaced
            self._send()

    def _send(self):
        items, self.items = self.items, []
        addr = self.in_flight = self.addr
        self.actor.send_then(addr, self.make(items), lambda: self._sent(addr))

    def _sent(self, addr):
        if addr != self.in_flight:
            return  # a message to a peer since replaced
        self.in_flight = None
        if self.items:
            self._send()  # to where the peer is now
