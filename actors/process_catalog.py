"""ProcessCatalog: holds the processes of the catalog file and tells the scheduler about them."""

from cameron import catalog
from cameron import messages as m
from cameron.config import ConfigError

from actors.base import CameronActor


class ProcessCatalog(CameronActor):
    role = "catalog"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.processes = None

    def receiveMsg_ListProcesses(self, msg, sender):
        self.send(sender, m.ProcessList(sorted(self.processes.values(), key=lambda p: p.name)
                                        if self.processes is not None else []))

    def setup(self, first):
        if first:
            try:
                self.processes = catalog.load(self.config.processes_file)
            except ConfigError as e:
                # `cameron start` checked the file before booting; it can only have changed since.
                self.log.error("%s", e)
                self.processes = {}
        # The scheduler may be new (a restart): give it the catalog it routes jobs with.
        if self.peers.scheduler is not None:
            self.receiveMsg_ListProcesses(None, self.peers.scheduler)

    def status(self):
        return {"processes": len(self.processes or {})}
