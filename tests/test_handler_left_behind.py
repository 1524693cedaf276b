"""Found by a review: a handler run as a task of its own (handlers._own_task) that will not stop
when the worker stops is left behind by TaskRunner.stop (named by its task), but its own
inner task is not: loop.run's exit cancels it again, waits STOP_GRACE more and says it a
second time, anonymously ("left behind: Task-3"). Before af37be5 it was said once, by its
task's name."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, contextlib
from ceylon_net.core.tasks import Task, TaskAssignment
from ceylon_net.dev.testing import wait_until
from ceylon_net.edge import handlers, loop
from ceylon_net.edge.runner import TaskRunner
from ceylon_net.edge.worker import Worker

cancels = []

async def stubborn():
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancels.append(1)

handlers._HANDLERS["h7.stubborn"] = stubborn

async def main():
    worker = Worker("w", "default", "127.0.0.1", 9999)
    runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable)
    runner.start(lambda c: None)
    runner.accept(TaskAssignment(Task("S", "s", 1, handler="h7.stubborn"), "w", 1))
    await wait_until(lambda: "S" in runner.active, 5, "S to start")
    await asyncio.sleep(0.05)
    await runner.stop()
    return "main"

print(loop.run(main()), len(cancels))
"""


@pytest.mark.timeout(60)
def test_a_handler_left_behind_at_stop_is_said_once_by_its_task_and_not_cancelled_again():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "left behind: task 'S'" in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "left behind" in line]
    assert len(warnings) == 1, warnings
    assert proc.stdout.split() == ["main", "1"], proc.stdout  # one cancel, not two
