"""The runners' write batches put in order for Redis, in plain Python: JobData writes what
this lets through."""


class InOrder:
    """A runner's batches must reach Redis in the order it made them (a task's start written
    after its end would leave it `running` for ever), and Thespian may deliver them out of it:
    each carries the runner's sequence number. A batch sent again after a JobData restart is
    let through once. The batches of a runner the Supervisor has replaced are dropped: its
    successor resumes from what Redis holds (and may already have read it), which must not
    change under it."""

    def __init__(self):
        self.writers = {}  # writer -> [next seq due, {seq: batch come early}]
        self.replaced = set()  # writers that must write no more

    def replace(self, gone) -> None:
        """These writers died and were replaced."""
        self.replaced |= set(gone)
        for writer in gone:
            self.writers.pop(writer, None)

    def arrived(self, writer, batch) -> list | None:
        """The batches of `writer` that may now be written, in order (none while one before
        them is missing); None when the writer was replaced."""
        if writer in self.replaced:
            return None
        due, early = self.writers.setdefault(writer, [batch.floor + 1, {}])
        if batch.seq < due:
            return []  # sent again after a JobData restart, and already taken
        early[batch.seq] = batch
        ready = []
        while due in early:
            ready.append(early.pop(due))
            due += 1
        self.writers[writer][0] = due
        return ready

    def waiting(self) -> int:
        """Batches come early, waiting for one before them."""
        return sum(len(early) for _, early in self.writers.values())
