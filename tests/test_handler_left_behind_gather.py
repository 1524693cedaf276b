"""Found by a review: loop._leave_behind (19493c7) follows only a chain of tasks through
_fut_waiter. A handler left behind at the worker's stop that awaits asyncio.gather(...) waits
on a _GatheringFuture, not a task: the gathered child task is not marked, so loop.run's exit
cancels it again, waits STOP_GRACE more and says it a second time, anonymously ("left behind:
Task-N") -- the very symptom 19493c7 fixed for a direct await."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio
from ceylon_net.core.tasks import Task, TaskAssignment
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers, loop
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.edge.worker import Worker

cancels = []

async def child():
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancels.append(1)

async def gathers():
    await asyncio.gather(child())

handlers._HANDLERS["h8.gathers"] = gathers

async def main():
    worker = Worker("w", "default", "127.0.0.1", 9999)
    runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable)
    runner.start(lambda c: None)
    runner.accept(TaskAssignment(Task("S", "s", 1, handler="h8.gathers"), "w", 1))
    await wait_until(lambda: "S" in runner.active, 5, "S to start")
    await asyncio.sleep(0.05)
    await runner.stop()
    return "main"

print(loop.run(main()), len(cancels))
"""


@pytest.mark.timeout(60)
def test_a_handler_left_behind_awaiting_gather_is_said_once_and_not_cancelled_again():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "left behind: task 'S'" in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "left behind" in line]
    assert len(warnings) == 1, warnings
    assert proc.stdout.split() == ["main", "1"], proc.stdout  # one cancel, not two
