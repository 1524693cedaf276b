"""Python's full garbage collections at the admin's pace instead of the allocator's.

CPython collects its oldest generation whenever the objects that survived younger
collections grow by a quarter of the heap. An admin taking a large submission grows its heap
by a million objects (a record, a task and a result per task), so under load it traversed
the whole, growing, heap again and again: measured in W1 (100,000 tasks, 4 workers), 28-34 µs
of the admin's CPU per task with Python's default, 19-22 µs with full collections left out.
Young collections stay automatic (they are cheap and catch most cycles); the full ones run
from the admin's tick when it has nothing in flight (at most every ``gap`` seconds: a trickle
of work must not collect twice a second), or every ``every`` seconds however busy, so cyclic
garbage is still freed and memory stays bounded.

Process-wide: installed by the first admin started in a process, and Python's own setting
is back when the last one stops. (Written for CPython 3.11-3.13's three generations; where the
third threshold no longer starts full collections, setting it changes nothing.)
"""

from __future__ import annotations

import gc
import time

from loguru import logger

FULL_EVERY = 60.0  # seconds between full collections while the admin stays busy
QUIET_GAP = 5.0  # seconds at least between two collections for a quiet spell
_NEVER = 1 << 30  # a third threshold Python never reaches: no automatic full collection


class FullCollections:
    _installed = 0
    _saved: tuple[int, int, int] = (700, 10, 10)

    def __init__(self, every: float = FULL_EVERY, gap: float = QUIET_GAP) -> None:
        self.every, self.gap = every, gap
        self.last = time.monotonic()
        self.quiet_done = False  # collected since the admin last went quiet
        self.active = False

    def install(self) -> None:
        if self.active:
            return
        if FullCollections._installed == 0:
            FullCollections._saved = gc.get_threshold()
            first, second, _ = FullCollections._saved
            gc.set_threshold(first, second, _NEVER)
        FullCollections._installed += 1
        self.active = True

    def uninstall(self) -> None:
        if not self.active:
            return
        self.active = False
        FullCollections._installed -= 1
        if FullCollections._installed == 0:
            gc.set_threshold(*FullCollections._saved)

    def tick(self, now: float, quiet: bool) -> bool:
        """Called regularly; ``quiet``: nothing in flight. True when it collected."""
        if not self.active:
            return False
        if not quiet:
            self.quiet_done = False
        since = now - self.last
        if since < self.every and not (quiet and not self.quiet_done and since >= self.gap):
            return False
        self.quiet_done = quiet
        started = time.monotonic()
        found = gc.collect()
        self.last = now
        logger.debug("full garbage collection: {} unreachable object(s) in {:.3f} s", found,
                     time.monotonic() - started)
        return True
