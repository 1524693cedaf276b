"""Broadcasts that arrive: every user broadcast gets a sequence number from the admin, goes out
once on PUB, and is kept in a bounded ring; a subscriber delivers in sequence order, notices
what it missed (a gap before a later message, or behind the admin's heartbeat) and asks for it
over its DEALER. This is the ZeroMQ guide's Clone pattern, with the admin as the one sequencer
(a worker's broadcast reaches the admin over its DEALER, in order, and is sequenced there, so
every sender's order is kept). Pure: no sockets, no clock.

- :class:`BroadcastLog` (admin): the sequence and the ring of recent broadcasts.
- :class:`BroadcastInbox` (each agent): what it has, in order; what it misses.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..wire import MAX_RANGES

# Broadcasts the admin keeps for repairs. An agent whose loop is blocked while the admin
# bursts gets what its buffers hold (the admin's PUB queues 10,000 for it, the kernel some,
# its SUB some), and the rest from here: at 10,000, a 4 s stall under a burst of 50,000
# lost a few on a loaded host.
RING = 30_000
RING_BYTES = 64 << 20  # ... and at most this many bytes, each counted with ENTRY beside it
# What a kept broadcast costs beside its payload: its decoded header, the pair and the record
# (measured at 0.51 KiB; a long sender or type name adds its length): a ring full of small
# broadcasts is some 20 MiB.
ENTRY = 576
# Broadcasts an agent holds that came ahead of a gap (more are dropped there, and asked for
# again once the gap is filled: the admin's ring still has them).
HELD = 10_000
# Broadcasts the admin sends again to one agent for one request of it, at most; the agent
# asks again once half of them reached it (a pipeline, clocked by what it takes in).
REPAIR_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class Sent:
    seq: int
    item: Any  # what the admin relays: (header, payload)
    size: int


class BroadcastLog:
    """The admin's side: numbers broadcasts from 1 and keeps the latest ones."""

    def __init__(self, capacity: int = RING, max_bytes: int = RING_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.seq = 0  # the latest broadcast's number
        self._ring: deque[Sent] = deque()
        self._bytes = 0

    def append(self, item: Any, size: int) -> int:
        """Keep a new broadcast of ``size`` payload bytes; returns its number."""
        size += ENTRY
        self.seq += 1
        self._ring.append(Sent(self.seq, item, size))
        self._bytes += size
        while self._ring and (len(self._ring) > self.capacity or self._bytes > self.max_bytes):
            self._bytes -= self._ring.popleft().size
        return self.seq

    @property
    def oldest(self) -> int:
        """The oldest number still kept (seq + 1 when none is)."""
        return self._ring[0].seq if self._ring else self.seq + 1

    def get(self, first: int, last: int) -> tuple[list[Sent], int]:
        """Broadcasts ``first``..``last`` still kept, and how many of them are not (gone from
        the ring, or never sent)."""
        first, last = max(first, 1), min(last, self.seq)
        if last < first:
            return [], 0
        start = max(first, self.oldest)
        kept = [self._ring[s - self.oldest] for s in range(start, last + 1)] \
            if start <= last else []
        return kept, (last - first + 1) - len(kept)


class BroadcastInbox:
    """An agent's side: broadcasts come in by number, possibly out of order or twice (PUB,
    repairs over the DEALER); they come out once each, in order. ``heard`` is None until the
    first numbered message: from then on everything after it is this agent's to receive.
    Ranges the admin said gone are kept as ranges (a worker far behind gets one SKIP of
    millions: walked a number at a time, it took the worker's memory)."""

    def __init__(self, capacity: int = HELD) -> None:
        self.capacity = capacity
        self.heard: int | None = None  # the number it started hearing after
        self.next = 0  # the next number to deliver (valid once heard)
        self.top = 0  # the highest number known to exist (broadcast or heartbeat)
        self.skipped = 0  # broadcasts the admin no longer had: lost to this agent
        # The highest number found missing, as it became so (a jump past top, one dropped
        # for want of room, or the admin saying more exist): whether a gap is new is known
        # at once, not by walking what is held (10,000 held ahead of a gap made each repair
        # that fills it cost 0.3-1.8 ms).
        self.newest_gap = 0
        # What this agent asked the admin for: missing numbers up to asked_upto; and, catching
        # up, to ask again once delivered up to repair_mark (see ask_due).
        self.asked_upto, self.repair_mark = 0, math.inf
        self._held: dict[int, Any] = {}  # arrived ahead of a gap
        self._gone: list[list[int]] = []  # [first, last] said gone, ahead of next: sorted
        self._ahead: list[int] = []  # the held numbers, as a heap (see _next_held)
        # Since when the admin's word beside PUB says more than PUB brought, and the next
        # number this inbox waited for then (see told).
        self._stalled: tuple[float, int] | None = None

    def hear(self, seq: int) -> bool:
        """The admin's heartbeat says broadcasts up to ``seq`` exist. True the first time:
        from now on this agent hears everything after ``seq``."""
        if self.heard is None:
            self.heard, self.next = seq, seq + 1
            self.top = seq
            return True
        if seq > self.top:
            self.top = self.newest_gap = seq
        return False

    def ask_due(self, first: bool) -> bool:
        """Should the agent tell the admin now what it misses (a heartbeat)? When it starts
        hearing (``first``: the admin then counts it connected), when a gap above what it
        asked for opened, and, catching up, once half of what the admin sends again at a
        time came (a receiver paused 5 s in a burst asked again only on its heartbeats, and
        caught up at REPAIR_BATCH a second, some 30 s, every new broadcast waiting behind:
        a review of messaging). Then :meth:`asked`."""
        return first or self.newest_gap > self.asked_upto \
            or self.repair_mark <= self.next <= self.top

    def asked(self) -> None:
        """The agent told the admin what it misses, as of now."""
        self.asked_upto, self.repair_mark = self.top, self.next + REPAIR_BATCH // 2

    def told(self, seq: int, now: float, wait: float) -> bool:
        """The admin says beside PUB (its heartbeat to this agent alone, over the ROUTER)
        that broadcasts up to ``seq`` exist. Taken (as :meth:`hear`) only once PUB has
        brought nothing for ``wait`` seconds since it first said more (the PUB connection
        stalled): it overtakes what is still on its way on PUB (the agent's loop held up,
        say), and asked for at once, what the admin no longer keeps it would say to skip,
        lost. True when taken: ask for what is missing. An inbox that never heard PUB is
        not set hearing by it."""
        if self.heard is None or seq <= self.top:
            self._stalled = None
            return False
        if self._stalled is None or self._stalled[1] != self.next:  # (PUB moved since)
            self._stalled = (now, self.next)
            return False
        if now - self._stalled[0] < wait:
            return False
        self._stalled = None
        self.hear(seq)
        return True

    def accept(self, seq: int, item: Any) -> Iterator[Any]:
        """A numbered broadcast arrived; yields those now deliverable, in order."""
        if self.heard is None:
            self.hear(seq - 1)
        if seq > self.top:
            if seq > self.top + 1:
                self.newest_gap = seq - 1
            self.top = seq
        if seq < self.next or seq in self._held or self._said_gone(seq):
            return  # a duplicate (a repair that crossed the original), or one said gone
        if len(self._held) >= self.capacity and seq != self.next:
            self.newest_gap = max(self.newest_gap, seq)
            return  # too far ahead to hold: asked for again later
        self._held[seq] = item
        heapq.heappush(self._ahead, seq)
        yield from self._ready()

    def skip(self, first: int, last: int) -> Iterator[Any]:
        """The admin no longer has ``first``..``last``: count them lost and go on (what of
        them is here is delivered)."""
        first = max(first, self.next)
        if first > last:
            return
        if first > self.top + 1:  # (those between exist too, and are not here)
            self.newest_gap = max(self.newest_gap, first - 1)
        self.top = max(self.top, last)  # (said to exist: gone)
        gone = self._gone  # (merged with its neighbours: found by bisection)
        i = bisect.bisect_left(gone, [first])
        if i > 0 and gone[i - 1][1] >= first - 1:
            i -= 1
            first, last = gone[i][0], max(last, gone[i][1])
        j = i
        while j < len(gone) and gone[j][0] <= last + 1:
            last, j = max(last, gone[j][1]), j + 1
        gone[i:j] = [[first, last]]
        yield from self._ready()

    def _said_gone(self, seq: int) -> bool:
        i = bisect.bisect_right(self._gone, [seq, math.inf]) - 1
        return i >= 0 and self._gone[i][0] <= seq <= self._gone[i][1]

    def _next_held(self) -> int | None:
        """The lowest number held (at or above next), or None."""
        ahead = self._ahead
        while ahead and ahead[0] < self.next:
            heapq.heappop(ahead)  # (delivered: stale)
        return ahead[0] if ahead else None

    def _ready(self) -> Iterator[Any]:
        while True:
            if self.next in self._held:
                item = self._held.pop(self.next)
                while self._ahead and self._ahead[0] <= self.next:
                    heapq.heappop(self._ahead)  # (the heap holds what _held does)
                self.next += 1
                yield item
            elif self._gone and self._gone[0][0] <= self.next:
                last, held = self._gone[0][1], self._next_held()
                stop = held if held is not None and held <= last else last + 1  # (delivered)
                self.skipped += max(0, stop - self.next)
                self.next = max(self.next, stop)
                if self.next > last:
                    self._gone.pop(0)
            else:
                return

    @property
    def delivered(self) -> int:
        """The last number delivered (or skipped) in order."""
        return self.next - 1

    def last_missing(self) -> int:
        """The highest number known to exist and not here, or said gone (0: none)."""
        if self.heard is None:
            return 0
        for seq in range(self.top, self.next - 1, -1):  # (past held ones only: few)
            if seq not in self._held:
                return seq
        return 0

    def drain(self) -> Iterator[Any]:
        """The end of this inbox (its admin process is gone): what it holds, in order; the
        numbers up to ``top`` it never got count as skipped (counted, not walked: ``top``
        is what the admin said)."""
        if self.heard is None:
            return
        for seq in sorted(self._held):
            item = self._held.pop(seq)
            self.skipped += seq - self.next  # (the numbers before it, not here)
            self.next = seq + 1
            yield item
        if self.top >= self.next:
            self.skipped += self.top + 1 - self.next
            self.next = self.top + 1
        self._gone, self._ahead = [], []

    def missing(self) -> list[list[int]]:
        """[first, last] ranges known to exist but not here nor said gone (bounded)."""
        if self.heard is None:
            return []
        here = sorted([*([s, s] for s in self._held), *self._gone])
        out: list[list[int]] = []
        seq = self.next
        for a, b in here:
            if a > seq:
                out.append([seq, a - 1])
                if len(out) >= MAX_RANGES:
                    return out
            seq = max(seq, b + 1)
        if seq <= self.top:
            out.append([seq, self.top])
        return out[:MAX_RANGES]


