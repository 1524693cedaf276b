"""A handler that leaves its task's cancel count raised does not cost the worker its slot.

Every task of a slot ran in that slot's one asyncio task (the runner), so what a handler did
to "its" task (asyncio.current_task()) outlived it: a cancel scope that cancels its task and
catches the CancelledError without Task.uncancel() (anyio < 4, async_timeout < 4.0.3 on
Python 3.11, or a handler's own "cancel myself") left the count raised, and the next task's
cancel, or the next handler's own CancelledError, ended the runner silently: the task never
answered, nothing queued on the slot run again. A handler's coroutine runs as a task of its
own now (handlers._own_task)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from conftest import run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.edge.worker import Worker


async def _cancels_itself_and_swallows() -> str:
    asyncio.current_task().cancel()  # (a cancel scope's deadline, as anyio 3 does it)
    with contextlib.suppress(asyncio.CancelledError):  # (the scope ends: no uncancel())
        await asyncio.sleep(0)
    return "ok"


async def _sleeps() -> str:
    await asyncio.sleep(30)
    return "slept"


async def _awaits_a_cancelled_future() -> str:
    fut = asyncio.get_running_loop().create_future()
    fut.cancel()
    return await fut  # README: "a CancelledError of the handler's own" fails its task


async def _quick() -> str:
    return "q"


NAMES = {"h5.selfcancel": _cancels_itself_and_swallows, "h5.sleeps": _sleeps,
         "h5.own_cancel": _awaits_a_cancelled_future, "h5.quick": _quick}


def _after_a_stale_cancel(second: str, cancel_it: bool) -> tuple[dict, list, list]:
    async def body():
        worker = Worker("w", "default", "127.0.0.1", 9999)
        crashes: list = []
        runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable,
                            batches=True)
        runner.start(crashes.append)
        got: list[TaskResult] = []

        def answers(n: int):
            return lambda: got.extend(runner.take_unsent()) or len(got) >= n

        runner.accept(TaskAssignment(Task("T1", "t", 1, handler="h5.selfcancel"), "w", 1))
        await wait_until(answers(1), 5, "T1's answer")
        runner.accept(TaskAssignment(Task("T2", "t", 1, handler=second), "w", 1))
        if cancel_it:
            await wait_until(lambda: "T2" in runner.active, 5, "T2 to start")
            await asyncio.sleep(0)  # (into its sleep: T2 started a poll ago)
            runner.cancel("T2", 1, "not needed")
        runner.accept(TaskAssignment(Task("T3", "t", 1, handler="h5.quick"), "w", 1))
        with contextlib.suppress(TimeoutError):  # (what came is looked at below)
            await wait_until(answers(3), 5, "T2's and T3's answers")
        dead = [r.done() for r in runner._runners]
        await runner.stop()
        return {r.task_id: r for r in got}, crashes, dead

    return run(body())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("second, cancel_it", [("h5.sleeps", True), ("h5.own_cancel", False)],
                         ids=["next-task-cancelled", "next-handler-own-cancelled-error"])
def test_a_handler_that_leaves_its_cancel_count_raised_does_not_kill_its_slot(
        monkeypatch, second, cancel_it):
    for name, fn in NAMES.items():
        monkeypatch.setitem(handlers._HANDLERS, name, fn)
    results, crashes, dead = _after_a_stale_cancel(second, cancel_it)
    assert results["T1"].success and results["T1"].value == "ok"
    assert dead == [False], f"the slot's runner ended (crashes said: {crashes})"
    assert "T2" in results, "T2 was never answered"
    if cancel_it:
        assert results["T2"].cancelled
    else:
        assert not results["T2"].success and "CancelledError" in results["T2"].error
    assert results["T3"].value == "q"


async def _cancels_itself() -> str:
    asyncio.current_task().cancel()  # (a handler giving up on itself: its own cancel)
    await asyncio.sleep(0)
    return "never"


@pytest.mark.timeout(60)
def test_a_handler_that_cancels_its_own_task_fails_its_task_and_the_slot_goes_on(monkeypatch):
    """The same, at once: the handler's own cancel of "its" task is read as the runner being
    stopped; the task is never answered and the slot's runner ends without a word."""
    monkeypatch.setitem(handlers._HANDLERS, "h5.cancels_itself", _cancels_itself)
    monkeypatch.setitem(handlers._HANDLERS, "h5.quick", _quick)

    async def body():
        worker = Worker("w", "default", "127.0.0.1", 9999)
        runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable,
                            batches=True)
        runner.start(lambda crash: None)
        got: list[TaskResult] = []
        runner.accept(TaskAssignment(Task("T1", "t", 1, handler="h5.cancels_itself"), "w", 1))
        runner.accept(TaskAssignment(Task("T2", "t", 1, handler="h5.quick"), "w", 1))
        with contextlib.suppress(TimeoutError):  # (what came is looked at below)
            await wait_until(lambda: got.extend(runner.take_unsent()) or len(got) >= 2, 5,
                             "both answers")
        dead = [r.done() for r in runner._runners]
        await runner.stop()
        return {r.task_id: r for r in got}, dead

    results, dead = run(body())
    assert dead == [False], "the slot's runner ended"
    assert not results["T1"].success
    assert results["T2"].value == "q"
