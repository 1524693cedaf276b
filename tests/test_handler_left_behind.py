"""A handler that will not stop when the worker stops is left behind by TaskRunner.stop, said
once by its task's name. Found by reviews: run as a task of its own (handlers._own_task), its
inner task was not marked, and loop.run's exit cancelled it again, waited STOP_GRACE more and
said it a second time, anonymously ("left behind: Task-3"); and so was the task of a gather it
awaits (a _GatheringFuture, not a task, between them)."""

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

cancels, started = [], []

async def stubborn():
    started.append(1)
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancels.append(1)

async def gathers():
    await asyncio.gather(stubborn())

handlers._HANDLERS["stubborn"], handlers._HANDLERS["gathers"] = stubborn, gathers

async def main():
    worker = Worker("w", "default", "127.0.0.1", 9999)
    runner = TaskRunner("w", 1, worker.run_task, lambda: None, worker._unsendable)
    runner.start(lambda c: None)
    runner.accept(TaskAssignment(Task("S", "s", 1, handler=HANDLER), "w", 1))
    await wait_until(lambda: started, 5, "S to start")  # (and reach its await)
    await runner.stop()
    return "main"

print(loop.run(main()), len(cancels))
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("handler", ["stubborn", "gathers"])
def test_a_handler_left_behind_at_stop_is_said_once_by_its_task_and_not_cancelled_again(
        handler):
    script = f"HANDLER = {handler!r}\n" + SCRIPT
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "left behind: task 'S'" in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "left behind" in line]
    assert len(warnings) == 1, warnings
    assert proc.stdout.split() == ["main", "1"], proc.stdout  # one cancel, not two
