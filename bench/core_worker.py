"""A worker's own cost per task in W1, without sockets or an admin: a ``Worker`` in this
process is handed W1's assignment frames (no-op tasks, 440 a frame, as the admin sends them
under load), decodes them, runs the tasks on its slots and encodes its results into the
frames it would send (kept, not sent). CPU time of this process only, from the first frame to
the last result: the worker-side counterpart of ``bench/core_w1.py``, steadier than W1 on a
noisy machine, for comparing changes to the worker's hot path run against run.

    .venv/bin/python bench/core_worker.py                  # 100k tasks, concurrency 8, 5 runs
    .venv/bin/python bench/core_worker.py --tasks 20000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger

from ceylon_net import wire
from ceylon_net.core.tasks import Task, TaskAssignment
from ceylon_net.edge.collector import FullCollections
from ceylon_net.edge.loop import new_event_loop
from ceylon_net.edge.worker import Worker
from ceylon_net.wire import Kind

PER_FRAME = 440  # assignments a frame (what the admin sent a worker per frame in W1)
QUEUED_AHEAD = 1024  # the admin's most credit: more is not handed over until it runs down


class _Kept:
    """Stands in for the worker's sockets: what it sends is kept, counted by kind."""

    def __init__(self) -> None:
        self.frames: dict[bytes, int] = {}

    def send_soon(self, frames: list[bytes]) -> None:
        self.frames[frames[0]] = self.frames.get(frames[0], 0) + 1


def assignment_frames(tasks: int, name: str) -> list[list[bytes]]:
    header = wire.make_header("default", "admin", "TaskAssignment")
    out = []
    for first in range(0, tasks, PER_FRAME):
        batch = [TaskAssignment(Task(i, "noop", 1, duration=0.0), name, 1)
                 for i in range(first, min(tasks, first + PER_FRAME))]
        out.append(wire.encode_frames(Kind.ASSIGN, header, wire.pack_batch(batch)))
    return out


async def one_run(tasks: int, window: int) -> tuple[float, dict[bytes, int]]:
    """CPU seconds the worker spent on ``tasks`` no-op tasks; the frames it sent, by kind."""
    worker = Worker("w", "default", "127.0.0.1", 1, skill=10, max_concurrent_tasks=window,
                    time_scale=0)
    kept = _Kept()
    worker._welcome, worker._sockets = object(), kept  # type: ignore[assignment]  # registered
    worker.runner.start(lambda crash: logger.error("runner crashed: {}", crash))
    collections = FullCollections()  # as the worker program runs (see edge/collector.py)
    collections.install()
    frames = assignment_frames(tasks, worker.name)
    await asyncio.sleep(0)
    started = time.process_time()
    for f in frames:
        worker._on_tasks(wire.decode_frames(f, worker.limits))
        while worker.runner.queue.qsize() > QUEUED_AHEAD:
            await asyncio.sleep(0)
    while worker.runner.runs < tasks:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # (the last flush)
    spent = time.process_time() - started
    collections.uninstall()
    await worker.runner.stop()
    if worker.runner.unsent:
        raise RuntimeError(f"{len(worker.runner.unsent)} result(s) never left")
    return spent, kept.frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--window", type=int, default=8, help="the worker's concurrency")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")  # as the benchmark's workers run (--log-level)
    per_task, sent = [], {}
    for _ in range(args.runs):
        loop = new_event_loop()
        try:
            spent, sent = loop.run_until_complete(one_run(args.tasks, args.window))
        finally:
            loop.close()
        per_task.append(spent * 1e6 / args.tasks)
    frames = ", ".join(f"{n} {kind.decode()}" for kind, n in sorted(sent.items()))
    print(f"worker core, {args.tasks:,} no-op tasks x concurrency {args.window}: median "
          f"{statistics.median(per_task):.2f} µs/task; runs: "
          f"{', '.join(f'{x:.2f}' for x in per_task)}; frames sent a run: {frames}")


if __name__ == "__main__":
    main()
