"""What every Cameron actor shares: its settings, its peers' addresses, and a liveness answer."""

import logging
import os

from thespian.actors import ActorSystemMessage, ActorTypeDispatcher

from cameron import messages as m


class CameronActor(ActorTypeDispatcher):
    """Receives Setup from its supervisor (again after any restart) and answers Ping."""

    role = "actor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.peers = m.Peers()
        self.handled = 0
        self.log = logging.getLogger(f"cameron.{self.role}")
        self._early = []  # work that arrived before the first Setup

    def receiveMessage(self, message, sender):
        self.handled += 1
        if self.config is None and not isinstance(message, (m.Setup, m.Ping, ActorSystemMessage)):
            # Messages from different senders are not ordered: a peer can reach a freshly
            # (re)started actor before its supervisor's Setup does. Keep it for after.
            self._early.append((message, sender))
            return None
        return super().receiveMessage(message, sender)

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

    def receiveUnrecognizedMessage(self, message, sender):
        if not isinstance(message, (m.Pong,)):
            self.log.debug("ignored %r from %s", type(message).__name__, sender)
