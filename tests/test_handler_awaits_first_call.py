"""Found by a review: a plain function found to return a coroutine (handlers._AWAITS) is, from
its second call on, called in the context its coroutine then runs in (19493c7:
context.run(fn) and _own_task(coro, context)), so a context variable it sets before returning
the coroutine is seen by the coroutine. Its first call runs fn in a thread, in a copied
context that is then dropped: the coroutine runs in a fresh copy of the slot's context
(_own_task(value), no context) and does not see it. The same handler answers differently on
its first call."""

from __future__ import annotations

import contextvars

import pytest
from conftest import run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.edge.worker import Worker

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("h8_var", default="unset")


async def _reads() -> str:
    return VAR.get()


def _sets_then_returns_a_coroutine():  # (a decorator's wrapper, say: sets a request id)
    VAR.set("set by the wrapper")
    return _reads()


@pytest.mark.timeout(60)
def test_a_plain_function_returning_a_coroutine_gives_it_its_context_on_the_first_call_too(
        monkeypatch):
    monkeypatch.setitem(handlers._HANDLERS, "h8.sets", _sets_then_returns_a_coroutine)
    monkeypatch.setattr(handlers, "_AWAITS", set())

    async def body():
        worker = Worker("w", "default", "127.0.0.1", 9999)
        runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable)
        runner.start(lambda crash: None)
        got: list[TaskResult] = []
        for i in range(2):
            runner.accept(TaskAssignment(Task(f"T{i}", "t", 1, handler="h8.sets"), "w", 1))
            await wait_until(lambda i=i: got.extend(runner.take_unsent()) or len(got) > i, 5,
                             f"T{i}")
        await runner.stop()
        return {r.task_id: r.value for r in got}

    values = run(body())
    assert values["T1"] == "set by the wrapper"  # (later calls: fn and its coroutine share one)
    assert values["T0"] == values["T1"], "the first call's coroutine lost fn's context"
