"""A serving admin fed batches without end: its memory with --keep-finished and without.

A ``ceylon-admin`` process (serving) and ``--workers`` ``ceylon-worker`` processes; one client
sends ``--batches`` batches of ``--size`` no-op tasks, one after another, each waited for (its
report), and the admin's RSS is read from /proc after every ``--every`` batches. Run once per
``--keep`` (a number of tasks; ``all`` keeps every one, as before --keep-finished):

    .venv/bin/python bench/keep_finished.py                       # 40 x 10,000, keep 100,000 / all
    .venv/bin/python bench/keep_finished.py --batches 20 --keep 0 --keep 50000
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

from harness import proc_rss_mib

from ceylon_net.dev.testing import Cluster
from ceylon_net.edge.client import AsyncClient


async def feed(keep: str, batches: int, size: int, workers: int, every: int,
               workdir: Path) -> list[tuple[int, float]]:
    """(tasks done, admin RSS in MiB) after every ``every`` batches, and after the last."""
    keep_arg = "1000000000000" if keep == "all" else keep
    async with Cluster(workdir=workdir) as c:
        admin = await c.admin("--keep-finished", keep_arg, "--log-level", "WARNING")
        for i in range(workers):
            await c.worker(f"w{i}", "--skill", "10", "--concurrency", "4",
                           "--log-level", "WARNING")
        async with AsyncClient(f"127.0.0.1:{c.port}", timeout=30) as client:
            deadline = time.monotonic() + 30
            while len((await client.status())["workers"]) < workers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{workers} workers did not register in 30 s")
                await asyncio.sleep(0.1)
            figures = []
            for b in range(batches):
                doc = {"tasks": [{"id": f"{b}-{i}", "description": "noop", "difficulty": 1,
                                  "duration": 0}
                                 for i in range(size)]}
                _, report = await client.submit_batch(doc, wait=True)
                assert report is not None and report["success_rate"] == 1.0, report
                if (b + 1) % every == 0 or b + 1 == batches:
                    figures.append(((b + 1) * size, proc_rss_mib(admin.process.pid)))
        return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--size", type=int, default=10_000, help="tasks a batch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--every", type=int, default=10, help="print the RSS every N batches")
    ap.add_argument("--keep", action="append", help="--keep-finished (repeat; 'all')")
    args = ap.parse_args()
    # (SIGTERM, as from timeout(1), unwinds like Ctrl-C: the processes started go with it)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for keep in args.keep or ["100000", "all"]:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ceylon-keep-bench-") as workdir:
            figures = asyncio.run(feed(keep, args.batches, args.size, args.workers, args.every,
                                       Path(workdir)))
        took = time.monotonic() - started
        line = ", ".join(f"{n:,}: {mib:.1f}" for n, mib in figures)
        print(f"--keep-finished {keep:>8}: admin RSS (MiB) after tasks done  {line}  "
              f"({took:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
