"""A program of a user's: an in-process admin and worker, a sync handler that hangs past its
time limit, then the program ends (it must, without waiting for the hung thread).

    python hung_exit.py PORT      (0: the admin picks its ports)
"""

import asyncio
import sys
import time

from ceylon_net import handler
from ceylon_net.core.tasks import Task
from ceylon_net.edge.worker import Worker
from ceylon_net.playground import TaskPlayGround


@handler("hang_at_exit")
def hang(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def main(port: int) -> None:
    pg = TaskPlayGround(port=port, bind="127.0.0.1")
    async with pg.play(workers=[Worker("w", max_concurrent_tasks=1)]):
        result = await pg.admin.execute(Task("t", "hangs", 1, handler="hang_at_exit",
                                             args=[120.0], timeout=0.3))
        print(f"result: {result.success} {result.error}", flush=True)


asyncio.run(main(int(sys.argv[1])))
print("main done", flush=True)
