"""The reference model for tests of ceylon_net.core.broadcasts.BroadcastInbox: the inbox as
it was before it kept the ranges its admin said gone as ranges (40f6348), one marker a
number: simple enough to trust, too slow for large ranges. Property tests compare the two."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ceylon_net.core.broadcasts import HELD
from ceylon_net.wire import MAX_RANGES


class ReferenceInbox:
    """An agent's side: broadcasts come in by number, possibly out of order or twice (PUB,
    repairs over the DEALER); they come out once each, in order. ``heard`` is None until the
    first numbered message: from then on everything after it is this agent's to receive."""

    def __init__(self, capacity: int = HELD) -> None:
        self.capacity = capacity
        self.heard: int | None = None  # the number it started hearing after
        self.next = 0  # the next number to deliver (valid once heard)
        self.top = 0  # the highest number known to exist (broadcast or heartbeat)
        self.skipped = 0  # broadcasts the admin no longer had: lost to this agent
        self._held: dict[int, Any] = {}  # arrived ahead of a gap

    def hear(self, seq: int) -> bool:
        """The admin's heartbeat says broadcasts up to ``seq`` exist. True the first time:
        from now on this agent hears everything after ``seq``."""
        if self.heard is None:
            self.heard, self.next = seq, seq + 1
            self.top = seq
            return True
        self.top = max(self.top, seq)
        return False

    def accept(self, seq: int, item: Any) -> Iterator[Any]:
        """A numbered broadcast arrived; yields those now deliverable, in order."""
        if self.heard is None:
            self.hear(seq - 1)
        self.top = max(self.top, seq)
        if seq < self.next or seq in self._held:
            return  # a duplicate (a repair that crossed the original)
        if len(self._held) >= self.capacity and seq != self.next:
            return  # too far ahead to hold: asked for again later
        self._held[seq] = item
        yield from self._ready()

    def skip(self, first: int, last: int) -> Iterator[Any]:
        """The admin no longer has ``first``..``last``: count them lost and go on."""
        for seq in range(max(first, self.next), last + 1):
            if seq not in self._held:
                self._held[seq] = _SKIPPED
        yield from self._ready()

    def _ready(self) -> Iterator[Any]:
        while self.next in self._held:
            item = self._held.pop(self.next)
            self.next += 1
            if item is _SKIPPED:
                self.skipped += 1
            else:
                yield item

    @property
    def delivered(self) -> int:
        """The last number delivered (or skipped) in order."""
        return self.next - 1

    def last_missing(self) -> int:
        """The highest number known to exist and not here, or said gone (0: none)."""
        for seq in range(self.top, self.next - 1, -1):
            if self._held.get(seq, _SKIPPED) is _SKIPPED:
                return seq
        return 0

    def drain(self) -> Iterator[Any]:
        """The end of this inbox (its admin process is gone): what it holds, in order; the
        numbers up to ``top`` it never got count as skipped (counted, not walked: ``top``
        is what the admin said)."""
        for seq in sorted(self._held):
            item = self._held.pop(seq)
            self.skipped += seq - self.next  # (the numbers before it, not here)
            self.next = seq + 1
            if item is _SKIPPED:
                self.skipped += 1
            else:
                yield item
        if self.top >= self.next:
            self.skipped += self.top + 1 - self.next
            self.next = self.top + 1

    def missing(self) -> list[list[int]]:
        """[first, last] ranges known to exist but not here (bounded)."""
        if self.heard is None:
            return []
        out: list[list[int]] = []
        seq = self.next
        for held in sorted(self._held):
            if held > seq:
                out.append([seq, held - 1])
            seq = held + 1
            if len(out) >= MAX_RANGES:
                return out
        if seq <= self.top:
            out.append([seq, self.top])
        return out[:MAX_RANGES]


_SKIPPED = object()
