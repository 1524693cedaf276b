"""Where W2's round trip and W3's wall time go, stage by stage, on one clock
(``time.monotonic_ns``, shared by every process of the machine): the admin runs in this
process, the workers are ``ceylon-worker`` processes timed by bench/stage_hooks.

    .venv/bin/python bench/stages.py              # both, W2 with 2,000 rounds, W3 5 runs
    .venv/bin/python bench/stages.py --only w2 --rounds 5000

W2 (one ``execute()`` at a time, 1 worker): the median of each stage, from the call to the
admin's send of the assignment, over the wire to the worker's receive, to the task's start,
its run, to the worker's send of the result, over the wire to the admin's receive, and to
``execute()`` returning. W3 (200 x 10 ms on 4 workers x 8 slots): when the first task started,
when the last worker started its first, how long each worker took from its first start to
its last end (the rounds), and from the last end to ``run_tasks()`` returning.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from harness import BENCH, close_admin, noop, spawn_workers, start_admin, wait_connected

import ceylon_net.edge.transport as transport
from ceylon_net.core.tasks import Task
from ceylon_net.dev.testing import Cluster
from ceylon_net.edge.admin import Admin

HOOKS = BENCH / "stage_hooks"
clock = time.monotonic_ns
admin_log: list[tuple[int, str]] = []


def time_the_admin() -> None:
    """Note when this process's admin sends a frame and when a receive of frames returns."""
    send, recv_batch = transport.AdminSockets.send, transport.AdminSockets.recv_batch

    def timed_send(self, identity, frames):  # type: ignore[no-untyped-def]
        admin_log.append((clock(), "send"))
        return send(self, identity, frames)

    async def timed_recv_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        batch = await recv_batch(self, *args, **kwargs)
        admin_log.append((clock(), "recv"))
        return batch

    transport.AdminSockets.send, transport.AdminSockets.recv_batch = timed_send, timed_recv_batch


def worker_logs(trace: Path) -> list[list[tuple[int, str]]]:
    """Each worker's noted events, in time order."""
    logs = []
    for path in sorted(trace.glob("*.txt")):
        events = [(int(t), kind) for kind, t in (line.split() for line in path.open())]
        logs.append(sorted(events))
    return logs


def next_event(log: list[tuple[int, str]], after: int, kind: str, until: int) -> int | None:
    i = bisect.bisect_left(log, (after, ""))
    while i < len(log) and log[i][0] <= until:
        if log[i][1] == kind:
            return log[i][0]
        i += 1
    return None


@contextlib.asynccontextmanager
async def traced_cluster(trace: Path, workers: int, slots: int) -> AsyncIterator[Admin]:
    """An in-process admin and ``workers`` timed worker processes; on the way out the admin
    closes and the workers stop (writing what they noted), even when the run failed."""
    async with Cluster(workdir=trace, env={"PYTHONPATH": str(HOOKS),
                                           "CEYLON_BENCH_TRACE": str(trace)}) as cluster:
        admin = await start_admin(cluster)
        try:
            procs = await spawn_workers(cluster, workers, slots)
            await wait_connected(admin, procs, workers)
            yield admin
        finally:
            await close_admin(admin)


W2_STAGES = ("execute() to the admin's send", "over the wire to the worker",
             "worker: receive to the task's start", "the task (a no-op)",
             "worker: the task's end to its send", "over the wire to the admin",
             "admin: receive to execute() returning")


async def w2(rounds: int, warmup: int = 300) -> None:
    with tempfile.TemporaryDirectory(prefix="ceylon-stages-") as tmp:
        trace = Path(tmp)
        spans = []
        async with traced_cluster(trace, 1, 1) as admin:
            for i in range(warmup + rounds):
                t0 = clock()
                await admin.execute(noop(i))
                if i >= warmup:
                    spans.append((t0, clock()))
        (wlog,) = worker_logs(trace)
    alog = sorted(admin_log)
    stages: list[list[float]] = [[] for _ in W2_STAGES]
    for t0, t1 in spans:
        points = [t0]
        for log, kind in ((alog, "send"), (wlog, "recv"), (wlog, "start"), (wlog, "end"),
                          (wlog, "send"), (alog, "recv")):
            at = next_event(log, points[-1], kind, t1)
            if at is None:
                break
            points.append(at)
        else:
            points.append(t1)
            for n, (a, b) in enumerate(itertools.pairwise(points)):
                stages[n].append((b - a) / 1000)
    print(f"W2: {len(stages[0]):,} of {rounds:,} rounds traced; round trip p50 "
          f"{statistics.median((b - a) / 1000 for a, b in spans):.0f} µs")
    for name, values in zip(W2_STAGES, stages, strict=True):
        print(f"  {name:<40} p50 {statistics.median(values):7.1f} µs")


async def w3(runs: int, tasks: int = 200, seconds: float = 0.01) -> None:
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="ceylon-stages-") as tmp:
            trace = Path(tmp)
            async with traced_cluster(trace, 4, 8) as admin:
                await admin.run_tasks([noop(-1 - i) for i in range(32)])
                batch = [Task(id=i, description="sleep", difficulty=1, duration=seconds)
                         for i in range(tasks)]
                t0 = clock()
                await admin.run_tasks(batch)
                t1 = clock()
            logs = worker_logs(trace)
        ms = [(min(t for t, k in log if k == "start" and t >= t0),
               max(t for t, k in log if k == "end" and t >= t0)) for log in logs]
        counts = [sum(1 for t, k in log if k == "start" and t >= t0) for log in logs]
        first, last_first = min(a for a, _ in ms), max(a for a, _ in ms)
        last_end = max(b for _, b in ms)
        sends = [t for t, k in admin_log if k == "send" and t0 <= t < first + 2_000_000]
        recvs = sorted(min(t for t, k in log if k == "recv" and t >= t0) for log in logs)
        last_send = min(t for log in logs for t, k in log if k == "send" and t >= last_end)
        last_recv = max(t for t, k in admin_log if k == "recv" and t <= t1)
        admin_log.clear()
        print(f"W3 run {run + 1}: wall {(t1 - t0) / 1e6:.2f} ms; the admin's sends at "
              f"{', '.join(f'{(t - t0) / 1e6:.2f}' for t in sends[:6])} ms, the workers' "
              f"receives at {', '.join(f'{(t - t0) / 1e6:.2f}' for t in recvs)} ms; "
              f"first task started at "
              f"{(first - t0) / 1e6:.2f} ms, the last worker's first at "
              f"{(last_first - t0) / 1e6:.2f} ms; each worker's first start to last end "
              f"{', '.join(f'{(b - a) / 1e6:.2f}' for a, b in ms)} ms (tasks "
              f"{', '.join(map(str, counts))}); last end to run_tasks() returning "
              f"{(t1 - last_end) / 1e6:.2f} ms (to the worker's send of its result "
              f"{(last_send - last_end) / 1e6:.2f}, the admin's last receive "
              f"{(last_recv - last_end) / 1e6:.2f})")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("w2", "w3"), help="one of them (default: both)")
    p.add_argument("--rounds", type=int, default=2000, help="W2 rounds (default 2000)")
    p.add_argument("--runs", type=int, default=5, help="W3 runs (default 5)")
    args = p.parse_args()
    time_the_admin()
    if args.only in (None, "w2"):
        await w2(args.rounds)
    if args.only in (None, "w3"):
        await w3(args.runs)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
