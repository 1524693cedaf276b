"""The demo behind ``bin/demo``: one admin and three workers as separate processes on free
loopback ports run the tutorial's three tasks (seed 001) and print the admin's results."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ..cli.common import configure_logging, reader_may_leave
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
        _say(f"not passing {', '.join(mine)} to the demo's processes: it runs on settings "
             f"of its own")
    async with Cluster(inherit_settings=False) as cluster:
        admin = await cluster.admin("--tasks", str(SEED_TASKS), "--expect-workers", "3")
        _say(f"admin on 127.0.0.1:{cluster.port} (PUB {cluster.pub_port}); starting workers "
             + ", ".join(f"{n} (skill {s})" for n, s in WORKERS))
        workers = [await cluster.worker(n, "--skill", str(s), "--time-scale", TIME_SCALE)
                   for n, s in WORKERS]
        code = await admin.wait(120)
        _say(admin.stdout(), end="")
        if code != 0:  # (the workers, left waiting for it, are stopped on the way out)
            print(f"admin exited {code}:\n{admin.stderr()}", file=sys.stderr)
            return 1
        worker_codes = [await w.wait(30) for w in workers]
        if any(worker_codes):
            print(f"admin exited {code}; workers exited {worker_codes}", file=sys.stderr)
            print(admin.stderr(), file=sys.stderr)
            return 1
        _say("all processes exited cleanly (admin 0, workers 0 0 0)")
        return 0


def _say(text: str, end: str = "\n") -> None:
    # Flushed at once, so a reader gone (``bin/demo | head -1``) is met here, where it is
    # dropped quietly and the run goes on to stop its processes and exit as it did; at
    # exit it would be a traceback and exit 1, as if the demo had failed.
    with reader_may_leave():
        print(text, end=end, flush=True)


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
    # Its own warnings and errors on stderr as the CLIs' are, not loguru's default DEBUG
    # lines (such as "stdout's reader went away", which a user piping into head would see).
    configure_logging("INFO", as_json=False)
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:  # (Ctrl-C: the cluster stopped its processes on the way out)
        print("interrupted: the admin and workers were stopped", file=sys.stderr)
        sys.exit(130)
