"""The programs' event loop: asyncio's own, with timers that fire close to their time.

asyncio waits in ``epoll_wait``, whose timeout is in whole milliseconds, rounded up: a timer
fires up to a millisecond late whenever the loop's wait starts with a fraction of a
millisecond to go. Among busy workers on the benchmark machine a task's
``asyncio.sleep(0.01)`` took 10.7-10.8 ms (median) instead of 10.2, and every round of short
tasks paid it again. :class:`PreciseSelector` waits on the epoll descriptor itself with
``select()``, whose timeout is in microseconds, then collects the events with a zero-timeout
``epoll_wait``: the same events as epoll alone, for one more system call per wait, and a timer
fires within the kernel's timer slack instead of up to 1 ms late. That slack, 50 µs a wake-up
by default, the loop's thread sets to 1 µs (Linux's ``prctl``): a 10 ms sleep among the
benchmark's busy workers took 10.12-10.17 ms with the default, 10.07-10.09 with it.

What is left of a timer's lateness is the wake-up itself: a thread asleep in ``select()`` on
this machine (a VM) runs 50-100 µs after its timer expired (a 10 ms ``select()`` took 10.06 ms
median, 10.09 at p90). So the last :data:`SPIN` of a wait before a timer is spent polling
epoll instead of asleep, and the timer fires within a few µs of its time. Polling burns
CPU, so a :class:`SpinBudget` holds it to :data:`SPIN_SHARE` of the loop's time (1 % of a
core at most, a few hundredths of a percent for a loop that wakes for a timer a few times a
second); past it, waits sleep to their end as before.

``select()`` only takes descriptors below ``FD_SETSIZE``; a loop made after the process opened
that many files keeps plain epoll (its timers are then late as before, never wrong). Without
epoll (not Linux), or when the program installed an event loop policy of its own (uvloop, say),
the loop is the policy's, as with ``asyncio.run``.

``ceylon-admin``, ``ceylon-worker`` and the blocking ``Admin.run_admin`` run on it; a program
of your own can too: ``ceylon_net.edge.loop.run(main())`` in place of ``asyncio.run(main())``.

Stopping: a task cancelled on the way out gets :data:`STOP_GRACE` to end (:func:`stop_tasks`).
One that does not (a user's handler that catches ``CancelledError`` and goes on) is left
behind, said, where ``asyncio.run`` would wait for it for ever and the process never exit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import select
import selectors
import signal
import threading
import time
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from loguru import logger

STOP_GRACE = 1.0  # s a cancelled task has to end before it is left behind (a few ms suffice)
AT_ONCE = 0.05  # ... once a second Ctrl-C said not to wait
# The signals that stop a program: SIGHUP too, a closed terminal or SSH session stops it as
# Ctrl-C does (drained, the workers told), not on the spot.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FD_SETSIZE = 1024  # select()'s limit on Linux (glibc)
EPOLL = hasattr(selectors, "EpollSelector")  # not on macOS, BSD, Windows

T = TypeVar("T")


SPIN = 200e-6  # s: the end of a wait spent polling (a wake-up takes 50-100 µs here)
SPIN_SHARE = 0.01  # of the loop's time, at most spent so
SPIN_BANK = 10 * SPIN  # s of polling a quiet loop has in hand


class SpinBudget:
    """How much of a wait may be spent polling rather than asleep: :data:`SPIN` when the
    polling done so far is within ``share`` of the time, banked up to ``bank`` (no clock of
    its own: ``now`` is an argument)."""

    def __init__(self, now: float, share: float = SPIN_SHARE, bank: float = SPIN_BANK) -> None:
        self.share, self.bank = share, bank
        self.credit, self.at = bank, now

    def allow(self, timeout: float, now: float) -> float:
        """Seconds at the end of a wait of ``timeout`` to poll (0: sleep it all)."""
        self.credit = min(self.bank, self.credit + (now - self.at) * self.share)
        self.at = now
        return min(timeout, SPIN) if self.credit >= SPIN else 0.0

    def spent(self, seconds: float) -> None:
        self.credit -= seconds


if EPOLL:

    class PreciseSelector(selectors.EpollSelector):
        """epoll, with the wait's timeout passed on to the microsecond and its end polled
        (see the module's note)."""

        def __init__(self) -> None:
            super().__init__()
            self.precise = self.fileno() < FD_SETSIZE
            self.budget = SpinBudget(time.monotonic())

        def select(self, timeout: float | None = None
                   ) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is not None and timeout > 0 and self.precise:
                start = time.monotonic()
                spin = self.budget.allow(timeout, start)
                if spin < timeout:
                    ready, _, _ = select.select([self.fileno()], [], [], timeout - spin)
                    if ready or not spin:
                        return super().select(0) if ready else []
                return self._poll_until(start + timeout)
            return super().select(timeout)

        def _poll_until(self, deadline: float) -> list[tuple[selectors.SelectorKey, int]]:
            """epoll without waiting, again and again, until an event or ``deadline``."""
            began = now = time.monotonic()
            try:
                while now < deadline:
                    if ready := super().select(0):
                        return ready
                    now = time.monotonic()
                return []
            finally:
                self.budget.spent(time.monotonic() - began)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio event loop whose timers fire close to their time (see the module's note);
    the policy's own loop without epoll or under a policy the program installed."""
    if not EPOLL or type(asyncio.get_event_loop_policy()) is not asyncio.DefaultEventLoopPolicy:
        return asyncio.new_event_loop()
    _tight_timer_slack()
    return asyncio.SelectorEventLoop(PreciseSelector())


PR_SET_TIMERSLACK = 29  # prctl(2)
TIMER_SLACK_NS = 1_000


def _tight_timer_slack() -> None:
    """Ask the kernel to wake this thread within 1 µs of its timers instead of its default
    50 µs slack (Linux): a loop's wait then ends closer to the timer it waits for."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


def run(main: Coroutine[Any, Any, T], contain: str | None = None) -> T:
    """``asyncio.run(main)`` on :func:`new_event_loop`, except that a task still running at
    the end that ignores its cancellation is left behind (said) instead of waited for ever.
    As asyncio.run does, a first Ctrl-C (SIGINT) cancels ``main`` and ends in
    KeyboardInterrupt (so ``except KeyboardInterrupt`` around it runs, and a handler running
    at that moment is not the one that gets it); a second one interrupts at once.

    ``contain`` (a program hosting other people's code, ceylon-worker: its name): a
    SystemExit or KeyboardInterrupt raised in some other task (one a handler started) would
    end the program on the spot, silently, as asyncio lets it out of the loop; it is said,
    with its traceback, and the program goes on."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(main)
    interrupted = _on_sigint(loop, task)
    try:
        return _until_complete(loop, task, contain, interrupted)
    except asyncio.CancelledError:
        if interrupted and task.uncancel() == 0:
            raise KeyboardInterrupt from None
        raise
    finally:
        if interrupted is not None and signal.getsignal(signal.SIGINT) is interrupted.handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # (not one main set)
        try:
            left = asyncio.all_tasks(loop) - _LEFT_BEHIND  # (those said already)
            again = interrupted is not None and len(interrupted) > 1  # (a second Ctrl-C: now)
            if left:
                loop.run_until_complete(stop_tasks(left, "task(s) still running at exit",
                                                   AT_ONCE if again else STOP_GRACE))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(_executor_down(loop, AT_ONCE if again else STOP_GRACE))
        finally:
            asyncio.set_event_loop(None)
            loop.close()


_EXECUTOR_LEFT: list[asyncio.AbstractEventLoop] = []  # loops whose to_thread threads hung


def executor_threads_left() -> bool:
    """A loop :func:`run` ran ended with a thread of its default executor (asyncio.to_thread,
    run_in_executor(None, ...)) still running, which Python waits for at exit, for ever if
    it hangs: a program that has said goodbye may exit without it (os._exit)."""
    return bool(_EXECUTOR_LEFT)


async def _executor_down(loop: asyncio.AbstractEventLoop, grace: float) -> None:
    """The default executor shut down, waiting ``grace`` for its threads (Python 3.11's
    shutdown_default_executor waits for ever: one hung to_thread call and the program never
    ended); one still running is left behind, said."""
    down = asyncio.ensure_future(loop.shutdown_default_executor())
    try:
        await asyncio.wait_for(asyncio.shield(down), grace)
    except TimeoutError:
        _leave_behind(down)
        _EXECUTOR_LEFT.append(loop)
        logger.warning("a thread of asyncio.to_thread (or run_in_executor) still runs after "
                       "{:g} s: not waited for (a thread cannot be stopped)", grace)


def _until_complete(loop: asyncio.AbstractEventLoop, task: asyncio.Task[T],
                    contain: str | None, interrupted: _Interrupted | None) -> T:
    while True:
        try:
            return loop.run_until_complete(task)
        except (SystemExit, KeyboardInterrupt) as exc:
            if contain is None or task.done() or interrupted:  # (a Ctrl-C's: it ends)
                raise
            logger.opt(exception=exc).error(
                "{}: a task of its own that is not a handler's call (one a handler started?) "
                "raised {!r}: ignored, it goes on (sys.exit() and KeyboardInterrupt end a "
                "handler's own call as a failed result; in a task of its own they would end "
                "the program on the spot)", contain, exc)


class _Interrupted(list):
    """The SIGINTs seen while :func:`run` runs (truthy once there was one), and the handler
    that counts them."""

    handler: Any = None


def _on_sigint(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]
               ) -> _Interrupted | None:
    """Where SIGINT is Python's default (the main thread, nobody else's handler): the first
    cancels ``task``, a second raises KeyboardInterrupt where the code is. None elsewhere."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None
    seen = _Interrupted()

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        if len(seen) == 1 and not task.done():
            task.cancel()
            loop.call_soon_threadsafe(lambda: None)  # (wake the loop)
            return
        raise KeyboardInterrupt

    seen.handler = handler
    signal.signal(signal.SIGINT, handler)
    return seen


class Stopped(Exception):
    """SIGTERM or SIGHUP ended what :func:`until_stopped` awaited."""

    def __init__(self, sig: int) -> None:
        super().__init__(f"stopped by {signal.Signals(sig).name}")
        self.signal = sig


async def until_stopped(awaitable: Awaitable[T]) -> T:
    """``awaitable``, ended by SIGTERM or SIGHUP (unless ignored: nohup) as Ctrl-C ends it:
    this task is cancelled (what it awaits cleans up on the way out), then :class:`Stopped`
    says which signal, so the program says what became of its work instead of dying on the
    spot. A second signal does not cut the first one's stopping short. For a program that
    ends after it: from its end on, the signals are :func:`wind_down`'s."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    caught: list[int] = []

    def stop(sig: int) -> None:
        if not caught:
            caught.append(sig)
            task.cancel()

    ours = [sig for sig in (signal.SIGTERM, signal.SIGHUP)
            if signal.getsignal(sig) is not signal.SIG_IGN]
    for sig in ours:
        loop.add_signal_handler(sig, stop, sig)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # (Ctrl-C: asyncio.run's, then)
        ours.append(signal.SIGINT)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if caught and task.uncancel() == 0:
            raise Stopped(caught[0]) from None
        raise
    finally:
        wind_down(ours, stopping=bool(caught) or task.cancelling() > 0)


def wind_down(signals: Iterable[int], stopping: bool = False) -> None:
    """The program is stopping: from here to its exit, SIGINT, SIGTERM or SIGHUP (those of
    ``signals``) stop nothing more. The first is ignored, so what it still has to say (a run's
    report, printed once the loop has closed) comes out whole and its exit code stands; a
    second one, or the first when a signal began this stop (``stopping``), ends it at once,
    exit 128 + the signal. Installed process-wide, from the event loop's thread, in place of
    the loop's own handlers, which would give way to Python's defaults as the loop closes (a
    signal then killed the program before its report): for programs that end after it, not
    for libraries. Once Python's exit has joined its threads (:mod:`atexit`), they are ignored:
    its last steps put the default handlers back. (Nothing is logged from the handler: it may
    run in the middle of a log call.)"""
    late: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if late or stopping:
            os._exit(128 + signum)  # (asked twice: now, as a second Ctrl-C always does)
        late.append(signum)

    signals = list(signals)
    for sig in signals:
        signal.signal(sig, handler)  # (from one Python handler to another: no moment without)
    _unregister(signals)
    global _IGNORED_AT_EXIT
    if not _IGNORED_AT_EXIT:
        _IGNORED_AT_EXIT = True
        atexit.register(lambda: [signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS])


_IGNORED_AT_EXIT = False


def _unregister(signals: list[int]) -> None:
    """The running loop forgets its handlers of ``signals`` (taken over already) without
    putting Python's defaults back meanwhile, as ``remove_signal_handler`` would; and stops
    waking on signals once it has none left (its wake-up descriptor goes with it)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    registered = getattr(loop, "_signal_handlers", None)  # (asyncio's Unix loop)
    if not isinstance(registered, dict):
        return
    for sig in signals:
        registered.pop(sig, None)
    if not registered:
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], what: str,
                     grace: float = STOP_GRACE) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them to end, ``grace`` s at most: those that did not (code
    that catches CancelledError and carries on) are left behind, named in a warning as
    ``what``, and returned. Errors they ended with are retrieved, as ``gather(...,
    return_exceptions=True)`` would."""
    tasks = {t for t in tasks if not t.done()}
    for t in tasks:
        t.cancel()
    if not tasks:
        return set()
    done, pending = await asyncio.wait(tasks, timeout=grace)
    for t in done:
        if not t.cancelled():
            t.exception()
    if pending:
        logger.warning("{} {} did not stop within {:g} s of being cancelled (code that "
                       "catches CancelledError and carries on): left behind: {}", len(pending),
                       what, grace, ", ".join(sorted(t.get_name() for t in pending)))
    for t in pending:  # (said: not again as destroyed, when the process exits with them)
        _leave_behind(t)
    return pending


def _leave_behind(task: asyncio.Future[Any]) -> None:
    """``task`` is left running, said already: not stopped or said again (as destroyed at
    exit either), nor the tasks it awaits (a handler's own, see handlers._own_task; those of
    a gather it awaits)."""
    todo: list[Any] = [task]
    while todo:
        fut = todo.pop()
        if isinstance(fut, asyncio.Task):
            if fut in _LEFT_BEHIND:
                continue
            fut._log_destroy_pending = False  # type: ignore[attr-defined]  # (as run_until_complete)
            _LEFT_BEHIND.add(fut)
            todo.append(getattr(fut, "_fut_waiter", None))
        elif isinstance(fut, asyncio.Future):
            todo.extend(getattr(fut, "_children", ()))  # (asyncio.gather's)


# Tasks left behind, kept referenced while the program runs (the loop's own set of them is
# weak): said already, not to be stopped again.
_LEFT_BEHIND: set[asyncio.Task[Any]] = set()
