"""A worker's task runner: its queue, the tasks running now, time limits, cancellation, and
results kept until the admin acknowledges them. No sockets: the worker moves the messages."""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Container, Iterable
from typing import Any

from loguru import logger

from ..core.membership import clip
from ..core.tasks import Task, TaskAssignment, TaskId, TaskResult
from ..errors import Crashed
from . import handlers
from .agent import supervised
from .handlers import THREADS_LEFT
from .loop import STOP_GRACE, stop_tasks

ResultKey = tuple[Any, int]  # (task id, attempt)
MAX_ERROR = 64 * 1024  # characters of a failed task's traceback sent to the admin
YIELD_EVERY = 32  # tasks run back to back before the runners give the event loop a turn
# Queued tasks of quick sync handlers (handlers.QUICK) a slot runs one after another in one
# thread call, at most; and how long it lets them wait there behind one that turns out slow
# before it takes back those not started, for the other slots.
BATCH_MAX = 16
BATCH_WAIT = 0.02  # seconds


class _TimedOut(Exception):
    """The task's time limit ran out (told apart from a TimeoutError the task raised); its
    text, if any, says more."""


ENDED_KEPT = 16  # tasks of a handler that ended lately, kept (see TaskRunner.ended)


class _Fifo(asyncio.Queue):  # type: ignore[type-arg]
    """The worker's queue of tasks: by priority, higher first, then first in first out (as
    the admin's queue), where a task taken out and not started can go back to the front
    (asyncio.Queue's own way to order items: ``_put``). A task of a higher priority than
    those queued comes before them: the admin sends ahead what it has, and a better task
    that comes after must not wait for them."""

    _front = False

    def put_front(self, item: TaskAssignment) -> None:
        self._front = True
        try:
            self.put_nowait(item)
        finally:
            self._front = False

    def _put(self, item: TaskAssignment) -> None:
        queue: deque[TaskAssignment] = self._queue  # type: ignore[attr-defined]
        priority = item.task.priority
        # Where it goes in the queue's order (higher priority first): at the front before
        # its equals (back where it was), else after them. The usual case is an end: O(1).
        if self._front:
            at = 0 if not queue or queue[0].task.priority <= priority else \
                bisect.bisect_left(queue, -priority, key=_rank)
        else:
            at = len(queue) if not queue or queue[-1].task.priority >= priority else \
                bisect.bisect_right(queue, -priority, key=_rank)
        queue.insert(at, item)


def _rank(a: TaskAssignment) -> int:
    """A queued task's place in the worker's queue order: higher priority first."""
    return -a.task.priority


class TaskRunner:
    """At most ``capacity`` tasks run at once, pulled from ``queue`` in the order they came
    (the admin keeps a few more queued here than run at once, so the next one starts without
    waiting for it; tasks batched behind a call that turns out slow wait up to BATCH_WAIT
    before they go back to the front, and a free slot may start later ones meanwhile).
    Which queued tasks started, and which were given back on a RELEASE, is told to the admin
    with the next results (:meth:`take_news`)."""

    _said_misnamed = False  # (see _checked)

    # Asked before a queued task starts: the worker says no when it is out of touch with its
    # admin (which may have given what is queued here to other workers by now). The runner
    # then holds, starting nothing queued, until resume().
    may_start: Callable[[], bool] = staticmethod(lambda: True)
    # (monotonic) Until when may_start() need not be asked (it says so; inf: never, as it
    # says yes); and until when a batch's thread may start a call.
    touch_until = math.inf
    _held: asyncio.Event | None = None  # set on resume()

    def __init__(self, name: str, capacity: int,
                 run_task: Callable[[Task], Awaitable[TaskResult]],
                 on_result: Callable[[], None],
                 unsendable: Callable[[TaskResult], str | None] | None = None,
                 batches: bool = False) -> None:
        self.name = name
        self.capacity = capacity
        self.queue: _Fifo = _Fifo()
        self.active: dict[TaskId, TaskAssignment] = {}
        # The latest of a handler to end, (handler, task, when): see Worker._on_the_loop
        self.ended: deque[tuple[str, TaskId, float]] = deque(maxlen=ENDED_KEPT)
        self.runs = self.peak = 0  # (peak: the most tasks that ran here at once)
        self.unsent: list[TaskResult] = []
        self.starts: list[ResultKey] = []  # started since the last report
        self.released: list[ResultKey] = []  # given back since the last report
        self.unacked: dict[ResultKey, TaskResult] = {}
        self._sent_at: dict[ResultKey, float] = {}  # when each unacknowledged result left
        self._run_task, self._on_result = run_task, on_result
        self._unsendable = unsendable  # why a result could not reach the admin, if it could not
        self._queued: dict[TaskId, TaskAssignment] = {}
        # Of those queued, the ones in a batch on its way to a thread (they count as queued
        # until it starts them: a cancel or RELEASE takes one back as long as it has not)
        self._claimed: dict[TaskId, handlers.Claim] = {}
        self.batches = batches  # run_task just calls handlers: quick ones may run in batches
        self._batches = 0  # slots running a batch
        self._runner_of: dict[TaskId, asyncio.Task] = {}
        self._cancel_reasons: dict[TaskId, str] = {}  # running tasks asked to stop: why
        self._newest: dict[TaskId, int] = {}  # attempt a running task now answers for
        # Given to us again while its run here was being stopped: runs once that one ended.
        self._after: dict[TaskId, TaskAssignment] = {}
        self._runners: list[asyncio.Task] = []
        self.draining = False  # start nothing more: what is queued or comes is given back
        # Slots held by a handler's thread that runs on after its task ended (it timed out,
        # or was cancelled), or by an async handler that would not stop (_orphans: its runner
        # -> its run): the admin hears how many, and sends that many fewer.
        self.stuck = self._stuck_said = 0
        self._orphans: dict[asyncio.Task, TaskAssignment] = {}
        self._late = False  # a RELEASE came after the task started: said as urgently
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self, on_crash: Callable[[Crashed], None]) -> None:
        """Start a runner per slot; ``on_crash`` hears of one that dies of a bug."""
        self._runners = [supervised(self._loop(), f"{self.name}'s runner {i}", on_crash)
                         for i in range(self.capacity)]

    async def stop(self) -> None:
        """Stop the runners, and the tasks they run: a handler that will not stop (it
        catches CancelledError) is left behind after STOP_GRACE, said, not waited for."""
        for tid, runner in [*self._runner_of.items(),
                            *((a.task.id, r) for r, a in self._orphans.items())]:
            runner.set_name(f"task {tid!r}")  # named as the user knows it, should it stay
        await stop_tasks(self._runners, f"task handler(s) on {self.name}")

    # ---- what the admin says
    def accept_many(self, assignments: Iterable[TaskAssignment]) -> None:
        unsent = self._unsent_keys() if self.unsent else ()  # (once a frame)
        for a in assignments:
            self.accept(a, unsent)

    def accept(self, a: TaskAssignment, unsent: Container[ResultKey] | None = None) -> None:
        """Queue an assignment to run, unless this worker holds it or ran it already (its
        result unsent, ``unsent`` if given, or unacknowledged: given again, it ran twice)."""
        tid = a.task.id
        if tid in self._cancel_reasons:
            # Its run here is being stopped (the admin cancelled the copy we held, as when we
            # came back from a partition or it is another admin process, and gave the task
            # to us again): a run of its own once that one has ended (or was answered, its
            # handler running on: see _unheeded).
            waiting = self._after.get(tid)
            if waiting is None or waiting.attempt < a.attempt:
                self._after[tid] = a
                self._idle.clear()
            return
        held = self.active.get(tid) or self._queued.get(tid)
        key = (tid, a.attempt)
        if (held is not None and held.attempt >= a.attempt) or key in self.unacked \
                or (self.unsent and key in (self._unsent_keys() if unsent is None else unsent)):
            return  # a duplicate (or older) delivery of something we hold or answered
        if tid in self.active or not self._unclaim(tid):
            # The admin gave it to us again (it thought we lost it) while we still run it:
            # the run in progress answers for the newest attempt.
            self._newest[tid] = a.attempt
            return
        if self.draining:  # sent before the admin heard we drain: straight back
            self._give_back(tid, a.attempt)
            return
        self._queued[tid] = a  # a queued older attempt is skipped by its runner
        self._idle.clear()
        self.queue.put_nowait(a)

    def unreadable(self, bad: list[tuple[TaskId, int, str]]) -> None:
        """Assignments this worker could not read (a field of a type it does not take), each
        as (task, attempt, why): answered as failed, saying why; unless it holds that attempt
        or a newer one already, to run or to answer for, or answered it (a copy it read, or
        this one sent again). An older attempt held here to run is not run after; a
        draining worker gives them back. Dropped, the admin gave them again and again, for ever."""
        answered = self._unsent_keys() | self.unacked.keys()  # (once: a review's 8,000 took 8 s)
        for task_id, attempt, why in bad:
            if (task_id, attempt) in answered or self._holds(task_id) >= attempt:
                continue
            answered.add((task_id, attempt))
            if self.draining:  # (as a readable one: another worker may take it)
                self._give_back(task_id, attempt)
                continue
            self._drop_older(task_id)
            self._report(TaskResult(task_id, self.name, False,
                                    error=f"the worker could not read its assignment: {why}",
                                    attempt=attempt))

    def _drop_older(self, task_id: TaskId) -> None:
        """An older attempt of the task, queued here or to run once a stopped one ends, is
        not to run: the admin waits for it no more (reviews)."""
        if task_id in self._queued and self._unclaim(task_id):
            del self._queued[task_id]
        self._after.pop(task_id, None)
        self._check_idle()

    def _holds(self, task_id: TaskId) -> int:
        """The newest attempt of the task this worker holds (queued, running, to answer for
        by a run under way, or to run once a stopped one ends); 0: none."""
        held = self.active.get(task_id) or self._queued.get(task_id)
        after = self._after.get(task_id)
        return max(0 if held is None else self._newest.get(task_id, held.attempt),
                   0 if after is None else after.attempt)

    def cancel(self, task_id: TaskId, attempt: int, reason: str) -> bool:
        """Stop a task (queued or running); it is reported as a cancelled result. False
        when there was nothing to stop (it ended, or is not here)."""
        queued = self._queued.get(task_id)
        if queued is not None and queued.attempt == attempt:
            if not self._unclaim(task_id):  # a batch's thread started it: said as stopped
                self._cancel_reasons.setdefault(task_id, reason)
                return True
            del self._queued[task_id]  # its runner skips it
        elif (after := self._after.get(task_id)) is not None and after.attempt == attempt:
            del self._after[task_id]
        else:
            if not self._runs(task_id, attempt) or task_id in self._cancel_reasons:
                return False  # (asked twice, it is cancelled once: a second cancel() of the
                # runner would read as the runner itself being stopped)
            self._cancel_reasons[task_id] = reason
            runner = self._runner_of.get(task_id)
            if runner is not None:  # (else a batch's thread runs it: said as it answers)
                runner.cancel()  # its runner reports it and goes on
                asyncio.get_running_loop().call_later(
                    STOP_GRACE, self._unheeded, self.active[task_id], None)
            return True
        self._report(self._cancelled(task_id, attempt, reason))
        self._check_idle()
        return True

    def _cancelled(self, task_id: TaskId, attempt: int, reason: str | None,
                   seconds: float = 0.0) -> TaskResult:
        """The answer for a task stopped (or not started) because it was cancelled."""
        return TaskResult(task_id, self.name, False, seconds, f"cancelled: {reason}", attempt,
                          cancelled=True)

    def _runs(self, task_id: TaskId, attempt: int) -> bool:
        """Is this attempt running here (its own run, or one it was given again during)?
        A batch's thread may run it, started (its claim taken) but not yet heard of."""
        running = self.active.get(task_id)
        if running is None:
            claim = self._claimed.get(task_id)
            if claim is None or claim.todo:
                return False
            running = self._queued[task_id]
        return running.attempt <= attempt <= self._newest.get(task_id, running.attempt)

    def release_many(self, pairs: Iterable[tuple[TaskId, int]]) -> None:
        """A RELEASE: each task given back if it may be (see :meth:`release`)."""
        unsent = self._unsent_keys()  # (once: it may be long, after registering again)
        for task_id, attempt in pairs:
            self.release(task_id, attempt, unsent)

    def _unsent_keys(self) -> set[ResultKey]:
        return {(r.task_id, r.attempt) for r in self.unsent}

    def release(self, task_id: TaskId, attempt: int,
                unsent: Container[ResultKey] | None = None) -> bool:
        """Give a task back if it is still queued (another worker will run it); a task that
        started runs on. One never got here is given back too: the admin asks after an
        assignment it did not hear reached us, and this answer comes after it on the
        connection, so it cannot come any more (not one that ended here: its result is on
        its way). True when given back."""
        queued = self._queued.get(task_id)
        if queued is not None and queued.attempt == attempt:
            if not self._unclaim(task_id):
                self._too_late(task_id, attempt)
                return False
            del self._queued[task_id]  # its runner skips it
        elif (after := self._after.get(task_id)) is not None and after.attempt == attempt:
            del self._after[task_id]
        elif self._runs(task_id, attempt):
            self._too_late(task_id, attempt)
            return False
        elif task_id in self.active or task_id in self._queued or task_id in self._after \
                or (task_id, attempt) in self.unacked \
                or (task_id, attempt) in (self._unsent_keys() if unsent is None else unsent):
            return False  # (another attempt of it is here, or this one ended: its result is
            # on its way, or about to be, sent with the next flush)
        self._check_idle()
        self._give_back(task_id, attempt)
        return True

    def _too_late(self, task_id: TaskId, attempt: int) -> None:
        """A RELEASE of a task that started: say it started, now (the admin's idle worker
        waits on that)."""
        if (task_id, attempt) not in self.starts:
            self.starts.append((task_id, attempt))
        self._late = True
        self._on_result()

    def _unclaim(self, task_id: TaskId) -> bool:
        """Take the task back from the batch it is in, if any, unless the batch's thread
        started it: True when it is not in one (now)."""
        claim = self._claimed.get(task_id)
        if claim is None:
            return True
        if claim.take() is None:
            return False
        del self._claimed[task_id]
        return True

    def _give_back(self, task_id: TaskId, attempt: int) -> None:
        """Not started here: said with the next results, for the admin to run elsewhere."""
        self.released.append((task_id, attempt))
        self._on_result()

    def acknowledge(self, keys: list[list[Any]]) -> None:
        for task_id, attempt in keys:
            self.unacked.pop((task_id, attempt), None)
            self._sent_at.pop((task_id, attempt), None)

    # ---- what the worker tells the admin
    def take_unsent(self) -> list[TaskResult]:
        """Results to send now; they stay in ``unacked`` until acknowledged."""
        batch, self.unsent = self.unsent, []
        now = time.monotonic()
        for r in batch:
            key = (r.task_id, r.attempt)
            self.unacked[key] = r
            self._sent_at[key] = now
        return batch

    def resend(self, keys: list[ResultKey]) -> None:
        """Send these unacknowledged results again (with the next ones)."""
        again = [r for k in keys if (r := self.unacked.pop(k, None)) is not None]
        for k in keys:
            self._sent_at.pop(k, None)
        self.unsent[:0] = again

    def resend_unacknowledged(self, sent_before: float) -> int:
        """Results sent before ``sent_before`` (monotonic) and still not acknowledged: the
        RESULT or its ACK was lost on the way (a connection reset), and the admin would wait
        for it for ever. Sent again with the next ones (the admin acknowledges a duplicate
        without counting it); returns how many."""
        old = [k for k, at in self._sent_at.items() if at < sent_before]
        self.resend(old)
        return len(old)

    @property
    def news(self) -> bool:
        """Something to tell the admin: results, starts, tasks given back."""
        return bool(self.unsent or self.starts or self.released
                    or self.stuck != self._stuck_said)

    @property
    def urgent(self) -> bool:
        """News another waits on: tasks given back, or not (they started: a RELEASE came too
        late), for an idle worker; slots held or freed by a handler's thread (the admin sends
        one task fewer, or more)."""
        return bool(self.released) or self._late or self.stuck != self._stuck_said

    def take_news(self) -> tuple[list[list[Any]], list[list[Any]], int]:
        """(started, released, stuck) to report now, as [task id, attempt]; a start whose
        result goes out with it is left out (the result says more); ``stuck`` is -1 when it
        has not changed since it was last said."""
        starts, released = self.starts, self.released
        self.starts, self.released, self._late = [], [], False
        if starts and self.unsent:
            done = {(r.task_id, r.attempt) for r in self.unsent}
            starts = [k for k in starts if k not in done]
        stuck = -1 if self.stuck == self._stuck_said else self.stuck
        self._stuck_said = self.stuck
        return [[t, a] for t, a in starts], [[t, a] for t, a in released], stuck

    @property
    def held(self) -> int:
        """How many tasks are queued or running here."""
        return len(self._queued) + len(self.active) + \
            sum(1 for t in self._after if t not in self.active)  # (_after: mostly empty)

    def holding(self) -> list[list[Any]]:
        """[task id, attempt] of every task queued or running here."""
        return [[a.task.id, self._newest.get(a.task.id, a.attempt)]
                for a in [*self._queued.values(), *self.active.values()]
                if a.task.id not in self._after] \
            + [[t, a.attempt] for t, a in self._after.items()]

    def accounted(self) -> list[list[Any]]:
        """What a heartbeat tells the admin: held tasks and unacknowledged results."""
        return [*self.holding(), *([t, att] for t, att in self.unacked),
                *([r.task_id, r.attempt] for r in self.unsent)]

    def undelivered(self) -> list[TaskResult]:
        """Every result the admin has not acknowledged (sent or not)."""
        return [*self.unacked.values(), *self.unsent]

    def give_back_queued(self) -> int:
        """Draining: every task queued here and not started goes back to the admin (said
        with the next results, as for a RELEASE), and none is started from now on. How
        many."""
        self.draining = True
        return self.release_queued()

    def release_queued(self) -> int:
        """Every task queued here and not started goes back to the admin, as on a RELEASE
        (said with the next results). How many."""
        queued = [(tid, a.attempt) for tid, a in self._queued.items()]
        queued += [(tid, a.attempt) for tid, a in self._after.items()]
        return sum(self.release(tid, attempt) for tid, attempt in queued)

    @property
    def on_hold(self) -> bool:
        """Nothing queued starts until resume()."""
        return self._held is not None

    def hold(self) -> None:
        """Start nothing queued until resume() (running tasks run on)."""
        self.touch_until = 0.0  # (asked anew from now: the next admin may wait less)
        if self._held is None:
            self._held = asyncio.Event()

    def resume(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False if that took longer than timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    # ---- running
    async def _loop(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        threads_left: list[asyncio.Future[Any]] = []
        THREADS_LEFT.set(threads_left)  # this runner's own context
        queued = self.queue._queue  # type: ignore[attr-defined]  # (see _Fifo)
        while True:
            # (what asyncio.Queue.get does when it holds one, without making a coroutine)
            a: TaskAssignment | None = queued.popleft() if queued else await self.queue.get()
            if (skip := self._skip(a)) is not False:  # (a plain call: the path of every task)
                if skip is not True:
                    await skip.wait()  # held: see _skip
                continue
            run = None
            if self.batches and queued and _batchable(a.task):
                a, run = await self._run_batch(a)
                if a is None:  # (all ran, or went back)
                    self._check_idle()
                    continue
            tid = a.task.id
            self._start(a, me)
            if run is not None and tid in self._cancel_reasons:
                me.cancel()  # (asked to stop as its batch ran it)
            try:
                result = await self._run_one(a, me, run)
            finally:
                orphaned = self._run_ended(a, me)
            if orphaned:
                continue
            if threads_left:  # said before (or with) its result: the slot is not free
                self.stuck += 1
            answered = self._answer(tid, result)
            if answered:  # (a thread left behind is no task: a drain does not wait for it)
                self._check_idle()
            if threads_left:  # (answered or not: the slot is the thread's until it ends)
                await self._keep_slot(tid, threads_left)
            if answered and self.runs % YIELD_EVERY == 0:
                # Tasks that do not await never give the loop a turn: now and then, let the
                # results out and new assignments in, so that both sides work at once.
                await asyncio.sleep(0)

    def _skip(self, a: TaskAssignment) -> bool | asyncio.Event:
        """False when ``a``, taken from the queue, starts now; True when it is not to
        (cancelled or given back while queued); when the runner holds, it goes back to the
        queue's front, and the slot waits for the event this returns (set on resume())."""
        if self._queued.get(a.task.id) is not a:
            self._check_idle()
            return True
        if self._held is None:
            if time.monotonic() <= self.touch_until or self.may_start():
                return False
            self.hold()
        self.queue.put_front(a)
        return self._held

    async def _run_one(self, a: TaskAssignment, me: asyncio.Task[None],
                       run: Callable[[], Awaitable[TaskResult]] | None = None) -> TaskResult:
        """Its result, or a cancelled one when it was asked to stop (CancelledError when
        the runner itself is being stopped). ``run``: what runs it, when not the worker's
        run_task (a batch's thread runs it already)."""
        tid = a.task.id
        try:
            result = await self._execute(a, run)
        except asyncio.CancelledError:
            orphan = self._orphans.get(me) is a  # (answered: its cancel's reason went then)
            reason = None if orphan else self._cancel_reasons.pop(tid, None)
            if (reason is None and not orphan) or me.cancelling() > 1:
                raise  # the runner itself is being stopped
            me.uncancel()  # only this task was: report it, take the next
            return self._cancelled(tid, a.attempt, reason)
        if me.cancelling() and self._orphans.get(me) is a:
            me.uncancel()  # (cancelled, answered as it ran on: see _unheeded)
        elif tid in self._cancel_reasons and me.cancelling():
            # Asked to stop, it ended anyway (the cancel came as it finished, or the handler
            # caught it and returned): it was stopped, say so.
            me.uncancel()
            return self._cancelled(tid, a.attempt, self._cancel_reasons[tid], result.seconds)
        return result

    def _start(self, a: TaskAssignment, runner: asyncio.Task[None]) -> None:
        tid = a.task.id
        del self._queued[tid]
        self.active[tid] = a
        if len(self.active) > self.peak:
            self.peak = len(self.active)
        self._runner_of[tid] = runner
        # Said with the next results (or heartbeat), not on its own: a no-op task's start and
        # result leave together, and a lone one is never held up.
        self.starts.append((tid, a.attempt))
        logger.debug("{}: running task {!r} (attempt {})", self.name, tid, a.attempt)

    def _answer(self, tid: TaskId, result: TaskResult) -> bool:
        """A run ended: report its result, unless the task was given to us again while it
        was being stopped (then that assignment runs now, and this run's answer, which would
        be taken for the new one's, is not sent). True when reported."""
        again = self._after.pop(tid, None) if self._after else None
        if again is not None:
            self._newest.pop(tid, None)
            self._queued[tid] = again
            self.queue.put_nowait(again)
            return False
        if self._newest:  # (rare: see accept)
            result.attempt = max(result.attempt, self._newest.pop(tid, 0))
        self.runs += 1
        self._report(result)
        return True

    async def _keep_slot(self, tid: TaskId, threads: list[asyncio.Future[Any]]) -> None:
        """The task ended (timed out, cancelled) while its handler's thread runs on: this
        slot takes nothing else until the thread is done, so no more run at once than the
        capacity."""
        logger.warning("{}: task {!r} ended, but its handler still runs in a thread (a "
                       "thread cannot be stopped): one slot waits for it", self.name, tid)
        self._on_result()  # (the admin hears of it: it sends one task fewer)
        try:
            await asyncio.wait(threads)
        finally:
            self.stuck -= 1
        self._on_result()
        logger.info("{}: the thread of task {!r} ended: its slot takes tasks again", self.name,
                    tid)
        for thread in threads:
            if not thread.cancelled():
                thread.exception()  # seen: its task was answered already
        threads.clear()

    def _unheeded(self, a: TaskAssignment, limit: float | None) -> None:
        """``a``'s handler was told to stop STOP_GRACE ago (``limit``: its time limit was
        up; None: it was cancelled) and runs on: an async handler that catches
        CancelledError. Its task is answered now, as one whose thread runs on would be (or,
        given to us again meanwhile, that run starts now); its slot takes nothing else until
        the handler ends (see _orphan_ended). The task is no longer held here."""
        tid = a.task.id
        if self.active.get(tid) is not a:
            return  # it ended
        runner = self._runner_of.pop(tid)
        del self.active[tid]
        self._orphans[runner] = a
        self.stuck += 1
        reason = self._cancel_reasons.pop(tid, None)
        logger.warning("{}: task {!r}: its handler did not stop when told ({}): it catches "
                       "CancelledError. The task is answered; one slot waits for the handler",
                       self.name, tid, f"timed out after {limit:g} s" if limit is not None
                       else f"cancelled: {reason}")
        if limit is not None:
            result = TaskResult(tid, self.name, False, limit, (
                f"timed out after {limit:g} s (its handler did not stop when told: it "
                f"catches CancelledError)"), a.attempt)
        else:
            result = self._cancelled(tid, a.attempt, reason)
        self._answer(tid, result)
        self._check_idle()

    def _run_ended(self, a: TaskAssignment, runner: asyncio.Task[None]) -> bool:
        """``a``'s run ended (its result, if any, not yet answered): True when it was
        answered already, its handler having run on when told to stop (see _unheeded)."""
        tid = a.task.id
        if self._orphans.get(runner) is a:
            del self._orphans[runner]
            self._orphan_ended(tid)
            return True
        del self.active[tid], self._runner_of[tid]
        self._cancel_reasons.pop(tid, None)  # a cancel that came as it finished
        if a.task.handler is not None:
            self.ended.append((a.task.handler, tid, time.monotonic()))
        return False

    def _orphan_ended(self, tid: TaskId) -> None:
        """The handler of a task answered when it would not stop ended at last."""
        self.stuck -= 1
        self._on_result()
        logger.info("{}: the handler of task {!r} ended at last: its slot takes tasks again",
                    self.name, tid)
        self._check_idle()

    @property
    def busy(self) -> bool:
        """Tasks run here now: on their own, or in a batch on its way to a thread."""
        return bool(self.active or self._claimed)

    @property
    def idle(self) -> bool:
        """Nothing queued or running here."""
        return self._idle.is_set()

    def _check_idle(self) -> None:
        if not self.active and not self._queued and not self._after:
            self._idle.set()

    async def _execute(self, a: TaskAssignment,
                       run: Callable[[], Awaitable[TaskResult]] | None = None) -> TaskResult:
        """Run the task: whatever its code raises or returns, a result comes out of it (one
        that could not reach the admin is a failure saying why)."""
        task = a.task
        started = time.perf_counter()
        try:
            result = await (run() if run is not None else self._run_task(task)
                            if task.timeout is None else self._within_limit(a))
        except _TimedOut as exc:
            result = TaskResult(task.id, self.name, False, error=f"timed out after "
                                f"{task.timeout:g} s" + (f" ({exc})" if str(exc) else ""))
        except asyncio.CancelledError as exc:
            me = asyncio.current_task()
            if me is None or me.cancelling():
                raise  # stopped by us: the runner says why
            result = self._raised(task, exc)  # its own: it awaited a future cancelled
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: its code's, not ours
            result = self._raised(task, exc)
        if not self.batches:  # (an override of run_task: what it returns is looked at)
            result = self._checked(task, result)
        result.task_id, result.worker, result.attempt = task.id, self.name, a.attempt
        took = time.perf_counter() - started
        if not result.seconds:
            result.seconds = took
        if task.timeout is not None and took > task.timeout and result.success \
                and not (self.batches and task.handler is not None
                         and handlers.is_plain(task.handler)):
            # (a plain function's thread answered within its limit as the limit saw it: a
            # loop held up meanwhile by another task's handler is not its time)
            result = TaskResult(task.id, self.name, False, took, (
                f"timed out after {task.timeout:g} s: it ran {took:.3g} s (an async handler "
                f"that blocks the event loop cannot be stopped: make it a plain function, "
                f"it then runs in a thread)"), a.attempt)
        return self._sendable(a, result)

    def _checked(self, task: Task, result: Any) -> TaskResult:
        """What an override of Worker.run_task returned, or a failure saying what is wrong
        with it (the admin would drop a bad result with those sent beside it)."""
        if type(result) is not TaskResult and not isinstance(result, TaskResult):
            return TaskResult(task.id, self.name, False, error=(
                f"run_task returned {type(result).__name__} {clip(repr(result))}, not a "
                f"TaskResult: return TaskResult(task.id, self.name, success, value=...)"))
        if (bad := _misfilled(result)) is not None:
            return TaskResult(task.id, self.name, False, error=(
                f"run_task returned a TaskResult whose {bad}: the admin could not read it"))
        if result.task_id != task.id and not self._said_misnamed:  # (a bug in the override:
            self._said_misnamed = True  # said once, it is taken as the task's own)
            logger.warning("{}: run_task returned a TaskResult of task {!r} for task {!r}: "
                           "taken as task {!r}'s (return TaskResult(task.id, self.name, ...); "
                           "said once)", self.name, result.task_id, task.id, task.id)
        return result

    def _sendable(self, a: TaskAssignment, result: TaskResult) -> TaskResult:
        """The result, or a failure saying why it could not reach the admin."""
        unsendable = self._unsendable(result) if self._unsendable is not None else None
        if unsendable is None:
            return result
        logger.warning("{}: task {!r}: {}", self.name, a.task.id, unsendable)
        return TaskResult(a.task.id, self.name, False, result.seconds, unsendable, a.attempt)

    # ---- batches of quick sync handlers' tasks
    async def _run_batch(self, first: TaskAssignment) -> tuple[
            TaskAssignment | None, Callable[[], Awaitable[TaskResult]] | None]:
        """Run ``first`` and the queued tasks after it of quick sync handlers in one
        thread call, and answer them. One still running after BATCH_WAIT (its handler turned
        out slow) is returned, with what awaits its end, to be run on as any task; the ones
        behind it go back to the queue's front for the other slots."""
        chunk = self._gather(first)
        try:
            batch = handlers.Batch([(b.task.handler, b.task.args, b.task.kwargs)
                                    for b in chunk], BATCH_WAIT, self.touch_until)
        except RuntimeError:  # no thread could be made (a pids limit): one at a time, each
            for b in reversed(chunk[1:]):  # failing as a call alone does, saying why
                self.queue.put_front(b)
            return first, None
        for b, claim in zip(chunk, batch.claims, strict=True):
            self._claimed[b.task.id] = claim
        self._batches += 1
        try:
            await asyncio.wait((batch.job.future,), timeout=BATCH_WAIT)
        except asyncio.CancelledError:  # the runner stops: none of them runs from now on
            batch.drop()
            for b, claim in zip(chunk, batch.claims, strict=True):
                if self._claimed.get(b.task.id) is claim:
                    del self._claimed[b.task.id]
            raise
        finally:
            self._batches -= 1
        self._take_back(chunk, batch.claims)  # (late, what waits behind the call running)
        running = None
        for b, claim in zip(chunk, batch.claims, strict=True):
            if self._claimed.get(b.task.id) is not claim:
                continue  # taken back: cancelled, given back, or requeued
            del self._claimed[b.task.id]
            if claim.ran:
                self._answer_claim(b, claim)
            else:  # its thread runs it now
                running = b, functools.partial(self._outcome, batch, claim, b.task)
        return running or (None, None)

    def _gather(self, first: TaskAssignment) -> list[TaskAssignment]:
        """``first`` and the queued tasks right behind it that can join its batch: its share
        of the queue among the free slots (a handler that is quick but lets go of the GIL, a
        short I/O call, still runs on as many threads as slots when few tasks wait)."""
        chunk, queue = [first], self.queue
        free = self.capacity - len(self.active) - self._batches
        most = min(BATCH_MAX, -(-(queue.qsize() + 1) // max(1, free)))
        while len(chunk) < most and queue.qsize():
            b = queue.get_nowait()
            if self._queued.get(b.task.id) is not b:
                continue  # cancelled or given back while queued
            if not _batchable(b.task):
                queue.put_front(b)
                break
            chunk.append(b)
        return chunk

    def _take_back(self, chunk: list[TaskAssignment], claims: list[handlers.Claim]) -> None:
        """The batch's tasks not started (it runs late, or its thread ended early) go back
        to the front of the queue: from now on its thread starts none."""
        back = [b for b, claim in zip(chunk, claims, strict=True)
                if self._claimed.get(b.task.id) is claim and claim.take() is not None]
        for b in reversed(back):
            del self._claimed[b.task.id]
            self.queue.put_front(b)

    def _answer_claim(self, a: TaskAssignment, claim: handlers.Claim) -> None:
        """A task its batch's thread ran: started and ended, said together."""
        tid = a.task.id
        del self._queued[tid]
        self.starts.append((tid, a.attempt))
        reason = self._cancel_reasons.pop(tid, None)
        if reason is not None:  # asked to stop as it ran: it was stopped, say so
            result = self._cancelled(tid, a.attempt, reason, claim.seconds)
        elif claim.ok:
            result = TaskResult(tid, self.name, True, claim.seconds, value=claim.value)
        else:
            result = self._raised(a.task, claim.value)
            result.seconds = claim.seconds
        result.worker, result.attempt = self.name, a.attempt
        self._answer(tid, self._sendable(a, result))

    async def _outcome(self, batch: handlers.Batch, claim: handlers.Claim,
                       task: Task) -> TaskResult:
        """The end of a batch's task that ran late (its thread is in it)."""
        await handlers.outcome(batch.job)
        if not claim.ran:
            raise RuntimeError("its batch's thread ended before it ran it")
        if claim.ok:
            return TaskResult(task.id, self.name, True, claim.seconds, value=claim.value)
        raise claim.value

    async def _within_limit(self, a: TaskAssignment) -> TaskResult:
        task = a.task
        if task.timeout is None:
            return await self._run_task(task)
        # A handler that catches the CancelledError the limit throws in it is answered anyway,
        # STOP_GRACE after the limit (counted from when the limit is seen: a loop held up past
        # both must not call a handler that never had its cancel stubborn).
        loop, watch = asyncio.get_running_loop(), []
        watch.append(loop.call_later(task.timeout, lambda: watch.append(loop.call_later(
            STOP_GRACE, self._unheeded, a, task.timeout))))
        try:
            async with asyncio.timeout(task.timeout) as limit:
                result = await self._run_task(task)
            if limit.expired():  # (its cancel was thrown in, and the handler returned anyway)
                raise _TimedOut("its handler caught the cancel, then returned")
            return result
        except TimeoutError:
            if limit.expired():
                raise _TimedOut from None
            raise  # the task's own TimeoutError: a failure with its traceback
        finally:
            for handle in watch:
                handle.cancel()

    def _raised(self, task: Task, exc: BaseException) -> TaskResult:
        try:
            said = clip(str(exc), 200)
        except Exception:  # its __str__ raised: the traceback text copes, the log line too
            said = "(its str() raised)"
        logger.warning("{}: task {!r} raised {}: {}", self.name, task.id, type(exc).__name__,
                       said)
        return TaskResult(task.id, self.name, False, error=traceback_text(exc))

    def _report(self, result: TaskResult) -> None:
        self.unsent.append(result)
        self._on_result()


def _batchable(task: Task) -> bool:
    """May run in a batch: a quick sync handler's task with no time limit."""
    return task.timeout is None and handlers.quick(task.handler)


def traceback_text(exc: BaseException) -> str:
    """A handler's exception as the failed result carries it: its traceback, at most
    MAX_ERROR characters (the start, and the exception's own line, its type first), in text
    any peer can read (a lone surrogate, as os.listdir gives for a file name that is not
    UTF-8, becomes an escape: else the result could not be sent at all)."""
    try:
        text = "".join(traceback.format_exception(exc))
        last = "".join(traceback.format_exception_only(exc)).rstrip("\n")
    except Exception:  # a traceback that cannot be formatted at all
        text = last = f"{type(exc).__qualname__} (its traceback could not be formatted)"
    text, last = (t.encode("utf-8", "backslashreplace").decode("utf-8") for t in (text, last))
    return _cut(text, last, MAX_ERROR)


def fit_error(error: str, room: int) -> str:
    """A failed result's error text in at most ``room`` bytes of UTF-8, so that the result
    fits in a message (a small --max-message-bytes): the start and the last line, as
    :func:`traceback_text` cuts; sendable (a lone surrogate becomes an escape)."""
    text = error.encode("utf-8", "backslashreplace").decode("utf-8")
    size = len(text.encode())
    if size <= room:
        return text
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    chars = len(text) * room // size
    while chars > 0:  # (characters of more than a byte: cut again, shorter)
        cut = _cut(text, last, chars)
        if len(cut.encode()) <= room:
            return cut
        chars = chars * 3 // 4
    return ""


def _cut(text: str, last: str, room: int) -> str:
    """``text`` in at most ``room`` characters: its start, a note of the cut, and ``last``
    (its last line; cut too, to half the room at most)."""
    if len(text) <= room:
        return text
    note = f"\n... ({len(text):,} characters in all: cut here) ...\n"
    room -= len(note)
    if room <= 0:
        return text[:max(room + len(note), 0)]
    if len(last) > room // 2:
        cut = f"... (cut: {len(last):,} characters)"
        last = (last[:max(room // 2 - len(cut), 0)] + cut)[:room // 2]
    return text[:room - len(last)] + note + last


def _misfilled(r: TaskResult) -> str | None:
    """A field of a TaskResult (made by an override of Worker.run_task) of a type the admin
    refuses, which would lose every result sent beside it: what is wrong, or None."""
    if type(r.success) is not bool:
        return f"success is {type(r.success).__name__} {clip(repr(r.success))}, not a bool"
    if type(r.cancelled) is not bool:
        return f"cancelled is {type(r.cancelled).__name__}, not a bool"
    if type(r.seconds) is not float:
        if type(r.seconds) is not int:
            return f"seconds is {type(r.seconds).__name__} {clip(repr(r.seconds))}, not a float"
        r.seconds = float(r.seconds)
    if r.error is not None and type(r.error) is not str:
        return f"error is {type(r.error).__name__}, not a str"
    return None
