"""A plain (sync) handler's task whose call returned at once, but whose answer waited on an
event loop held by another slot's async handler (a blocking call in an async def), is not
failed as timed out: the loop's delay is not its time. It was, and its error told the user to
make it "a plain function" (it was one)."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.edge.worker import Worker

_gate: dict = {}


async def _blocks_the_loop() -> str:
    while not _gate.get("delivered"):  # (until B's call has come back to the loop)
        await asyncio.sleep(0)
    time.sleep(0.5)  # the user's bug, in another slot: a blocking call in an async def
    return "a"


def _returns_at_once() -> str:
    return "b"


@pytest.mark.timeout(60)
def test_a_sync_handler_that_returned_in_time_is_not_blamed_as_an_async_one(monkeypatch):
    monkeypatch.setitem(handlers._HANDLERS, "h5.blocks", _blocks_the_loop)
    monkeypatch.setitem(handlers._HANDLERS, "h5.at_once", _returns_at_once)
    deliver = handlers._Back._deliver

    def delivered(self: handlers._Back) -> None:  # B's answer is in: its runner is woken
        deliver(self)  # next, A's blocking step is queued ahead of it or runs before it
        _gate["delivered"] = True

    monkeypatch.setattr(handlers._Back, "_deliver", delivered)

    async def body() -> dict:
        worker = Worker("w", "default", "127.0.0.1", 9999)
        runner = TaskRunner("w", 2, worker.run_task, lambda: None, worker._unsendable,
                            batches=True)
        runner.start(lambda crash: None)
        runner.accept(TaskAssignment(Task("A", "a", 1, handler="h5.blocks"), "w", 1))
        runner.accept(TaskAssignment(Task("B", "b", 1, handler="h5.at_once", timeout=0.2),
                                     "w", 1))
        got: list[TaskResult] = []
        await wait_until(lambda: got.extend(runner.take_unsent()) or len(got) == 2, 10,
                         "both answers")
        await runner.stop()
        return {r.task_id: r for r in got}

    results = run(body())
    b = results["B"]
    assert (b.success, b.value) == (True, "b"), b.error
