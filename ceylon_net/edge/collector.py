"""Python's garbage collections at the programs' pace instead of the allocator's: the admin's
and the workers' (installed by each while it runs).

CPython collects its oldest generation whenever the objects that survived younger
collections grow by a quarter of the heap. An admin taking a large submission grows its heap
by a million objects (a record, a task and a result per task), so under load it traversed
the whole, growing, heap again and again: measured in W1 (100,000 tasks, 4 workers), 28-34 µs
of the admin's CPU per task with Python's default, 19-22 µs with full collections left out.
A worker holding a thousand tasks queued ahead (pipelining) did the same on a smaller scale:
two full collections of 15-63 ms each in every worker during one W1 run.

So full collections run from the programs' regular ticks when nothing is in flight (at most
every ``gap`` seconds: a trickle of work must not collect twice a second), or every ``every``
seconds however busy, so cyclic garbage is still freed and memory stays bounded. A collection
covers the whole process, so "nothing in flight" is the whole process's: with an admin and
its workers in one process (``arun_admin``), an idle worker does not collect while the admin
is busy, and 250 workers going quiet together (``bench/many_workers.py``) collect once.

Young collections stay automatic, but start after ``YOUNG`` more objects live rather than
Python's 700. The threshold counts allocations less deallocations, so a program whose live
objects grow by a few thousand (tasks queued ahead, results waiting for their
acknowledgement) ran a young collection every few tasks, each promoting the tasks in flight to
be traversed again: measured in W1, 60-80 ms of each worker's 0.4 s of CPU went to them, and
with ``YOUNG`` and the workers' full collections paced as the admin's, the workers' CPU went
0.40 -> 0.33 s and W1 50.7k -> 54.9k tasks/s (medians of 5 runs alternating with the commit
before). Garbage cycles wait a little longer for a young collection (``YOUNG`` container
objects at most); those promoted before they became garbage wait, as before, for an older
generation's collection or the next full one. A process that turned automatic collection off
(a first threshold of 0) keeps it off.

Process-wide: installed by the first program started in a process, and Python's own setting
is back when the last one stops. (Written for CPython 3.11-3.13's three generations; where the
third threshold no longer starts full collections, setting it changes nothing.)
"""

from __future__ import annotations

import gc
import time

from loguru import logger

FULL_EVERY = 60.0  # seconds between full collections while busy
QUIET_GAP = 5.0  # seconds at least between two collections for a quiet spell
YOUNG = 20_000  # live objects more before a young collection (Python's default: 700)
_NEVER = 1 << 30  # a third threshold Python never reaches: no automatic full collection


class FullCollections:
    _installed = 0
    _saved: tuple[int, int, int] = (700, 10, 10)
    _last = 0.0  # the process's latest full collection (by any program), from install on
    _busy: set[FullCollections] = set()  # installed programs with something in flight
    _quiet_since: float | None = None  # when the last of them went quiet

    def __init__(self, every: float = FULL_EVERY, gap: float = QUIET_GAP) -> None:
        self.every, self.gap = every, gap
        self.active = False

    @property
    def last(self) -> float:
        return FullCollections._last

    @last.setter
    def last(self, when: float) -> None:
        FullCollections._last = when

    def install(self) -> None:
        if self.active:
            return
        if FullCollections._installed == 0:
            FullCollections._saved = gc.get_threshold()
            first, second, _ = FullCollections._saved
            gc.set_threshold(first if first == 0 else max(first, YOUNG), second, _NEVER)
            FullCollections._last = time.monotonic()
            FullCollections._busy.clear()
            FullCollections._quiet_since = None
        FullCollections._installed += 1
        self.active = True

    def uninstall(self) -> None:
        if not self.active:
            return
        self.active = False
        FullCollections._busy.discard(self)
        FullCollections._installed -= 1
        if FullCollections._installed == 0:
            gc.set_threshold(*FullCollections._saved)

    def tick(self, now: float, quiet: bool) -> bool:
        """Called regularly; ``quiet``: nothing in flight here. True when it collected."""
        if not self.active:
            return False
        cls = FullCollections
        if quiet:
            cls._busy.discard(self)
        else:
            cls._busy.add(self)
        if cls._busy:
            cls._quiet_since = None
        elif cls._quiet_since is None:
            cls._quiet_since = now
        since = now - self.last
        # The whole process quiet, and nobody has collected since it went quiet.
        quiet_due = cls._quiet_since is not None and self.last < cls._quiet_since \
            and since >= self.gap
        if since < self.every and not quiet_due:
            return False
        started = time.monotonic()
        found = gc.collect()
        self.last = now
        logger.debug("full garbage collection: {} unreachable object(s) in {:.3f} s", found,
                     time.monotonic() - started)
        return True
