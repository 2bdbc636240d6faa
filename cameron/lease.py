"""Which engines sharing a Redis are dead: the watch of their leases, in plain Python (JobData
renews this engine's lease and carries out what the watch concludes)."""


class LeaseWatch:
    """An engine is dead when its lease's value stays the same while this one watches it, with
    Redis answering, for a whole lease_ttl: a Redis stall makes every lease expire at once,
    and must not make the engines take each other's jobs. Time counts as watched only
    between renewals Redis answered close together (half a lease apart at most): across a
    longer gap Redis, or this engine, may have stood still and nobody could renew, so after
    one every engine gets a whole lease, from the first answer, to show it lives."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.renewed = None  # (began, ended) of the last renewal Redis answered
        self.seen = {}  # other engine -> [its lease value, seconds watched without a change]
        self.fenced = False  # this engine's own lease lapsed once

    def renewal(self, began: float, ended: float, held: bool, others: dict) -> dict:
        """A renewal Redis answered between `began` and `ended` (time.monotonic()); `held`:
        this engine's lease still existed; `others`: every other engine's lease value. Returns
        the dead engines (engine -> the value seen unchanged), to claim only if it still holds.
        Sets `fenced` once this engine's own lease may have lapsed."""
        watched, gap = 0.0, self.renewed is None
        if self.renewed is not None:
            if not held or ended - self.renewed[0] > self.ttl:
                self.fenced = True
            if ended - self.renewed[0] <= self.ttl / 2:
                watched = max(0.0, began - self.renewed[1])
            else:
                gap = True
        self.renewed = (began, ended)
        seen = {}
        for engine, value in others.items():
            old = self.seen.get(engine)
            same = old is not None and old[0] == value and not gap
            seen[engine] = [value, old[1] + watched] if same else [value, 0.0]
        self.seen = seen
        return {engine: value for engine, (value, quiet) in seen.items() if quiet >= self.ttl}
