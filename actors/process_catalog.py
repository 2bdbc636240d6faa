"""ProcessCatalog: holds the processes of the catalog file, tells the scheduler about them, and
publishes them in Redis, where the API checks each start against them."""

import datetime

import redis

from cameron import catalog, store
from cameron import messages as m
from cameron.config import ConfigError

from actors.base import CameronActor


class ProcessCatalog(CameronActor):
    role = "catalog"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.processes = None
        self.store = None
        self.published = False

    def receiveMsg_ListProcesses(self, msg, sender):
        self.send(sender, m.ProcessList(self._sorted()))

    def _sorted(self):
        return sorted((self.processes or {}).values(), key=lambda p: p.name)

    def receiveMsg_ReloadCatalog(self, msg, sender):
        """Read the file again; a bad file changes nothing and the caller is told why. Jobs
        already accepted keep the process settings they were accepted with."""
        try:
            processes = catalog.load(self.config.processes_file, default_allow=self.config.allow)
        except ConfigError as e:
            self.log.warning("catalog not reloaded: %s", e)
            self.send(sender, m.CatalogInvalid(str(e)))
            return
        self.processes = processes
        self.log.info("catalog reloaded: %d processes", len(processes))
        self._publish()
        if self.peers.scheduler is None:
            self.receiveMsg_ListProcesses(None, sender)
        else:
            # Answered through the scheduler: once the caller hears back, new jobs see the change.
            self.send(self.peers.scheduler, m.ProcessList(self._sorted(), reply_to=sender))

    def setup(self, first):
        if first:
            try:
                self.processes = catalog.load(self.config.processes_file, default_allow=self.config.allow)
            except ConfigError as e:
                # `cameron start` checked the file before booting; it can only have changed since.
                self.log.error("%s", e)
                self.processes = {}
            client = store.connect(self.config.effective_redis_url, self.config.redis_timeout)
            self.store = store.JobStore(client, self.config.engine)
            self._publish()
        # The scheduler may be new (a restart): give it the catalog it routes jobs with.
        if self.peers.scheduler is not None:
            self.receiveMsg_ListProcesses(None, self.peers.scheduler)

    def _publish(self):
        """Until it is in Redis the API answers 503 to every start (it cannot check them)."""
        try:
            self.store.publish_catalog(self._sorted())
            self.published = True
        except redis.RedisError as e:
            self.log.warning("catalog not published (tried again in a second): %s", e)
            self.published = False
            self.wakeupAfter(datetime.timedelta(seconds=1))

    def receiveMsg_WakeupMessage(self, msg, sender):
        if not self.published:
            self._publish()

    def status(self):
        return {"processes": len(self.processes or {}), "published": self.published}
