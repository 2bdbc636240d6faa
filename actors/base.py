"""What every Cameron actor shares: its settings, its peers' addresses, and a liveness answer."""

import logging
import os

from thespian.actors import ActorTypeDispatcher

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

    def receiveMessage(self, message, sender):
        self.handled += 1
        return super().receiveMessage(message, sender)

    def receiveMsg_Setup(self, msg: m.Setup, sender):
        first = self.config is None
        self.config, self.peers = msg.config, msg.peers
        self.setup(first)

    def setup(self, first: bool) -> None:
        """Hook: the settings or a peer's address changed (first=True on the first Setup)."""

    def receiveMsg_Ping(self, msg, sender):
        self.send(sender, m.Pong(self.role, os.getpid(), self.handled, self.status()))

    def status(self) -> dict:
        """Hook: figures for `cameron status`."""
        return {}

    def receiveUnrecognizedMessage(self, message, sender):
        if not isinstance(message, (m.Pong,)):
            self.log.debug("ignored %r from %s", type(message).__name__, sender)
