"""Per-task state: a ContextVar a handler sets in one task must not be what the next task
of the worker finds (each asyncio task, and asyncio.to_thread's call, starts from a context
of its own; a web framework's request handler does too). Run as a worker runs them: the
worker's own run_task, its runner of one slot."""

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

REQUEST = contextvars.ContextVar("h5_request", default=None)


def _sync_tag(tag: str) -> Any:
    seen = REQUEST.get()
    REQUEST.set(tag)  # e.g. structlog.contextvars.bind_contextvars(request=tag)
    return seen


async def _async_tag(tag: str) -> Any:
    seen = REQUEST.get()
    REQUEST.set(tag)
    return seen


def _seen(name: str, n: int) -> list[Any]:
    """What each of ``n`` tasks of handler ``name``, run one after another on one slot,
    found in REQUEST before setting it."""
    async def body() -> list[TaskResult]:
        worker = Worker("w", "default", "127.0.0.1", 9999)
        runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable,
                            batches=True)
        runner.start(lambda crash: None)
        got: list[TaskResult] = []
        for i in range(n):  # (one at a time: the next is given once the last answered)
            runner.accept(TaskAssignment(Task(i, "t", 1, handler=name, args=[f"t{i}"]),
                                         "w", 1))
            await wait_until(lambda n=i + 1: got.extend(runner.take_unsent()) or len(got) == n,
                             10, f"task {i}'s answer")
        await runner.stop()
        return got

    results = run(body())
    assert all(r.success for r in results), [r.error for r in results]
    return [r.value for r in sorted(results, key=lambda r: r.task_id)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fn", [_async_tag, _sync_tag], ids=["async", "sync"])
def test_a_contextvar_a_handler_sets_does_not_leak_into_the_next_task(monkeypatch, fn):
    name = f"h5.{fn.__name__}"
    monkeypatch.setitem(handlers._HANDLERS, name, fn)
    assert _seen(name, 8) == [None] * 8
