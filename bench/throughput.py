"""Throughput and round-trip benchmark of ceylon_net, optionally beside the raw-pyzmq ceiling.

W1 throughput: an in-process Admin plus K ``ceylon-worker`` processes (credit window W each);
time ``await admin.run_tasks(N no-op tasks)``.
W2 latency: one ``ceylon-worker`` process; N sequential ``await admin.execute(no-op task)``
round trips after a warm-up; p50 / p99 / p99.9.

Every figure is taken over ``--runs`` fresh runs (new admin, new worker processes); the median
is reported with every individual value. ``--compare`` also runs
``../shared/anchors/bench_zmq_ceiling.py`` (one admin, no scheduling, no bookkeeping) in the same
invocation and prints ours / ceiling.

    .venv/bin/python bench/throughput.py [--compare] [--only w1|w2] [--runs 3] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from ceylon_net.admin import Admin
from ceylon_net.errors import ConfigError
from ceylon_net.settings import AdminSettings
from ceylon_net.tasks import Task
from ceylon_net.testing import Cluster, Proc, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
ANCHORS = Path(__file__).resolve().parents[2] / "shared/anchors"
CEILING = ANCHORS / "bench_zmq_ceiling.py"
CEILING_PORT = 7461  # fixed in the ceiling script
CEILING_RTT_ARGS = ("20000", "1", "1", "asyncio")

CONNECT_TIMEOUT = 30.0  # seconds for the workers to register
CLOSE_TIMEOUT = 10.0  # seconds for admin.close()
CEILING_TIMEOUT = 300.0  # seconds for one ceiling subprocess

# Every child process this script started (ours and the ceiling's), so the last-resort cleanup
# in main() can make sure none outlives us, even after a second Ctrl-C.
_STARTED: list[tuple[int, bool]] = []  # (pid, is a process-group leader whose group we own)


# ---------------------------------------------------------------------------- helpers


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def noop(i: int) -> Task:
    return Task(id=i, description="noop", difficulty=1, duration=0.0)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


async def start_admin(cluster: Cluster) -> Admin:
    """An in-process admin on the cluster's ports (picking new ones if they were taken)."""
    for attempt in range(5):
        admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=cluster.port,
                                             pub_port=cluster.pub_port))
        try:
            await admin.start()
            return admin
        except ConfigError:
            if attempt == 4:
                raise
            cluster.port, cluster.pub_port = free_port(), free_port()
    raise AssertionError("unreachable")


async def spawn_workers(cluster: Cluster, count: int, window: int) -> list[Proc]:
    procs = []
    for i in range(count):
        proc = await cluster.worker(f"bench-w{i}", "--time-scale", "0", "--concurrency",
                                    str(window), "--log-level", "WARNING", "--skill", "10")
        _STARTED.append((proc.process.pid, True))  # Cluster starts each in its own session
        procs.append(proc)
    return procs


async def wait_connected(admin: Admin, procs: list[Proc], count: int) -> None:
    def ready() -> bool:
        for p in procs:
            if p.returncode is not None:
                raise RuntimeError(f"worker {p.name} exited with {p.returncode} before "
                                   f"registering:\n{tail(p.stderr())}")
        return len(admin.get_connected_agents()) >= count

    await wait_until(ready, CONNECT_TIMEOUT, f"{count} worker(s) to register")


async def close_admin(admin: Admin) -> None:
    try:
        await asyncio.wait_for(admin.close("benchmark over"), CLOSE_TIMEOUT)
    except TimeoutError:
        print(f"warning: admin.close() took over {CLOSE_TIMEOUT:g} s", file=sys.stderr)


def report_worker_logs(procs: list[Proc]) -> None:
    for p in procs:
        err = p.stderr().strip()
        if err:
            print(f"--- {p.name} stderr (exit {p.returncode}) ---\n{tail(err)}", file=sys.stderr)


# ---------------------------------------------------------------------------- ours


async def ours_w1(tasks: int, workers: int, window: int, workdir: Path) -> float:
    """tasks/s of one fresh run_tasks() of ``tasks`` no-ops over ``workers`` processes."""
    async with Cluster(workdir=workdir) as cluster:
        admin = await start_admin(cluster)
        procs: list[Proc] = []
        try:
            procs = await spawn_workers(cluster, workers, window)
            await wait_connected(admin, procs, workers)
            batch = [noop(i) for i in range(tasks)]
            t0 = time.perf_counter()
            report = await asyncio.wait_for(admin.run_tasks(batch), 60 + tasks / 100)
            elapsed = time.perf_counter() - t0
        except BaseException:
            report_worker_logs(procs)
            raise
        finally:
            await close_admin(admin)
    done = sum(t.success for t in report.tasks)
    if done != tasks or report.unassigned:
        raise RuntimeError(f"W1: {done}/{tasks} tasks succeeded, "
                           f"{len(report.unassigned)} unassigned")
    return tasks / elapsed


async def ours_w2(count: int, warmup: int, workdir: Path) -> list[float]:
    """Round-trip times (µs) of ``count`` sequential execute() calls, after ``warmup``."""
    async with Cluster(workdir=workdir) as cluster:
        admin = await start_admin(cluster)
        procs: list[Proc] = []
        samples: list[float] = []
        try:
            procs = await spawn_workers(cluster, 1, 1)
            await wait_connected(admin, procs, 1)
            clock = time.perf_counter_ns
            async with asyncio.timeout(60 + (warmup + count) * 0.05):
                for i in range(warmup + count):
                    task = noop(i)
                    t0 = clock()
                    result = await admin.execute(task)
                    t1 = clock()
                    if not result.success:
                        raise RuntimeError(f"W2: task {i} failed: {result.error}")
                    if i >= warmup:
                        samples.append((t1 - t0) / 1000)
        except BaseException:
            report_worker_logs(procs)
            raise
        finally:
            await close_admin(admin)
    return samples


# ---------------------------------------------------------------------------- the ceiling


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def ceiling(argv: Sequence[str]) -> float:
    """tasks_per_s printed by one run of the ceiling script."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CEILING), *argv, cwd=str(ANCHORS), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    _STARTED.append((proc.pid, True))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CEILING_TIMEOUT)
    finally:
        # Its multiprocessing workers share its process group: none may outlive a timeout,
        # an error or Ctrl-C.
        _kill_group(proc.pid)
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
    text = out.decode(errors="replace")
    match = re.search(r"tasks_per_s=([0-9.]+)", text)
    if proc.returncode != 0 or match is None:
        hint = f" (is port {CEILING_PORT} in use?)" if b"Address already in use" in err else ""
        raise RuntimeError(f"ceiling {' '.join(argv)} exited {proc.returncode}{hint}:\n"
                           f"{tail(text + err.decode(errors='replace'))}")
    return float(match.group(1))


# ---------------------------------------------------------------------------- driver


@dataclass
class Results:
    w1: list[float] = field(default_factory=list)  # tasks/s
    w1_ceiling: list[float] = field(default_factory=list)  # tasks/s
    w2: list[tuple[float, float, float]] = field(default_factory=list)  # p50, p99, p99.9 µs
    w2_ceiling: list[float] = field(default_factory=list)  # µs per round trip
    notes: list[str] = field(default_factory=list)


async def run_all(args: argparse.Namespace, res: Results, compare: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="ceylon-bench-") as tmp:
        for run in range(1, args.runs + 1):
            workdir = Path(tmp) / f"run{run}"
            workdir.mkdir()
            tag = f"[run {run}/{args.runs}]"
            if args.only in (None, "w1"):
                tps = await ours_w1(args.tasks, args.workers, args.window, workdir)
                res.w1.append(tps)
                print(f"{tag} W1 ceylon_net: {tps:,.0f} tasks/s", flush=True)
                if compare:
                    c = await ceiling([str(args.tasks), str(args.workers), str(args.window),
                                       "asyncio"])
                    res.w1_ceiling.append(c)
                    print(f"{tag} W1 ceiling:    {c:,.0f} tasks/s", flush=True)
            if args.only in (None, "w2"):
                samples = sorted(await ours_w2(args.rtt_count, args.warmup, workdir))
                pcts = (percentile(samples, 50), percentile(samples, 99),
                        percentile(samples, 99.9))
                res.w2.append(pcts)
                print(f"{tag} W2 ceylon_net: p50 {pcts[0]:,.0f} µs, p99 {pcts[1]:,.0f} µs, "
                      f"p99.9 {pcts[2]:,.0f} µs ({len(samples)} round trips)", flush=True)
                if compare:
                    c = await ceiling(CEILING_RTT_ARGS)
                    res.w2_ceiling.append(1e6 / c)
                    print(f"{tag} W2 ceiling:    {1e6 / c:,.0f} µs per round trip "
                          f"({c:,.0f} tasks/s)", flush=True)


def _fmt_runs(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return ", ".join(fmt(v) for v in values)


def print_table(args: argparse.Namespace, res: Results) -> None:
    num = "{:,.0f}".format
    rows: list[tuple[str, str, str]] = []
    if res.w1:
        label = f"W1 throughput, tasks/s (N={args.tasks}, K={args.workers}, W={args.window})"
        rows.append((label, "", ""))
        ours = statistics.median(res.w1)
        rows.append(("  ceylon_net", num(ours), _fmt_runs(res.w1, num)))
        if res.w1_ceiling:
            ceil = statistics.median(res.w1_ceiling)
            rows.append(("  ceiling (raw pyzmq, asyncio)", num(ceil),
                         _fmt_runs(res.w1_ceiling, num)))
            rows.append(("  ratio ours / ceiling", f"{ours / ceil:.3f}",
                         _fmt_runs([a / b for a, b in zip(res.w1, res.w1_ceiling, strict=False)],
                                   "{:.3f}".format)))
    if res.w2:
        label = f"W2 sequential round trip, µs ({args.rtt_count} after {args.warmup} warm-up)"
        rows.append((label, "", ""))
        for i, name in enumerate(("p50", "p99", "p99.9")):
            values = [r[i] for r in res.w2]
            rows.append((f"  ceylon_net {name}", num(statistics.median(values)),
                         _fmt_runs(values, num)))
        if res.w2_ceiling:
            ceil = statistics.median(res.w2_ceiling)
            rows.append(("  ceiling round trip (20000 1 1 asyncio)", num(ceil),
                         _fmt_runs(res.w2_ceiling, num)))
            ours_p50 = statistics.median(r[0] for r in res.w2)
            rows.append(("  ratio ours p50 / ceiling", f"{ours_p50 / ceil:.2f}",
                         _fmt_runs([a[0] / b for a, b in zip(res.w2, res.w2_ceiling,
                                                            strict=False)], "{:.2f}".format)))
    header = ("figure", "median", "each run")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    line = "-" * (sum(widths) + 4)
    print()
    print(f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]}")
    print(line)
    for name, median, runs in rows:
        print(f"{name:<{widths[0]}}  {median:>{widths[1]}}  {runs}")
    print(line)
    for note in res.notes:
        print(note)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000, help="W1: no-op tasks per run (N)")
    p.add_argument("--workers", type=int, default=4, help="W1: worker processes (K)")
    p.add_argument("--window", type=int, default=8,
                   help="W1: each worker's --concurrency, its credit window (W)")
    p.add_argument("--rtt-count", type=int, default=2000, help="W2: measured round trips")
    p.add_argument("--warmup", type=int, default=100, help="W2: round trips not measured")
    p.add_argument("--runs", type=int, default=3, help="fresh runs per figure (median shown)")
    p.add_argument("--compare", action="store_true",
                   help=f"also run the raw-pyzmq ceiling ({CEILING})")
    p.add_argument("--only", choices=("w1", "w2"), help="run one workload only")
    args = p.parse_args(argv)
    for name in ("tasks", "workers", "window", "rtt_count", "runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def _reap_leftovers() -> int:
    """Last resort: SIGKILL any child of ours still running (only our own, unreaped children
    and the process groups we created for them). Returns how many were still running."""
    left = 0
    for pid, group in _STARTED:
        try:
            running = os.waitpid(pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:  # already reaped
            running = False
        if running:  # still our unreaped child, so the pid cannot have been reused
            left += 1
            if group:
                _kill_group(pid)  # with the ceiling's multiprocessing workers, if any
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return left


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")

    compare = args.compare
    res = Results()
    if compare and not CEILING.exists():
        compare = False
        res.notes.append(f"--compare skipped: {CEILING} not found")
        print(f"note: {CEILING} not found; running without the ceiling comparison", flush=True)

    print(f"ceylon_net benchmark: python {platform.python_version()}, {os.cpu_count()} CPU(s), "
          f"{args.runs} run(s){', with ceiling' if compare else ''}", flush=True)
    code = 0
    try:
        asyncio.run(run_all(args, res, compare))
    except KeyboardInterrupt:
        print("\ninterrupted" + ("; partial results below" if res.w1 or res.w2 else ""),
              file=sys.stderr)
        code = 130
    except Exception as exc:
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        time.sleep(0.05)
        left = _reap_leftovers()
        if left:
            print(f"warning: killed {left} leftover child process(es)", file=sys.stderr)
    if res.w1 or res.w2:
        print_table(args, res)
    return code


if __name__ == "__main__":
    sys.exit(main())
