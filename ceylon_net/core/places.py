"""Who the dashboard serves when connections come faster than it answers. Pure: connections
are keys, time is an argument, and each call says what should happen; the dashboard carries
it out (:mod:`ceylon_net.edge.dashboard`).

Rules:
- ``places`` connections are served at once (an answer, an open page's stream);
- a newcomer beyond them waits for a place (a burst of requests is answered in turn: a
  freed place goes to those waiting before a newcomer);
- a served connection that has sent no request ``grace`` seconds after it got its place gives
  it to one waiting (idle connections must not keep real ones out); it is told 503;
- of ``waiting`` waiting, the one waiting longest gives way to a newcomer (503);
- one that waited ``patience`` seconds without a place gives up (503).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

Key = Hashable


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a connection asking for a place should do: ``served`` (it has one); else wait
    until ``until`` (or until a place frees, whichever comes first) and ask again, unless
    ``refused`` (a 503). ``evict``: slow connections whose places it freed (each told 503),
    for those waiting before it (wake them) and then for itself; ``bumped``: a waiter that
    gave way to it (wake it: asking again, it is refused)."""

    served: bool = False
    refused: bool = False
    until: float = 0.0
    evict: tuple[Key, ...] = ()
    bumped: Key | None = None


class Places:
    def __init__(self, places: int, waiting: int, grace: float, patience: float) -> None:
        self.places, self.waiting, self.grace, self.patience = places, waiting, grace, patience
        self.served: set[Key] = set()
        self.reading: dict[Key, float] = {}  # served, request not read yet: since when
        self.waiters: dict[Key, float] = {}  # waiting for a place, oldest first: since when
        self.bumped: set[Key] = set()  # waiters that gave way, not told yet

    def ask(self, key: Key, now: float) -> Verdict:
        """``key`` asks for a place (first, or again after waiting)."""
        if key in self.served:  # (has one: asked again, nothing changes)
            return Verdict(served=True)
        # (the same sums as the verdicts' ``until``: a wait never ends before its time)
        if key in self.bumped or now >= self.waiters.get(key, math.inf) + self.patience:
            self._forget_waiter(key)
            return Verdict(refused=True)
        # A newcomer comes after those waiting: a freed place is theirs first.
        ahead = 0 if key in self.waiters else len(self.waiters)
        evicted = []  # slow readers past their grace, oldest first, as places are short
        while self.places - len(self.served) <= ahead and self.reading:
            slow, since = next(iter(self.reading.items()))
            if now < since + self.grace:
                break
            self.leave(slow)
            evicted.append(slow)
        evict = tuple(evicted)
        if self.places - len(self.served) > ahead:
            self._forget_waiter(key)
            self.served.add(key)
            self.reading[key] = now
            return Verdict(served=True, evict=evict)
        bumped = None
        if key not in self.waiters:
            if not self.waiting:  # (no waiting room: refused at once)
                return Verdict(refused=True)
            if len(self.waiters) >= self.waiting:
                bumped = next(iter(self.waiters))
                del self.waiters[bumped]
                self.bumped.add(bumped)
            self.waiters[key] = now
        until = self.waiters[key] + self.patience
        if self.reading:  # (the oldest reader's grace ends, later: its place may be had then)
            until = min(until, next(iter(self.reading.values())) + self.grace)
        return Verdict(until=until, evict=evict, bumped=bumped)

    def read(self, key: Key) -> None:
        """``key`` sent its request: it keeps its place until it ends."""
        self.reading.pop(key, None)

    def leave(self, key: Key) -> bool:
        """``key`` ended (or was evicted): True when that freed a place."""
        self.reading.pop(key, None)
        self._forget_waiter(key)
        if key in self.served:
            self.served.discard(key)
            return True
        return False

    def _forget_waiter(self, key: Key) -> None:
        self.waiters.pop(key, None)
        self.bumped.discard(key)
