"""How long the admin takes to notice a dead worker, at the default heartbeat (1 s) and
liveness (3): kill -9 a worker that is running a task, time until the admin logs it lost and
until its task is assigned to another worker. Prints each run and the medians.

usage: python bench/detect_lost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path

from ceylon_net.dev.testing import Cluster, EventLog, wait_until


async def one_run(workdir: Path) -> tuple[float, float]:
    tasks = workdir / "tasks.json"
    tasks.write_text(json.dumps([{"id": i, "description": "long", "difficulty": 1,
                                  "duration": 5.0} for i in range(2)]))
    async with Cluster(workdir=workdir) as c:
        admin = await c.admin("--tasks", str(tasks), "--expect-workers", "2")
        async with EventLog("127.0.0.1", c.pub_port) as bus:
            await bus.wait_subscribed()
            victim = await c.worker("victim")
            await c.worker("survivor", "--concurrency", "2")
            await wait_until(lambda: any(a.worker == "victim" for a in bus.of(b"ASSIGN")), 20,
                             "a task on the victim")
            mine = next(a.task.id for a in bus.of(b"ASSIGN") if a.worker == "victim")
            victim.signal(signal.SIGKILL)
            killed = time.monotonic()
            await wait_until(lambda: "worker 'victim' lost" in admin.stderr(), 15, "detection")
            detected = time.monotonic() - killed
            await wait_until(lambda: any(a.task.id == mine and a.worker == "survivor"
                                         for a in bus.of(b"ASSIGN")), 15, "reassignment")
            reassigned = time.monotonic() - killed
        await admin.wait(30)
    return detected, reassigned


async def main(runs: int) -> None:
    detected, reassigned = [], []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="ceylon-detect-") as tmp:
            d, r = await one_run(Path(tmp))
        detected.append(d)
        reassigned.append(r)
        print(f"run {i + 1}: lost after {d:.2f} s, task reassigned after {r:.2f} s", flush=True)
    print(f"median over {runs} runs (heartbeat 1 s x liveness 3): detected "
          f"{statistics.median(detected):.2f} s, reassigned {statistics.median(reassigned):.2f} s "
          f"(target <= 3.5 s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.runs))
