"""The ceylon_net benchmark suite (issues 7, 15): W1-W5; with --compare, the anchors too.

    .venv/bin/python bench/run.py --compare          # everything, 3 runs, medians + each run
    .venv/bin/python bench/run.py --quick --runs 1   # a smoke run with small sizes
    .venv/bin/python bench/run.py --only w1,w2 --json figures.json

W1 throughput  no-op tasks through an in-process Admin and K ``ceylon-worker`` processes.
W2 latency     sequential ``await admin.execute(no-op)`` round trips: p50 / p99 / p99.9.
W3 sleep       200 tasks of 10 ms on 4 workers x concurrency 8: wall time over the ideal;
               W3b: 8 tasks of 1 s, then 200 of 10 ms, on 4 workers x concurrency 2.
W4 scale       1,000 worker agents (bench/many_workers.py) on a ``ceylon-admin`` process:
               its CPU while idle, then its RSS with 100,000 tasks queued that no one can take.
W5 durability  W1 (4 workers) with the SQLite journal on, as a fraction of W1 without it.

Every figure is taken ``--runs`` times on fresh processes; the table shows the median and each
run. ``--compare`` runs ../shared/anchors (the raw pyzmq ceiling; Dask and Celery where
installed; Ray too) in the same invocation, prints ours / theirs, and checks issue 15's
targets, each PASS or MISS.
Every process started here is gone when this script ends, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anchors import Anchors, find_anchors, run_ceiling, run_celery, run_dask, run_ray
from harness import (
    DEFAULT_ANCHORS,
    FULL,
    QUICK,
    Results,
    Sizes,
    machine,
    raise_fd_limit,
    reap_leftovers,
    tail,
    wait_quiet,
)
from loguru import logger
from report import add_ratios, print_table, targets, write_json
from workloads import run_w1, run_w2, run_w3, run_w3b, run_w4, run_w5

WORKLOADS = ("w1", "w2", "w3", "w4", "w5")


async def _guarded(res: Results, what: str, run: int, coro) -> None:
    """A workload that fails is noted and the suite goes on; Ctrl-C still stops it all."""
    try:
        await coro
    except Exception as exc:
        res.note(f"run {run}: {what} failed: {type(exc).__name__}: {tail(str(exc), 8)}")


async def run_all(args: argparse.Namespace, sz: Sizes, only: set[str], res: Results,
                  anchors: Anchors | None) -> None:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)  # like Ctrl-C: clean up, stop
    with tempfile.TemporaryDirectory(prefix="ceylon-bench-") as tmp:
        for run in range(1, args.runs + 1):
            workdir = Path(tmp) / f"run{run}"
            workdir.mkdir()
            tag = f"[run {run}/{args.runs}]"
            if args.wait_quiet > 0:
                await wait_quiet(args.wait_quiet, res, tag)
            if "w1" in only:
                await _guarded(res, "W1", run, run_w1(sz, res, run, tag, workdir))
            if "w5" in only:
                await _guarded(res, "W5", run, run_w5(sz, res, run, tag, workdir))
            if "w2" in only:
                await _guarded(res, "W2", run, run_w2(sz, res, run, tag, workdir))
            if "w3" in only:
                await _guarded(res, "W3", run, run_w3(sz, res, run, tag, workdir))
                await _guarded(res, "W3b", run, run_w3b(sz, res, run, tag, workdir))
            if "w4" in only:
                await _guarded(res, "W4", run, run_w4(sz, res, run, tag, workdir))
            if anchors is None:
                continue
            want_w1, want_w2 = bool({"w1", "w5"} & only), "w2" in only
            await _guarded(res, "the ceiling", run,
                           run_ceiling(sz, anchors, res, run, tag, want_w1, want_w2))
            if (want_w1 or want_w2) and anchors.has_dask:
                await _guarded(res, "Dask", run, run_dask(sz, anchors, res, run, tag))
            if (want_w1 or want_w2) and anchors.has_celery:
                await _guarded(res, "Celery", run,
                               run_celery(sz, anchors, res, run, tag, workdir))
            if (want_w1 or want_w2) and anchors.has_ray:
                await _guarded(res, "Ray", run, run_ray(sz, anchors, res, run, tag))


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.replace("_", "")) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Sizes, set[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Workloads:\n" + __doc__.split("\n\n")[2])
    p.add_argument("--runs", type=int, default=None,
                   help="fresh runs of every figure; the median is shown (default 3, "
                        "1 with --quick)")
    p.add_argument("--only", default=",".join(WORKLOADS),
                   help="comma-separated workloads among w1,w2,w3,w4,w5 (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a smoke run (W1 1k/5k, W2 300, W4 100 agents and 10k "
                        "queued, W5 5k)")
    p.add_argument("--compare", action="store_true",
                   help="also run the anchors: bench_zmq_ceiling.py, and bench_dask.py / "
                        "bench_celery.py / bench_ray.py where installed")
    p.add_argument("--json", metavar="FILE", help="write every figure and verdict to FILE")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each run, wait up to SECONDS for the CPUs to be < 15%% busy "
                        "(others' load skews every figure; default: do not wait)")
    p.add_argument("--anchors", default=str(DEFAULT_ANCHORS), metavar="DIR",
                   help="directory of the anchor scripts (default: %(default)s)")
    p.add_argument("--anchors-python", metavar="PYTHON",
                   help="interpreter with distributed, celery[redis] and ray for the Dask, "
                        "Celery and Ray scripts (default: $CEYLON_BENCH_ANCHORS_PYTHON, else "
                        "this one)")
    p.add_argument("--w1-tasks", "--tasks", type=_ints, metavar="N,N",
                   help="W1 task counts (default 10000,100000)")
    p.add_argument("--w1-workers", "--workers", type=_ints, metavar="K,K",
                   help="W1 worker processes (default 1,2,4)")
    p.add_argument("--window", "--concurrency", type=int, metavar="W",
                   help="W1/W5: each worker's --concurrency, its credit window (default 8)")
    p.add_argument("--prefetch", type=int, metavar="P",
                   help="W1/W5: the admin's --prefetch, tasks each worker holds queued beyond "
                        "its concurrency (default: the admin's default, adaptive; 0: off)")
    p.add_argument("--dashboard", action="store_true",
                   help="W1: also measure the largest size with a dashboard page open")
    p.add_argument("--w2-count", "--rtt-count", type=int, metavar="N",
                   help="W2: measured round trips (default 2000)")
    p.add_argument("--w2-warmup", "--warmup", type=int, metavar="N",
                   help="W2: round trips before measuring (default 100)")
    p.add_argument("--w4-agents", type=int, metavar="N",
                   help="W4: worker agents in all (default 1000, in 4 processes)")
    p.add_argument("--w4-queued", type=int, metavar="N", help="W4: tasks queued (default 100000)")
    p.add_argument("--w5-tasks", type=int, metavar="N", help="W5: tasks (default 100000)")
    args = p.parse_args(argv)
    only = {w.strip().lower() for w in args.only.split(",") if w.strip()}
    if not only or only - set(WORKLOADS):
        p.error(f"--only takes a comma-separated subset of {','.join(WORKLOADS)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        p.error("--runs must be at least 1")
    sz = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.w1_tasks:
        changes["w1_tasks"] = args.w1_tasks
        changes["ceiling_tasks"] = max(args.w1_tasks)
    if args.w1_workers:
        changes["w1_workers"] = args.w1_workers
    for name, key in (("window", "window"), ("w2_count", "w2_count"),
                      ("w2_warmup", "w2_warmup"), ("w4_queued", "w4_queued"),
                      ("w5_tasks", "w5_tasks")):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name == "w2_warmup" else 1):
                p.error(f"--{name.replace('_', '-')} is too small: {value}")
            changes[key] = value
    if args.dashboard:
        changes["dashboard"] = True
    if args.prefetch is not None:
        if args.prefetch < 0:
            p.error(f"--prefetch is too small: {args.prefetch}")
        changes["prefetch"] = args.prefetch
    if args.w4_agents is not None:
        if args.w4_agents < 1:
            p.error("--w4-agents must be at least 1")
        procs = min(4, args.w4_agents)
        changes["w4_procs"] = procs
        changes["w4_per_proc"] = math.ceil(args.w4_agents / procs)
    if changes:
        sz = Sizes(**{**{k: getattr(sz, k) for k in sz.__dataclass_fields__}, **changes})
    return args, sz, only


def main(argv: Sequence[str] | None = None) -> int:
    args, sz, only = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    raise_fd_limit()
    res = Results()
    info = machine()
    print(f"ceylon_net benchmark {info['date']}: {info['cpus']} CPU(s) {info['cpu']}, "
          f"{info['memory']}, python {info['python']}, commit {info['commit'] or '?'}; "
          f"{args.runs} run(s), workloads {','.join(w for w in WORKLOADS if w in only)}"
          f"{', quick sizes' if args.quick else ''}{', with anchors' if args.compare else ''}",
          flush=True)
    with contextlib.suppress(ValueError, IndexError):
        if float(info["loadavg"].split()[0]) > 0.5:
            res.note(f"load average {info['loadavg']} at the start: something else is using "
                     f"the CPUs, and the figures will show it")
    anchors = find_anchors(args, res) if args.compare else None
    code = 0
    try:
        asyncio.run(run_all(args, sz, only, res, anchors))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; partial results below", file=sys.stderr)
        code = 130
    except Exception as exc:
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        time.sleep(0.05)
        left = reap_leftovers()
        if left:
            print(f"warning: killed {left} leftover child process(es)", file=sys.stderr)
    add_ratios(sz, res)
    tgts = targets(sz, res) if args.compare else []
    print_table(res, tgts)
    if args.json:
        write_json(args.json, args, sz, res, tgts, info)
        print(f"figures written to {args.json}")
    if code == 0 and any(n for n in res.notes if " failed: " in n):
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
