"""Found by a review: each handler call runs in a context of its own (af37be5), but a plain
function found to return a coroutine (handlers._AWAITS) is called, from its second call on,
right in the slot's runner task (handlers.call: fn(*args) outside _own_task): a context
variable it sets is seen by the slot's next tasks, the very leak the commit meant to end."""

from __future__ import annotations

import contextvars

import pytest
from conftest import run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.edge.worker import Worker

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("h7_var", default="clean")


async def _value() -> str:
    return "done"


def _sets_then_returns_a_coroutine():  # (a plain function: a decorator's wrapper, say)
    VAR.set("leaked")
    return _value()


async def _reads() -> str:
    return VAR.get()


@pytest.mark.timeout(60)
def test_a_plain_function_returning_a_coroutine_does_not_leak_its_context(monkeypatch):
    monkeypatch.setitem(handlers._HANDLERS, "h7.sets", _sets_then_returns_a_coroutine)
    monkeypatch.setitem(handlers._HANDLERS, "h7.reads", _reads)
    monkeypatch.setattr(handlers, "_AWAITS", set())

    async def body():
        worker = Worker("w", "default", "127.0.0.1", 9999)
        runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable)
        runner.start(lambda crash: None)
        got: list[TaskResult] = []
        for i, name in enumerate(["h7.sets", "h7.sets", "h7.reads"]):
            runner.accept(TaskAssignment(Task(f"T{i}", "t", 1, handler=name), "w", 1))
            await wait_until(lambda i=i: got.extend(runner.take_unsent()) or len(got) > i, 5,
                             f"T{i}")
        await runner.stop()
        return {r.task_id: r.value for r in got}

    values = run(body())
    assert values["T0"] == values["T1"] == "done"
    assert values["T2"] == "clean", "a context variable set by another task's handler"
