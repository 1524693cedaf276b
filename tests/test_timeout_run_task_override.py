"""Found by a review: the after-the-fact time-limit check is skipped for a task whose handler is
not on the loop (runner._execute: handlers.on_loop(task.handler)); a handler name that is not
registered with @handler (a Worker subclass's run_task that dispatches on task.handler
itself) reads as "not on the loop" too: its run_task, blocking the loop past the limit, now
succeeds instead of failing as timed out, as it did before af37be5."""

from __future__ import annotations

import time

import pytest
from conftest import run

from ceylon_net.core.tasks import Task, TaskAssignment, TaskResult
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge.runner import TaskRunner


async def _blocking_run_task(task: Task) -> TaskResult:
    time.sleep(0.3)  # (blocks the loop: the time limit cannot stop it)
    return TaskResult(task.id, "w", True, value=task.handler)


@pytest.mark.timeout(60)
def test_a_run_task_override_that_blocks_past_its_limit_still_times_out():
    async def body():
        runner = TaskRunner("w", 1, _blocking_run_task, lambda: None)
        runner.start(lambda crash: None)
        runner.accept(TaskAssignment(Task("T", "t", 1, handler="mine.not_registered",
                                          timeout=0.1), "w", 1))
        await wait_until(lambda: runner.unsent, 10, "T's answer")
        (r,) = runner.take_unsent()
        await runner.stop()
        return r

    r = run(body())
    assert not r.success and r.error.startswith("timed out after 0.1 s"), (r.success, r.error)
