"""The runners' write batches on their way to Redis, in plain Python: numbered and kept by the
runner until acknowledged (Outbox), put back in order (InOrder) and written, acknowledged and
never lost when a reply is (Backlog) by JobData."""

import time
from collections import deque

import redis

from cameron import messages as m


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


class Backlog:
    """The batches on their way to Redis, oldest first, written many per MULTI/EXEC (at most
    `most` batches each). Each transaction also records a token: after one whose reply was
    lost, reading the token back says whether it was applied, so it is neither lost nor
    written again as if new. What reached Redis waits in `acks` for its writers to hear."""

    def __init__(self, incarnation: str, most: int):
        self.incarnation, self.most = incarnation, most
        self.batches = []  # (ops, seq, writer)
        self.unsure = None  # (token, how many batches) of a write whose reply was lost
        self.flushes = 0
        self.written = 0  # moments written
        self.progress = time.time()  # when a write last reached Redis: jobs moved then
        self.acks = []  # [writer, highest seq written] not yet told (addresses are not hashable)

    def __len__(self):
        return len(self.batches)

    def add(self, ops, seq, writer) -> None:
        self.batches.append((ops, seq, writer))

    def ending(self) -> set:
        """Tags of the jobs whose end waits here."""
        return {op.tag for ops, _, _ in self.batches for op in ops if type(op) is m.JobEnded}

    def flush(self, store, keep=None) -> None:
        """Everything to Redis, in order; `keep(ops, writer)`, if given, filters each batch's
        moments first. A Redis error leaves the rest here (and what it was writing unsure)."""
        if self.unsure is not None:
            token, count = self.unsure
            landed = store.written_token() == token
            self.unsure = None
            if landed:
                self._written(count, 0)
        while self.batches:
            taken = self.batches[:self.most]
            self.flushes += 1
            token = f"{self.incarnation}:{self.flushes}"
            try:
                ops = [op for batch, _, writer in taken for op in (keep(batch, writer) if keep else batch)]
                store.apply(ops, token)
            except redis.RedisError:
                self.unsure = (token, len(taken))
                raise
            self._written(len(taken), len(ops))

    def _written(self, count: int, ops: int) -> None:
        taken, self.batches = self.batches[:count], self.batches[count:]
        self.written += ops
        if ops:
            self.progress = time.time()
        for _, seq, writer in taken:
            for ack in self.acks:
                if ack[0] == writer:
                    ack[1] = max(ack[1], seq)
                    break
            else:
                self.acks.append([writer, seq])


class Outbox:
    """A runner's side: its batches numbered in the order it makes them, each kept until JobData
    acknowledges it (Written), to be sent again, in order, to a JobData that replaced one that
    may have died with them."""

    def __init__(self):
        self.seq = 0
        self.acked = 0  # every batch up to this one is in Redis
        self.unacked = deque()  # m.WriteBatch, oldest first

    def batch(self, ops) -> m.WriteBatch:
        self.seq += 1
        batch = m.WriteBatch(ops, self.seq, self.acked)
        self.unacked.append(batch)
        return batch

    def written(self, seq: int) -> None:
        self.acked = max(self.acked, seq)
        while self.unacked and self.unacked[0].seq <= seq:
            self.unacked.popleft()

    def again(self) -> list:
        """What a new JobData must get: every unacknowledged batch, with today's floor (where
        the new JobData starts counting)."""
        return [m.WriteBatch(b.ops, b.seq, self.acked) for b in self.unacked]
