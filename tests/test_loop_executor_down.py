"""Found by a review: loop.run's bounded shutdown of the default executor (_executor_down,
af37be5) leaves the shield's inner task, loop.shutdown_default_executor(), pending on a loop
it then closes: the process says "Task was destroyed but it is pending!" as it exits (the
very message _LEFT_BEHIND keeps from being said for tasks left behind). ceylon-worker
os._exit()s past it; every other program run by loop.run (the admin, the clients, a user's
script) does not."""

from __future__ import annotations

import subprocess
import sys

import pytest

HUNG_TO_THREAD = """
import asyncio, time
from ceylon_net.edge import loop

async def main():
    asyncio.get_running_loop().create_task(asyncio.to_thread(time.sleep, 2.5))
    await asyncio.sleep(0.05)
    return "main's result"

print(loop.run(main()))
"""


@pytest.mark.timeout(60)
def test_a_to_thread_left_behind_at_exit_is_said_once_not_as_a_task_destroyed():
    proc = subprocess.run([sys.executable, "-c", HUNG_TO_THREAD], capture_output=True,
                          text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "main's result\n"), proc.stderr
    assert "still runs after" in proc.stderr, proc.stderr
    assert "destroyed" not in proc.stderr, proc.stderr
