"""Python's garbage collections at the program's pace instead of the allocator's: the admin's
and the workers' (installed by each while it runs).

CPython collects its oldest generation whenever the objects that survived younger
collections grow by a quarter of the heap. An admin taking a large submission grows its heap
by a million objects (a record, a task and a result per task), so under load it traversed
the whole, growing, heap again and again: measured in W1 (100,000 tasks, 4 workers), 28-34 µs
of the admin's CPU per task with Python's default, 19-22 µs with full collections left out.
A worker holding a thousand tasks queued ahead (pipelining) did the same on a smaller scale:
two full collections of 15-63 ms each in every worker during one W1 run.

So full collections run from the program's regular tick when it has nothing in flight (at
most every ``gap`` seconds: a trickle of work must not collect twice a second), or every
``every`` seconds however busy, so cyclic garbage is still freed and memory stays bounded.
They are decided process-wide: many workers (or an admin and its workers) in one process
collect once for a quiet spell, not once each.

Young collections stay automatic, but start after ``YOUNG`` more objects live rather than
Python's 700. The threshold counts allocations less deallocations, so a program whose live
objects grow by a few thousand (tasks queued ahead, results waiting for their
acknowledgement) ran a young collection every few tasks, each promoting the tasks in flight to
be traversed again: measured in W1, 60-80 ms of each worker's 0.4 s of CPU went to them, and
with ``YOUNG`` the workers' CPU went 0.40 -> 0.33 s and W1 51k -> 58k tasks/s (medians of 6
runs alternating). At most ``YOUNG`` objects (a few MB) wait for a collection before cyclic
garbage is freed.

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
    _last = time.monotonic()  # the process's latest full collection (by any instance)

    def __init__(self, every: float = FULL_EVERY, gap: float = QUIET_GAP) -> None:
        self.every, self.gap = every, gap
        self.quiet_since: float | None = None  # when this program last went quiet
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
            gc.set_threshold(max(first, YOUNG), second, _NEVER)
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
            self.quiet_since = None
        elif self.quiet_since is None:
            self.quiet_since = now
        since = now - self.last
        # Quiet, and nobody in the process has collected since this spell began.
        quiet_due = self.quiet_since is not None and self.last < self.quiet_since \
            and since >= self.gap
        if since < self.every and not quiet_due:
            return False
        started = time.monotonic()
        found = gc.collect()
        self.last = now
        logger.debug("full garbage collection: {} unreachable object(s) in {:.3f} s", found,
                     time.monotonic() - started)
        return True
