"""Counters and histograms of the admin, as plain data: the metrics endpoint and ceylon-status
read them; on the hot path they cost an integer increment."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

RECENT_FAILURES = 20
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)


class Histogram:
    """Cumulative-bucket histogram kept as plain ints (observed once per result)."""

    def __init__(self, bounds: Sequence[float] = SECONDS_BUCKETS) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """A value that is no duration (NaN, infinite, negative: a worker's word) counts as
        0: it made the total NaN for good."""
        counts, bounds, where = self.counts, self.bounds, bisect.bisect_left
        total = 0.0
        for value in values:
            if not 0.0 <= value < math.inf:
                value = 0.0
            counts[where(bounds, value)] += 1
            total += value
        self.total += total

    def buckets(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class AdminStats:
    assignments: int = 0  # task assignments sent
    results: int = 0  # results recorded
    reconnects: int = 0  # workers that registered again under a name seen before
    lost: int = 0  # workers declared lost
    bad_frames: int = 0  # frames dropped as malformed or hostile
    dropped_hellos: int = 0  # registrations dropped by the rate limit
    broadcasts_lost: int = 0  # broadcasts an agent missed that the ring no longer held
    broadcasts_unconfirmed: int = 0  # broadcasts an agent left without confirming
    failed: int = 0  # results that were failures
    stolen: int = 0  # queued tasks given back by a worker for an idle one (work stealing)
    run_seconds: Histogram = field(default_factory=Histogram)  # a task's time on its worker
    wait_seconds: Histogram = field(default_factory=Histogram)  # ready to assigned
    # the latest failed results: (task id, worker, last line of its error, when, in `now`)
    recent_failures: deque[tuple[Any, str, str, float]] = field(
        default_factory=lambda: deque(maxlen=RECENT_FAILURES))


class Trend:
    """Throughput and mean task time over the last minutes, one point per ``every`` seconds,
    drawn from the running totals the caller samples (``at`` is the caller's clock)."""

    def __init__(self, every: float = 1.0, keep: int = 300) -> None:
        self.every = every
        self.points: deque[tuple[float, float, float]] = deque(maxlen=keep)  # (at, /s, ms)
        self._last: tuple[float, int, float] | None = None

    def sample(self, at: float, results: int, run_seconds: float) -> None:
        last = self._last
        if last is not None:
            dt = at - last[0]
            if dt < self.every:
                return
            done = results - last[1]
            ms = 1000 * (run_seconds - last[2]) / done if done > 0 else 0.0
            self.points.append((round(at, 3), round(done / dt, 3), round(ms, 3)))
        self._last = (at, results, run_seconds)

    def since(self, at: float) -> list[tuple[float, float, float]]:
        """The points after ``at`` (all of them for ``at`` = 0), oldest first."""
        return [p for p in self.points if p[0] > at]
