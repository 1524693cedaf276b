"""The demo behind ``bin/demo``: one admin and three workers as separate processes on free
loopback ports run the tutorial's three tasks (seed 001) and print the admin's results."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ..edge.loop import Stopped, until_stopped
from .testing import Cluster

SEED_TASKS = Path(__file__).resolve().parents[2] / "examples" / "seed_tasks.json"
WORKERS = (("Junior", 3), ("Intermediate", 6), ("Senior", 9))
TIME_SCALE = "0.2"  # seconds per difficulty point: the 8-point task takes 1.6 s


async def main() -> int:
    """Run the demo; SIGTERM or SIGHUP (a closed terminal) stop it as Ctrl-C does: its
    processes are stopped on the way out, not left running (exit 128 + signal)."""
    try:
        return await until_stopped(_run())
    except Stopped as exc:
        print(f"{exc}: the admin and workers were stopped", file=sys.stderr)
        return 128 + exc.signal


async def _run() -> int:
    if mine := sorted(k for k in os.environ if k.startswith("CEYLON_")):
        print(f"not passing {', '.join(mine)} to the demo's processes: it runs on settings "
              f"of its own", flush=True)
    async with Cluster(inherit_settings=False) as cluster:
        admin = await cluster.admin("--tasks", str(SEED_TASKS), "--expect-workers", "3")
        print(f"admin on 127.0.0.1:{cluster.port} (PUB {cluster.pub_port}); starting workers "
              + ", ".join(f"{n} (skill {s})" for n, s in WORKERS), flush=True)
        workers = [await cluster.worker(n, "--skill", str(s), "--time-scale", TIME_SCALE)
                   for n, s in WORKERS]
        code = await admin.wait(120)
        print(admin.stdout(), end="", flush=True)
        if code != 0:  # (the workers, left waiting for it, are stopped on the way out)
            print(f"admin exited {code}:\n{admin.stderr()}", file=sys.stderr)
            return 1
        worker_codes = [await w.wait(30) for w in workers]
        if any(worker_codes):
            print(f"admin exited {code}; workers exited {worker_codes}", file=sys.stderr)
            print(admin.stderr(), file=sys.stderr)
            return 1
        print("all processes exited cleanly (admin 0, workers 0 0 0)")
        return 0


if __name__ == "__main__":
    argparse.ArgumentParser(prog="bin/demo", description=(
        "One ceylon-admin and three ceylon-workers (Junior, Intermediate, Senior) as separate "
        "processes on free loopback ports run the tutorial's three tasks "
        "(examples/seed_tasks.json) and print the admin's results. Exit 0 when every "
        "process exited cleanly.")).parse_args()
    if not SEED_TASKS.is_file():  # (a plain install has no examples/: they live in the clone)
        print(f"the demo's tasks file {SEED_TASKS} is missing: run bin/demo from a clone of "
              f"the repository", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:  # (Ctrl-C: the cluster stopped its processes on the way out)
        print("interrupted: the admin and workers were stopped", file=sys.stderr)
        sys.exit(130)
