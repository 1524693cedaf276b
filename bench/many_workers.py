"""Many in-process worker agents in one event loop, for the W4 scale benchmark.

    python bench/many_workers.py --port 8000 --count 250 --prefix h0-

runs ``--count`` :class:`ceylon_net.Worker` agents (names PREFIX0, PREFIX1, ...) against the
admin at ``--admin-peer``:``--port``, each with its own sockets and heartbeats, exactly like
that many ``ceylon-worker`` processes would, but at the cost of one Python process. It prints
``ready N`` once every agent is registered, and exits when the admin ends the run, on
SIGINT/SIGTERM, or after ``--max-seconds`` (a safety bound: nothing started by the benchmark
may outlive it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
import time

from loguru import logger

from ceylon_net.edge.worker import Worker
from ceylon_net.settings import WorkerSettings


def raise_fd_limit() -> int:
    """Each agent holds a DEALER and a SUB socket plus its context's own descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def run(args: argparse.Namespace) -> int:
    workers = [
        Worker(f"{args.prefix}{i}", settings=WorkerSettings(
            name=f"{args.prefix}{i}", role=args.role, skill=args.skill,
            capacity=args.concurrency, admin_peer=args.admin_peer, port=args.port,
            workspace=args.workspace, time_scale=0.0, connect_timeout=args.connect_timeout))
        for i in range(args.count)
    ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runs = []
    for i, w in enumerate(workers):
        runs.append(asyncio.create_task(w.arun(), name=f"run-{w.name}"))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # let the handshakes of this slice through first
    deadline = time.monotonic() + args.connect_timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if all(w._welcome is not None for w in workers):  # registered with the admin
            print(f"ready {len(workers)}", flush=True)
            break
        if any(r.done() for r in runs):
            break
        await asyncio.sleep(0.1)
    ended = asyncio.create_task(asyncio.wait(runs, return_when=asyncio.ALL_COMPLETED))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([ended, stopped], timeout=args.max_seconds,
                       return_when=asyncio.FIRST_COMPLETED)
    for w in workers:
        await w.stop()
    _, pending = await asyncio.wait(runs, timeout=10)
    for r in pending:
        r.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    for t in (ended, stopped):
        t.cancel()
    failed = [r.exception() for r in runs if not r.cancelled() and r.exception() is not None]
    for exc in failed[:3]:
        print(f"worker failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="the admin's ROUTER port")
    p.add_argument("--admin-peer", default="127.0.0.1")
    p.add_argument("--workspace", default="default")
    p.add_argument("--count", type=int, default=250, help="worker agents in this process")
    p.add_argument("--prefix", default="many-", help="agent names are PREFIX0, PREFIX1, ...")
    p.add_argument("--role", default="bench")
    p.add_argument("--skill", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--max-seconds", type=float, default=900.0,
                   help="leave after this long whatever happens")
    p.add_argument("--log-level", default="ERROR")
    args = p.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    limit = raise_fd_limit()
    if limit < args.count * 8:
        print(f"warning: only {limit} file descriptors for {args.count} agents",
              file=sys.stderr)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
