"""How far ahead of its free slots the admin feeds each worker: pipelining. Pure: the times
are measured by the caller and passed in.

A worker that finishes a task waits a round trip (its result to the admin, the next task
back) before it can start another, unless the next one is already in its queue. So the admin
keeps ``credit`` tasks queued on each worker beyond its slots: enough to cover a round trip
at the pace the worker goes through them, ``slots x rtt / run time``, from measured figures
(as Dask's work stealing weighs measured durations against latency). For long tasks that is
one; for no-op tasks it is as many as allowed (MAX_CREDIT).

A task queued on a worker behind a long one could wait while another worker sits idle: the
admin takes such tasks back (work stealing, :meth:`TaskBoard.steals`), and only tasks that
started count when a worker is lost with them.
"""

from __future__ import annotations

import enum
import math

# A worker not welcomed sends its HELLO again, the waits doubling up to this (s): the admin
# waits that much more for one it welcomed that has not answered yet (see Membership).
HELLO_AGAIN_MAX = 5.0
# The admin's timers run this much later than due (or a --heartbeat, if shorter): the admin
# itself was held up (its process stopped, a suspended VM, its loop blocked), and the clocks
# that wait for its workers do not count the time (AdminState.held_up).
HELD_UP = 2.0
DEFAULT_RTT = 0.002  # seconds, until measured: a loopback round trip through two event loops
MIN_RTT, MAX_RTT = 0.0001, 1.0
MAX_CREDIT = 1024  # tasks queued on one worker beyond its slots, at most (adaptive)
SMOOTHING = 0.2  # weight of a new sample in the moving averages
# A worker's results: held this long (seconds) while tasks wait in its queue, so that those
# that finish meanwhile leave with them; at most this many wait (as Dask's workers batch what
# they tell the scheduler every 2 ms).
RESULT_HOLD = 0.001
RESULT_BATCH = 64


class Pace:
    """The measured round trip and each worker's task run time; the credit they call for.
    ``fixed`` (the admin's --prefetch) replaces the adaptive credit: 0 turns pipelining
    off."""

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self.rtt = DEFAULT_RTT
        self.run: dict[str, float] = {}  # worker -> moving average of its tasks' run time

    def credit(self, worker: str, slots: int) -> int:
        """Tasks to keep queued on ``worker`` beyond its ``slots``."""
        if self.fixed is not None:
            return self.fixed
        run = self.run.get(worker)
        if run is None:
            return slots  # nothing measured yet: one round of its slots ahead
        want = math.ceil(slots * self.rtt / max(run, 1e-6))
        return max(1, min(MAX_CREDIT, want))

    def ran(self, worker: str, seconds: float, count: int = 1) -> None:
        """``count`` tasks took ``seconds`` on ``worker`` on average. A figure that cannot be
        a duration (negative, infinite, NaN: the worker's own word) is not taken."""
        if not 0 <= seconds < math.inf:
            return
        old = self.run.get(worker)
        weight = 1 - (1 - SMOOTHING) ** min(count, 50)
        self.run[worker] = seconds if old is None else old + weight * (seconds - old)

    def round_trip(self, seconds: float) -> None:
        """From a task sent to a free slot: its turnaround less its run time."""
        seconds = min(MAX_RTT, max(MIN_RTT, seconds))
        self.rtt += SMOOTHING * (seconds - self.rtt)

    def forget(self, worker: str) -> None:
        self.run.pop(worker, None)


class Pulse:
    """How often the workers and the admin heartbeat each other. ``base`` (--heartbeat) up to
    ``per_second`` x base workers; beyond, in proportion to the number of workers, in whole
    steps of ``base``, so the admin takes at most about ``per_second`` heartbeats a second
    however many connect (Dask's scheduler scales its workers' heartbeat interval with their
    number the same way). A lost worker is then noticed later: ``liveness`` intervals.

    The admin tells the workers the interval on each of its heartbeats. When it shortens,
    workers still beat at the old pace until they hear the new one: the old, longer silence
    limit holds for a while."""

    def __init__(self, base: float, liveness: int, per_second: float) -> None:
        self.base, self.liveness, self.per_second = base, liveness, per_second
        self.every = base
        self._was, self._was_until = base, 0.0  # a longer interval that still applies

    def update(self, workers: int, now: float) -> bool:
        """``workers`` are connected: True when the interval changed."""
        steps = max(1, math.ceil(workers / (self.per_second * self.base)))
        every = self.base * steps
        if every == self.every:
            return False
        if every < self.every:
            self._was = max(self.every, self._was if now < self._was_until else 0.0)
            self._was_until = now + self._was * (self.liveness + 1)
        self.every = every
        return True

    def silent_limit(self, now: float) -> float:
        """A worker silent this long is lost."""
        every = max(self.every, self._was) if now < self._was_until else self.every
        return every * self.liveness


def out_of_touch(now: float, beat_sent: float, admin_seen: float, every: float, liveness: int,
                 sleeping: float) -> tuple[str | None, float]:
    """May a worker start what it has queued? Not once its heartbeats went unheard long
    enough for the admin to call it lost (its process was paused, or its event loop
    blocked), nor once the admin went silent: what is queued there may be running elsewhere
    by then. The worker holds from ``liveness - 0.5`` beats (the admin calls it lost at
    ``liveness``); a beat still due at an older, slower pace (``sleeping``: the interval its
    heartbeat loop sleeps) is not late. Returns (why not, or None; until when the answer is
    yes, when it is)."""
    limit = every * max(liveness - 0.5, 1.0)
    beat_limit = max(limit, sleeping * 1.5)
    if now - beat_sent > beat_limit:
        return (f"no heartbeat of ours went out for {now - beat_sent:.1f} s (was this process "
                f"paused, or its event loop blocked?)"), now
    if now - admin_seen > limit:
        return f"admin silent for {now - admin_seen:.1f} s", now
    return None, min(beat_sent + beat_limit, admin_seen + limit)


class Silence(enum.Enum):
    """How a client takes its admin's silence."""

    FINE = "fine"
    WATCH = "watch"  # ask again for what it waits on (a DONE may have been lost)
    LOST = "lost"  # fail what it waits on: the admin is gone


def admin_silence(now: float, heard: float, deaf: float, every: float, gone_after: float,
                  quiet: float) -> tuple[Silence, float]:
    """A client's word on its admin's silence since ``heard`` (its last word). ``deaf``: how
    much of that time this process could not hear it (paused: SIGSTOP, a suspended laptop,
    a debugger; or its event loop blocked), which does not count: the admin's words of that
    time may be waiting, unread (a client resumed after 35 s failed every future, though
    the admin was up and their results were there). Lost past ``gone_after`` (or three beats
    at the pace the admin says, ``every``) of silence heard; asked again past ``quiet`` (or
    two beats). Returns the verdict and the silence heard."""
    silent = now - heard - deaf
    if silent > max(gone_after, 3 * every):
        return Silence.LOST, silent
    if silent > max(quiet, 2 * every):
        return Silence.WATCH, silent
    return Silence.FINE, silent


def watch_due(verdict: Silence, asked: bool, now: float, watched: float, every: float) -> bool:
    """Is it time a client watches again what it waits on? Once as the admin's silence is
    worth asking about (``asked``: this silence was already; each turn of it, a restarting
    admin got a WATCH of every pending task, and answered each), and ``every`` s since the
    last watch (``watched``) anyway: a DONE the admin could not route is lost."""
    return (verdict is Silence.WATCH and not asked) or now - watched > every


class Flush(enum.Enum):
    """When a worker's news (results, starts, tasks given back) leaves."""

    NOW = "now"  # nothing else can join it
    TURN = "turn"  # at the end of this loop turn: what finishes in it joins
    HOLD = "hold"  # within RESULT_HOLD: what finishes meanwhile joins


def when_to_flush(results: int, urgent: bool, running: bool, queued: bool) -> Flush:
    """``results`` wait to be sent; ``urgent``: the answer to a RELEASE, or slots held or
    freed by a handler's thread (an idle worker, or the admin's count of free slots, waits on
    it); ``running``, ``queued``: other tasks run, or wait for a slot, here.

    A worker that streams through a queue of short tasks whose results come one at a time (a
    sync handler's: each comes back from its thread on its own) sent a frame per result or
    two, and the admin spent its time on frames, not tasks (25k sync no-op tasks/s on 4
    workers here; 37k with the hold and fewer thread wake-ups). Only then is a result held:
    with nothing queued, what it would wait for may be a long task (a no-op ``execute()``
    beside one took 1.9 ms, not 0.5, when held). A lone result leaves at once (W2's
    latency); one beside running tasks, a full batch, or what another waits on, at the end
    of the loop turn."""
    if not running and not queued:
        return Flush.NOW
    if urgent or results >= RESULT_BATCH or not queued:
        return Flush.TURN
    return Flush.HOLD


def flush_stands(held: bool, results: int, urgent: bool) -> bool:
    """With tasks queued here and a flush already due (this turn's, or ``held``: within
    RESULT_HOLD), one more result leaves it as it is: :func:`when_to_flush` then never says
    NOW, and its TURN brings forward only a held flush, when the news is ``urgent`` or a full
    batch of ``results`` waits. (Asked first, for most results, so their flush is not worked
    out anew each time; with no flush due, or nothing queued, ask when_to_flush.)"""
    return not held or (results < RESULT_BATCH and not urgent)
