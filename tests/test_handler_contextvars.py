"""Per-task state: a ContextVar a handler sets in one task must not be what the next task
of the worker finds (each asyncio task, and asyncio.to_thread's call, starts from a context
of its own; a web framework's request handler does too). Run as a worker runs them: the
worker's own run_task, its runner of one slot, one task after another."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest
from conftest import run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.edge.worker import Worker

REQUEST = contextvars.ContextVar("request", default=None)
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def _one_by_one(tasks: list[Task], wait: float, batches: bool = False
                ) -> dict[Any, TaskResult]:
    """Each task's result, run on one slot, the next given once the last answered."""
    async def body() -> dict[Any, TaskResult]:
        worker = Worker("w", "default", "127.0.0.1", 9999)
        runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable,
                            batches=batches)
        runner.start(lambda crash: None)
        got: list[TaskResult] = []
        for i, task in enumerate(tasks):
            runner.accept(TaskAssignment(task, "w", 1))
            await wait_until(lambda n=i + 1: got.extend(runner.take_unsent()) or len(got) == n,
                             wait, f"task {task.id!r}'s answer")
        await runner.stop()
        return {r.task_id: r for r in got}

    return run(body())


def _sync_tag(tag: str) -> Any:
    seen = REQUEST.get()
    REQUEST.set(tag)  # e.g. structlog.contextvars.bind_contextvars(request=tag)
    return seen


async def _async_tag(tag: str) -> Any:
    seen = REQUEST.get()
    REQUEST.set(tag)
    return seen


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fn", [_async_tag, _sync_tag], ids=["async", "sync"])
def test_a_contextvar_a_handler_sets_does_not_leak_into_the_next_task(monkeypatch, fn):
    name = f"h5.{fn.__name__}"
    monkeypatch.setitem(handlers._HANDLERS, name, fn)
    results = _one_by_one([Task(i, "t", 1, handler=name, args=[f"t{i}"]) for i in range(8)],
                          10, batches=True)
    assert all(r.success for r in results.values()), [r.error for r in results.values()]
    assert [results[i].value for i in range(8)] == [None] * 8


async def _reads() -> str:
    return VAR.get()


async def _done() -> str:
    return "done"


def _sets_then_returns(coro_fn):
    def wrapper():  # (a plain function returning a coroutine: a decorator's, say)
        VAR.set("set by the wrapper")
        return coro_fn()
    return wrapper


@pytest.mark.timeout(60)
def test_a_plain_function_returning_a_coroutine_does_not_leak_its_context(monkeypatch):
    """Found by a review: from its second call on (handlers._AWAITS), it was called right in
    the slot's runner task: a context variable it set was seen by the slot's next tasks."""
    monkeypatch.setitem(handlers._HANDLERS, "sets", _sets_then_returns(_done))
    monkeypatch.setitem(handlers._HANDLERS, "reads", _reads)
    monkeypatch.setattr(handlers, "_AWAITS", set())
    values = {t: r.value for t, r in _one_by_one(
        [Task(f"T{i}", "t", 1, handler=h) for i, h in enumerate(["sets", "sets", "reads"])],
        5).items()}
    assert values["T0"] == values["T1"] == "done"
    assert values["T2"] == "unset", "a context variable set by another task's handler"


@pytest.mark.timeout(60)
def test_a_plain_function_returning_a_coroutine_gives_it_its_context_on_the_first_call_too(
        monkeypatch):
    """Found by a review: its first call ran it in a thread, in a copied context then
    dropped; the coroutine ran in a fresh copy of the slot's and did not see what it set."""
    monkeypatch.setitem(handlers._HANDLERS, "sets", _sets_then_returns(_reads))
    monkeypatch.setattr(handlers, "_AWAITS", set())
    values = {t: r.value for t, r in _one_by_one(
        [Task(f"T{i}", "t", 1, handler="sets") for i in range(2)], 5).items()}
    assert values["T1"] == "set by the wrapper"  # (later calls: fn and its coroutine share one)
    assert values["T0"] == values["T1"], "the first call's coroutine lost fn's context"
