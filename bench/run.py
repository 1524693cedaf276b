"""The ceylon_net benchmark suite (issue 7): W1-W5, and with --compare the anchors beside them.

    .venv/bin/python bench/run.py --compare          # everything, 3 runs, medians + each run
    .venv/bin/python bench/run.py --quick --runs 1   # a smoke run with small sizes
    .venv/bin/python bench/run.py --only w1,w2 --json figures.json

W1 throughput  no-op tasks through an in-process Admin and K ``ceylon-worker`` processes.
W2 latency     sequential ``await admin.execute(no-op)`` round trips: p50 / p99 / p99.9.
W3 sleep       200 tasks of 10 ms on 4 workers x concurrency 8: wall time over the ideal.
W4 scale       1,000 worker agents (bench/many_workers.py) on a ``ceylon-admin`` process:
               its CPU while idle, then its RSS with 100,000 tasks queued that no one can take.
W5 durability  W1 (4 workers) with the SQLite journal on, as a fraction of W1 without it.

Every figure is taken ``--runs`` times on fresh processes; the table shows the median and each
run. ``--compare`` runs ../shared/anchors (the raw pyzmq ceiling; Dask and Celery where
installed) in the same invocation, prints ours / theirs, and checks the issue's targets.
Every process started here is gone when this script ends, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from ceylon_net.core.tasks import Task
from ceylon_net.dev.testing import Cluster, Proc, free_port, wait_until
from ceylon_net.edge.admin import Admin
from ceylon_net.edge.client import ask_status, submit
from ceylon_net.errors import AdminUnreachableError, ConfigError
from ceylon_net.settings import AdminSettings

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
DEFAULT_ANCHORS = REPO_ROOT.parent / "shared" / "anchors"
MANY_WORKERS = BENCH / "many_workers.py"
CEILING_PORT = 7461  # fixed in bench_zmq_ceiling.py
REDIS_PORT = 6390  # fixed in celery_app.py

CONNECT_TIMEOUT = 30.0  # seconds for worker processes to register
CLOSE_TIMEOUT = 10.0  # seconds for admin.close()
ANCHOR_TIMEOUT = 900.0  # seconds for one anchor script
SUBMIT_CHUNK = 10_000  # tasks per ceylon-submit message (the admin takes frames up to 1 MiB)

# Every child process started here, for the last-resort cleanup in main(): (pid, True when it
# leads a process group of its own that we created, whose members must go with it).
_STARTED: list[tuple[int, bool]] = []


# ---------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    w1_tasks: tuple[int, ...] = (10_000, 100_000)
    w1_workers: tuple[int, ...] = (1, 2, 4)
    window: int = 8
    prefetch: int = 0  # W1/W5: the admin's --prefetch
    w2_count: int = 2000
    w2_warmup: int = 100
    w3_tasks: int = 200
    w3_seconds: float = 0.01
    w3_workers: int = 4
    w3_concurrency: int = 8
    w4_procs: int = 4
    w4_per_proc: int = 250
    w4_idle: float = 10.0
    w4_queued: int = 100_000
    w5_tasks: int = 100_000
    ceiling_tasks: int = 100_000
    ceiling_rtt: int = 20_000
    peer_tasks: int = 10_000  # Dask and Celery, as in ../shared/anchors/README.md

    @property
    def w4_workers(self) -> int:
        return self.w4_procs * self.w4_per_proc


FULL = Sizes()
QUICK = Sizes(w1_tasks=(1000, 5000), w2_count=300, w2_warmup=30, w4_procs=2, w4_per_proc=50,
              w4_idle=3.0, w4_queued=10_000, w5_tasks=5000, ceiling_tasks=5000,
              ceiling_rtt=2000, peer_tasks=1000)


# ---------------------------------------------------------------------------- figures


@dataclass
class Figure:
    key: str
    section: str
    label: str
    fmt: Callable[[float], str]
    runs: dict[int, float] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs.values()) if self.runs else None


def _num(v: float) -> str:
    return f"{v:,.0f}"


def _one(v: float) -> str:
    return f"{v:,.1f}"


def _ratio(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:,.1f}"


def _pct(v: float) -> str:
    return f"{v:.1f} %"


class Results:
    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.notes: list[str] = []
        self.foreign_load: list[dict[str, Any]] = []

    def put(self, key: str, run: int, value: float, section: str, label: str,
            fmt: Callable[[float], str] = _num) -> None:
        fig = self.figures.get(key)
        if fig is None:
            fig = self.figures[key] = Figure(key, section, label, fmt)
        fig.runs[run] = value

    def get(self, key: str, run: int) -> float | None:
        fig = self.figures.get(key)
        return None if fig is None else fig.runs.get(run)

    def median(self, key: str) -> float | None:
        fig = self.figures.get(key)
        return None if fig is None else fig.median

    def ratio(self, key: str, num: str, den: str, section: str, label: str,
              fmt: Callable[[float], str] = _ratio) -> None:
        """``num / den`` per run where both were measured in that run."""
        a, b = self.figures.get(num), self.figures.get(den)
        if a is None or b is None:
            return
        for run, x in a.runs.items():
            y = b.runs.get(run)
            if y:
                self.put(key, run, x / y, section, label, fmt)

    def foreign(self, run: int, what: str, measured: tuple[float, float]) -> None:
        """Others' CPU during one measurement; above 10 % of the machine over at least a
        second, it is noted."""
        fraction, seconds = measured
        self.foreign_load.append({"run": run, "what": what, "fraction": round(fraction, 3),
                                  "seconds": round(seconds, 2)})
        if fraction > 0.10 and seconds >= 1.0:
            self.note(f"run {run}, {what}: other processes used {fraction:.0%} of the CPUs "
                      f"meanwhile")

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print(f"note: {text}", flush=True)


# ---------------------------------------------------------------------------- helpers


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def noop(i: int) -> Task:
    return Task(id=i, description="noop", difficulty=1, duration=0.0)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (from /proc/PID/stat)."""
    data = Path(f"/proc/{pid}/stat").read_text()
    fields = data[data.rindex(")") + 2:].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


def _proc_ticks(pid: int) -> int:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


class ForeignLoad:
    """CPU used by processes that are not ours during a measurement, as a fraction of all
    CPUs: the machine's busy time (/proc/stat) less our processes' (/proc/PID/stat)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.started = time.monotonic()
        self.busy0, self.total0 = _cpu_ticks()
        self.own0 = sum(_proc_ticks(p) for p in self.pids)

    def stop(self) -> tuple[float, float]:
        """(others' fraction of all CPUs, seconds measured); at 100 ticks a second, a window
        under a second says little."""
        busy1, total1 = _cpu_ticks()
        own1 = sum(_proc_ticks(p) for p in self.pids)
        fraction = max(0.0, ((busy1 - self.busy0) - (own1 - self.own0)) /
                       max(1, total1 - self.total0))
        return fraction, time.monotonic() - self.started


async def machine_busy(seconds: float = 3.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (between measurements: someone else)."""
    b0, t0 = _cpu_ticks()
    await asyncio.sleep(seconds)
    b1, t1 = _cpu_ticks()
    return (b1 - b0) / max(1, t1 - t0)


async def wait_quiet(limit: float, res: Results, tag: str) -> None:
    """Wait up to ``limit`` s until the CPUs are less than 15 % busy (we run nothing now)."""
    deadline = time.monotonic() + limit
    said = 0.0
    while True:
        busy = await machine_busy()
        if busy < 0.15:
            print(f"{tag} machine quiet: {busy:.0%} of the CPUs busy", flush=True)
            return
        if time.monotonic() >= deadline:
            res.note(f"{tag} the machine was still {busy:.0%} busy after --wait-quiet "
                     f"{limit:g} s: this run's figures include someone else's load")
            return
        if time.monotonic() - said > 30:
            said = time.monotonic()
            print(f"{tag} waiting for a quiet machine: {busy:.0%} of the CPUs busy",
                  flush=True)


def port_free(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def raise_fd_limit() -> None:
    """W4's admin holds two sockets per worker agent; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def start_admin(cluster: Cluster, journal: Path | None = None, prefetch: int = 0
                      ) -> Admin:
    """An in-process admin on the cluster's ports (picking new ones if they were taken)."""
    for attempt in range(5):
        admin = Admin(settings=AdminSettings(
            bind="127.0.0.1", port=cluster.port, pub_port=cluster.pub_port,
            journal=None if journal is None else str(journal), prefetch=prefetch))
        try:
            await admin.start()
            return admin
        except ConfigError:
            if attempt == 4:
                raise
            cluster.port, cluster.pub_port = free_port(), free_port()
    raise AssertionError("unreachable")


async def spawn(cluster: Cluster, name: str, argv: Sequence[str]) -> Proc:
    proc = await cluster.spawn(name, argv)
    _STARTED.append((proc.process.pid, True))  # Cluster starts each in a session of its own
    return proc


async def spawn_workers(cluster: Cluster, count: int, concurrency: int) -> list[Proc]:
    procs = []
    for i in range(count):
        proc = await cluster.worker(f"bench-w{i}", "--time-scale", "0", "--concurrency",
                                    str(concurrency), "--log-level", "WARNING", "--skill", "10")
        _STARTED.append((proc.process.pid, True))
        procs.append(proc)
    return procs


def check_alive(procs: Sequence[Proc]) -> None:
    for p in procs:
        if p.returncode is not None:
            raise RuntimeError(f"{p.name} exited with {p.returncode}:\n{tail(p.stderr())}")


async def wait_connected(admin: Admin, procs: list[Proc], count: int) -> None:
    def ready() -> bool:
        check_alive(procs)
        return len(admin.get_connected_agents()) >= count

    await wait_until(ready, CONNECT_TIMEOUT, f"{count} worker(s) to register")


async def close_admin(admin: Admin) -> None:
    try:
        await asyncio.wait_for(admin.close("benchmark over"), CLOSE_TIMEOUT)
    except TimeoutError:
        print(f"warning: admin.close() took over {CLOSE_TIMEOUT:g} s", file=sys.stderr)


def report_logs(procs: Sequence[Proc]) -> None:
    for p in procs:
        with contextlib.suppress(OSError):
            err = p.stderr().strip()
            if err:
                print(f"--- {p.name} stderr (exit {p.returncode}) ---\n{tail(err)}",
                      file=sys.stderr)


# ---------------------------------------------------------------------------- W1, W5


async def w1_once(tasks: int, workers: int, window: int, workdir: Path,
                  journal: Path | None = None, res: Results | None = None, run: int = 0,
                  what: str = "W1", prefetch: int = 0) -> float:
    """tasks/s of one run_tasks() of ``tasks`` no-ops over ``workers`` fresh processes, from
    submit to the last result."""
    async with Cluster(workdir=workdir) as cluster:
        admin = await start_admin(cluster, journal, prefetch)
        procs: list[Proc] = []
        try:
            procs = await spawn_workers(cluster, workers, window)
            await wait_connected(admin, procs, workers)
            batch = [noop(i) for i in range(tasks)]
            load = ForeignLoad([os.getpid(), *(p.process.pid for p in procs)])
            t0 = time.perf_counter()
            report = await asyncio.wait_for(admin.run_tasks(batch), 60 + tasks / 200)
            elapsed = time.perf_counter() - t0
            if res is not None:
                res.foreign(run, what, load.stop())
        except BaseException:
            report_logs(procs)
            raise
        finally:
            await close_admin(admin)
    done = sum(t.success for t in report.tasks)
    if done != tasks or report.unassigned:
        raise RuntimeError(f"{done}/{tasks} tasks succeeded, {len(report.unassigned)} "
                           f"unassigned")
    return tasks / elapsed


def w1_key(tasks: int, workers: int) -> str:
    return f"w1.{tasks}.{workers}"


async def run_w1(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    for n in sz.w1_tasks:
        for k in sz.w1_workers:
            tps = await w1_once(n, k, sz.window, workdir, res=res, run=run,
                                what=f"W1 N={n:,} K={k}", prefetch=sz.prefetch)
            res.put(w1_key(n, k), run, tps, "W1 throughput, tasks/s (no-op, submit to last "
                    f"result, concurrency {sz.window}"
                    f"{f', --prefetch {sz.prefetch}' if sz.prefetch else ''})",
                    f"N={n:,}, {k} worker process{'es' if k > 1 else ''}")
            print(f"{tag} W1 N={n:,} K={k}: {tps:,.0f} tasks/s", flush=True)


async def run_w5(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    n, k = sz.w5_tasks, 4
    section = f"W5 durability (N={n:,}, 4 worker processes)"
    base = res.get(w1_key(n, k), run)
    if base is None:  # W1 did not measure this size in this run: measure the baseline here
        base = await w1_once(n, k, sz.window, workdir, res=res, run=run, what="W5 baseline",
                             prefetch=sz.prefetch)
        res.put(w1_key(n, k), run, base, section, "without journal, tasks/s")
    path = workdir / f"journal-{run}.sqlite"
    try:
        tps = await w1_once(n, k, sz.window, workdir, journal=path, res=res, run=run,
                            what="W5 journal", prefetch=sz.prefetch)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    res.put("w5.journal", run, tps, section, "with --journal, tasks/s")
    res.put("w5.ratio", run, tps / base, section, "journal / no journal", _ratio)
    print(f"{tag} W5 N={n:,} K=4 journal: {tps:,.0f} tasks/s ({tps / base:.2f} of "
          f"{base:,.0f} without)", flush=True)


# ---------------------------------------------------------------------------- W2


async def run_w2(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    async with Cluster(workdir=workdir) as cluster:
        admin = await start_admin(cluster)
        procs: list[Proc] = []
        samples: list[float] = []
        try:
            procs = await spawn_workers(cluster, 1, 1)
            await wait_connected(admin, procs, 1)
            clock = time.perf_counter_ns
            load = ForeignLoad([os.getpid(), *(p.process.pid for p in procs)])
            async with asyncio.timeout(60 + (sz.w2_warmup + sz.w2_count) * 0.05):
                for i in range(sz.w2_warmup + sz.w2_count):
                    t0 = clock()
                    result = await admin.execute(noop(i))
                    t1 = clock()
                    if not result.success:
                        raise RuntimeError(f"task {i} failed: {result.error}")
                    if i >= sz.w2_warmup:
                        samples.append((t1 - t0) / 1000)
            res.foreign(run, "W2", load.stop())
        except BaseException:
            report_logs(procs)
            raise
        finally:
            await close_admin(admin)
    samples.sort()
    section = (f"W2 latency, µs (execute() round trip, {sz.w2_count:,} after "
               f"{sz.w2_warmup} warm-up, 1 worker)")
    values = [percentile(samples, p) for p in (50, 99, 99.9)]
    for name, v in zip(("p50", "p99", "p99.9"), values, strict=True):
        res.put(f"w2.{name}", run, v, section, name)
    print(f"{tag} W2: p50 {values[0]:,.0f} µs, p99 {values[1]:,.0f} µs, "
          f"p99.9 {values[2]:,.0f} µs", flush=True)


# ---------------------------------------------------------------------------- W3


async def run_w3(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    k, c, n, d = sz.w3_workers, sz.w3_concurrency, sz.w3_tasks, sz.w3_seconds
    async with Cluster(workdir=workdir) as cluster:
        admin = await start_admin(cluster)
        procs: list[Proc] = []
        try:
            procs = await spawn_workers(cluster, k, c)
            await wait_connected(admin, procs, k)
            # Warm-up: every worker has taken tasks before the clock starts.
            await asyncio.wait_for(admin.run_tasks([noop(-1 - i) for i in range(k * c)]), 60)
            batch = [Task(id=i, description="sleep", difficulty=1, duration=d)
                     for i in range(n)]
            load = ForeignLoad([os.getpid(), *(p.process.pid for p in procs)])
            t0 = time.perf_counter()
            report = await asyncio.wait_for(admin.run_tasks(batch), 60 + n * d)
            wall = time.perf_counter() - t0
            res.foreign(run, "W3", load.stop())
        except BaseException:
            report_logs(procs)
            raise
        finally:
            await close_admin(admin)
    succeeded = {t.id for t in report.tasks if t.success}
    missing = [i for i in range(n) if i not in succeeded]
    if missing:
        raise RuntimeError(f"{len(missing)} of {n} sleep tasks did not succeed")
    ideal = n * d / (k * c)
    section = f"W3 sleep tasks ({n} x {d * 1000:g} ms, {k} workers x concurrency {c})"
    res.put("w3.wall", run, wall * 1000, section, "wall time, ms", _one)
    res.put("w3.ideal", run, ideal * 1000, section, "ideal, ms", _one)
    res.put("w3.ratio", run, wall / ideal, section, "wall / ideal", _ratio)
    print(f"{tag} W3: {wall * 1000:,.1f} ms, ideal {ideal * 1000:.1f} ms: "
          f"{wall / ideal:.3f} x ideal", flush=True)


# ---------------------------------------------------------------------------- W4


async def _status(endpoint: str, timeout: float = 10.0) -> dict[str, Any]:
    return await ask_status(endpoint, "default", timeout)


async def run_w4(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    total = sz.w4_workers
    section = (f"W4 scale ({total:,} worker agents in {sz.w4_procs} processes, heartbeat 1 s; "
               f"ceylon-admin process)")
    async with Cluster(workdir=workdir) as cluster:
        admin = await cluster.admin("--log-level", "WARNING", "--unassignable-timeout",
                                    "86400", name="w4-admin")
        _STARTED.append((admin.process.pid, True))
        procs = [admin]
        try:
            endpoint = f"tcp://127.0.0.1:{cluster.port}"

            async def answering() -> bool:
                check_alive(procs)
                try:
                    await _status(endpoint, 1.0)
                    return True
                except AdminUnreachableError:
                    return False

            await wait_until(answering, 30, "ceylon-admin to answer", interval=0.1)
            t_join = time.monotonic()
            for i in range(sz.w4_procs):
                procs.append(await spawn(cluster, f"w4-helper{i}", [
                    sys.executable, str(MANY_WORKERS), "--port", str(cluster.port),
                    "--count", str(sz.w4_per_proc), "--prefix", f"h{i}-", "--role", "bench",
                    "--connect-timeout", "180", "--max-seconds", "900"]))
            connected = 0

            async def all_joined() -> bool:
                nonlocal connected
                check_alive(procs)
                connected = len((await _status(endpoint))["workers"])
                return connected >= total

            await wait_until(all_joined, 180, f"{total} worker agents to register", interval=1)
            join_s = time.monotonic() - t_join
            await asyncio.sleep(2.0)  # the join burst is over, every agent is beating
            pid = admin.process.pid
            load = ForeignLoad([os.getpid(), *(p.process.pid for p in procs)])
            cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(sz.w4_idle)
            cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
            res.foreign(run, "W4 idle", load.stop())
            idle_cpu = (cpu1 - cpu0) / (t1 - t0) * 100
            rss_idle = proc_rss_mib(pid)
            check_alive(procs)
            still = len((await _status(endpoint))["workers"])

            # 100k tasks for a role no agent has: all stay queued, none is ever assigned.
            ts = time.monotonic()
            for start in range(0, sz.w4_queued, SUBMIT_CHUNK):
                doc = {"tasks": [{"id": i, "description": "queued", "difficulty": 1,
                                  "required_role": "nobody"}
                                 for i in range(start, min(start + SUBMIT_CHUNK, sz.w4_queued))]}
                await submit(endpoint, "default", doc, wait=False, sequential=False,
                             connect_timeout=60)
            submit_s = time.monotonic() - ts
            await asyncio.sleep(2.0)
            counts = (await _status(endpoint, 30))["counts"]
            if counts["queued"] != sz.w4_queued:
                raise RuntimeError(f"W4: {counts['queued']} tasks queued, expected "
                                   f"{sz.w4_queued}: {counts}")
            cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(min(5.0, sz.w4_idle))
            cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
            queued_cpu = (cpu1 - cpu0) / (t1 - t0) * 100
            rss_queued = proc_rss_mib(pid)
            peak = proc_rss_mib(pid, "VmHWM")
            check_alive(procs)
        except BaseException:
            report_logs(procs)
            raise
    res.put("w4.join", run, join_s, section, f"time for {total:,} agents to register, s", _one)
    res.put("w4.connected", run, still, section, f"agents still connected after {sz.w4_idle:g} s")
    res.put("w4.idle_cpu", run, idle_cpu, section,
            f"admin CPU while idle ({sz.w4_idle:g} s), % of one core", _pct)
    res.put("w4.rss_idle", run, rss_idle, section, "admin RSS idle, MiB", _one)
    res.put("w4.submit", run, sz.w4_queued / submit_s, section,
            f"ceylon-submit of {sz.w4_queued:,} tasks ({SUBMIT_CHUNK:,} per batch), tasks/s")
    res.put("w4.queued_cpu", run, queued_cpu, section,
            f"admin CPU with {sz.w4_queued:,} queued, % of one core", _pct)
    res.put("w4.rss_queued", run, rss_queued, section,
            f"admin RSS with {sz.w4_queued:,} queued, MiB", _one)
    res.put("w4.rss_peak", run, peak, section, "admin peak RSS (VmHWM), MiB", _one)
    print(f"{tag} W4: {still}/{total} agents (joined in {join_s:.1f} s), idle CPU "
          f"{idle_cpu:.1f} %, RSS {rss_idle:.1f} MiB; {sz.w4_queued:,} queued: RSS "
          f"{rss_queued:.1f} MiB, CPU {queued_cpu:.1f} %", flush=True)


# ---------------------------------------------------------------------------- anchors


@dataclass
class Anchors:
    directory: Path
    python: str  # interpreter for the Dask and Celery scripts
    has_dask: bool = False
    has_celery: bool = False
    redis: str | None = None


def _has_module(python: str, module: str) -> bool:
    try:
        return subprocess.run([python, "-c", f"import {module}"], capture_output=True,
                              timeout=120, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_anchors(args: argparse.Namespace, res: Results) -> Anchors | None:
    directory = Path(args.anchors)
    if not (directory / "bench_zmq_ceiling.py").exists():
        res.note(f"--compare skipped: no bench_zmq_ceiling.py in {directory}")
        return None
    python = args.anchors_python or os.environ.get("CEYLON_BENCH_ANCHORS_PYTHON") \
        or sys.executable
    a = Anchors(directory, python)
    a.has_dask = _has_module(python, "distributed")
    if not a.has_dask:
        res.note(f"Dask skipped: 'distributed' is not installed for {python} "
                 f"(see bench/README.md, --anchors-python)")
    a.has_celery = _has_module(python, "celery") and _has_module(python, "redis")
    a.redis = shutil.which("redis-server")
    if not a.has_celery:
        res.note(f"Celery skipped: 'celery[redis]' is not installed for {python} "
                 f"(see bench/README.md, --anchors-python)")
    elif a.redis is None:
        a.has_celery = False
        res.note("Celery skipped: no redis-server on PATH (apt-get install redis-server)")
    return a


async def run_script(argv: Sequence[str], cwd: Path, what: str, timeout: float = ANCHOR_TIMEOUT
                     ) -> str:
    """Run an anchor script in a process group of its own; its stdout. Nothing it started
    outlives it (a timeout, an error or Ctrl-C included)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    _STARTED.append((proc.pid, True))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        _kill_group(proc.pid)  # its multiprocessing / LocalCluster children too
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}:\n"
                           f"{tail(text + err.decode(errors='replace'))}")
    return text


def _field(text: str, name: str, what: str) -> float:
    match = re.search(rf"\b{name}=([0-9.]+)", text)
    if match is None:
        raise RuntimeError(f"{what}: no {name}= in its output:\n{tail(text)}")
    return float(match.group(1))


async def ceiling(a: Anchors, argv: Sequence[str]) -> float:
    """tasks/s of one run of bench_zmq_ceiling.py (with our interpreter: same pyzmq)."""
    what = f"bench_zmq_ceiling.py {' '.join(argv)}"
    if not port_free(CEILING_PORT):
        raise RuntimeError(f"{what}: port {CEILING_PORT} (fixed in the script) is in use")
    text = await run_script([sys.executable, str(a.directory / "bench_zmq_ceiling.py"), *argv],
                            a.directory, what)
    return _field(text, "tasks_per_s", what)


async def run_ceiling(sz: Sizes, a: Anchors, res: Results, run: int, tag: str,
                      want_w1: bool, want_w2: bool) -> None:
    n = str(sz.ceiling_tasks)
    section = "Ceiling: raw pyzmq + msgpack admin, no scheduling (bench_zmq_ceiling.py)"
    if want_w1:
        for key, argv, label in (
                ("ceiling.async", (n, "4", "8", "asyncio"), "asyncio, 1 task/message"),
                ("ceiling.sync", (n, "4", "8", "sync"), "blocking sockets, 1 task/message"),
                ("ceiling.batch16", (n, "4", "64", "asyncio", "16"),
                 "asyncio, 16 tasks/message, window 64")):
            tps = await ceiling(a, argv)
            res.put(key, run, tps, section, f"{' '.join(argv)}: {label}, tasks/s")
            print(f"{tag} ceiling {' '.join(argv)}: {tps:,.0f} tasks/s", flush=True)
    if want_w2:
        argv = (str(sz.ceiling_rtt), "1", "1", "asyncio")
        tps = await ceiling(a, argv)
        res.put("ceiling.rtt", run, 1e6 / tps, section,
                f"{' '.join(argv)}: round trip, µs")
        print(f"{tag} ceiling {' '.join(argv)}: {1e6 / tps:,.0f} µs per round trip",
              flush=True)


async def run_dask(sz: Sizes, a: Anchors, res: Results, run: int, tag: str) -> None:
    what = "bench_dask.py"
    text = await run_script([a.python, str(a.directory / "bench_dask.py"), str(sz.peer_tasks),
                             "4"], a.directory, what)
    section = f"Dask distributed (bench_dask.py {sz.peer_tasks} 4)"
    tps, p50, p99 = (_field(text, f, what) for f in ("tasks_per_s", "p50_us", "p99_us"))
    res.put("dask.w1", run, tps, section, f"W1 N={sz.peer_tasks:,}, 4 processes, tasks/s")
    res.put("dask.p50", run, p50, section, "W2 p50, µs (500 round trips)")
    res.put("dask.p99", run, p99, section, "W2 p99, µs")
    print(f"{tag} Dask: {tps:,.0f} tasks/s, p50 {p50:,.0f} µs, p99 {p99:,.0f} µs", flush=True)


async def _wait_redis(port: int, proc: asyncio.subprocess.Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"redis-server exited {proc.returncode}")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 1)
            writer.write(b"PING\r\n")
            line = await asyncio.wait_for(reader.readline(), 1)
            writer.close()
            if line.startswith(b"+PONG"):
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"redis-server did not answer on port {port} within {timeout:g} s")


async def _stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    _kill_group(proc.pid)  # whatever is left of the group (prefork children included)
    if proc.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)


async def run_celery(sz: Sizes, a: Anchors, res: Results, run: int, tag: str,
                     workdir: Path) -> None:
    """A fresh redis-server and ``celery worker -c 4`` for each run, gone right after it."""
    if not port_free(REDIS_PORT):
        raise RuntimeError(f"port {REDIS_PORT} (fixed in celery_app.py) is in use")
    assert a.redis is not None
    logs = []
    redis = worker = None
    try:
        log = (workdir / "redis.log").open("wb")
        logs.append(log)
        redis = await asyncio.create_subprocess_exec(
            a.redis, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir), stdin=asyncio.subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True)
        _STARTED.append((redis.pid, True))
        await _wait_redis(REDIS_PORT, redis, 20)
        celery = Path(a.python).parent / "celery"
        log = (workdir / "celery.log").open("wb")
        logs.append(log)
        argv = [str(celery)] if celery.exists() else [a.python, "-m", "celery"]
        worker = await asyncio.create_subprocess_exec(
            *argv, "-A", "celery_app", "worker", "-c", "4", "-P", "prefork", "--loglevel",
            "WARNING", cwd=str(a.directory), stdin=asyncio.subprocess.DEVNULL, stdout=log,
            stderr=log, start_new_session=True)
        _STARTED.append((worker.pid, True))
        what = "bench_celery.py"
        text = await run_script([a.python, str(a.directory / "bench_celery.py"),
                                 str(sz.peer_tasks)], a.directory, what)
    finally:
        if worker is not None:
            await _stop_group(worker, 10)
        if redis is not None:
            await _stop_group(redis, 5)
        for log in logs:
            log.close()
    section = f"Celery + Redis (bench_celery.py {sz.peer_tasks}, worker -c 4 prefork)"
    tps, p50, p99 = (_field(text, f, what) for f in ("tasks_per_s", "p50_us", "p99_us"))
    res.put("celery.w1", run, tps, section, f"W1 N={sz.peer_tasks:,}, 4 processes, tasks/s")
    res.put("celery.p50", run, p50, section, "W2 p50, µs (300 round trips)")
    res.put("celery.p99", run, p99, section, "W2 p99, µs")
    print(f"{tag} Celery: {tps:,.0f} tasks/s, p50 {p50:,.0f} µs, p99 {p99:,.0f} µs",
          flush=True)


# ---------------------------------------------------------------------------- driver

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


def add_ratios(sz: Sizes, res: Results) -> None:
    n = max(sz.w1_tasks)
    ours = w1_key(n, 4)
    sec = f"Ratios (ours / theirs, per run; W1 = N={n:,}, 4 worker processes)"
    res.ratio("r.ceiling", ours, "ceiling.async", sec, "W1 / ceiling asyncio 1 task/message")
    res.ratio("r.ceiling_sync", ours, "ceiling.sync", sec,
              "W1 / ceiling blocking 1 task/message")
    res.ratio("r.ceiling_batch", ours, "ceiling.batch16", sec, "W1 / ceiling 16 tasks/message")
    res.ratio("r.dask", ours, "dask.w1", sec, f"W1 / Dask (Dask at N={sz.peer_tasks:,})")
    res.ratio("r.celery", ours, "celery.w1", sec,
              f"W1 / Celery (Celery at N={sz.peer_tasks:,})")
    res.ratio("r.w2_ceiling", "w2.p50", "ceiling.rtt", sec,
              "W2 p50 / ceiling round trip (lower is better)")
    res.ratio("r.w2_dask", "w2.p50", "dask.p50", sec, "W2 p50 / Dask p50 (lower is better)")
    res.ratio("r.w2_celery", "w2.p50", "celery.p50", sec,
              "W2 p50 / Celery p50 (lower is better)")


@dataclass
class Target:
    text: str
    value: float | None
    ok: bool | None  # None: not measured
    shown: str


def targets(sz: Sizes, res: Results) -> list[Target]:
    """The issue's targets, checked on this run's medians."""
    n = max(sz.w1_tasks)
    out: list[Target] = []

    def check(text: str, key: str, op: str, limit: float | None,
              fmt: Callable[[float], str]) -> None:
        v = res.median(key)
        if v is None or limit is None:
            out.append(Target(text, None, None, "not measured"))
            return
        ok = v >= limit if op == ">=" else v <= limit
        out.append(Target(text, v, ok, fmt(v)))

    w1 = f"W1 N={n:,}, 4 workers"
    check(f"{w1} >= 30,000 tasks/s", w1_key(n, 4), ">=", 30_000, _num)
    check(f"{w1} >= 30 x Dask", "r.dask", ">=", 30, _ratio)
    check(f"{w1} >= 0.5 x ceiling (asyncio, 1 task/message)", "r.ceiling", ">=", 0.5, _ratio)
    rtt = res.median("ceiling.rtt")
    if rtt is None:
        check("W2 p50 <= 500 µs (2 x ceiling round trip: not measured, issue's estimate)",
              "w2.p50", "<=", 500, _num)
    else:
        check(f"W2 p50 <= 2 x ceiling round trip ({2 * rtt:,.0f} µs)", "w2.p50", "<=",
              2 * rtt, _num)
    check("W2 p99 <= 2,000 µs", "w2.p99", "<=", 2000, _num)
    check("W3 wall <= 1.1 x ideal", "w3.ratio", "<=", 1.1, _ratio)
    check(f"W4 idle admin CPU <= 10 % of a core, {sz.w4_workers:,} agents", "w4.idle_cpu",
          "<=", 10, _pct)
    check(f"W4 admin RSS <= 150 MiB, {sz.w4_queued:,} queued", "w4.rss_queued", "<=", 150,
          _one)
    check("W5 journal >= 0.5 x W1", "w5.ratio", ">=", 0.5, _ratio)
    check(f"{w1} >= 10 x Celery (issue: 'an order of magnitude ahead of the peers')",
          "r.celery", ">=", 10, _ratio)
    return out


def print_table(res: Results, tgts: list[Target]) -> None:
    if not res.figures:
        print("\nno figures measured")
        for note in res.notes:
            print(f"note: {note}")
        return
    rows: list[tuple[str, str, str]] = []
    section = None
    runs_seen = sorted({r for f in res.figures.values() for r in f.runs})
    for fig in res.figures.values():
        if fig.section != section:
            section = fig.section
            rows.append((section, "", ""))
        each = ", ".join(fig.fmt(fig.runs[r]) if r in fig.runs else "-" for r in runs_seen)
        median = fig.median
        rows.append((f"  {fig.label}", "" if median is None else fig.fmt(median), each))
    header = ("figure", "median", f"each run ({', '.join(map(str, runs_seen))})")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(2)]
    line = "-" * (widths[0] + widths[1] + 40)
    print()
    print(f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]}")
    print(line)
    for name, median, each in rows:
        if not median and not each:
            print(name)
        else:
            print(f"{name:<{widths[0]}}  {median:>{widths[1]}}  {each}")
    print(line)
    if tgts:
        print()
        w = max(len(t.text) for t in tgts)
        v = max(len(t.shown) for t in tgts)
        print(f"{'target (issue 7), on the medians':<{w}}  {'median':>{v}}  verdict")
        print("-" * (w + v + 12))
        for t in tgts:
            verdict = "n/a" if t.ok is None else ("PASS" if t.ok else "MISS")
            print(f"{t.text:<{w}}  {t.shown:>{v}}  {verdict}")
        print("-" * (w + v + 12))
    for note in res.notes:
        print(f"note: {note}")


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always",
                                 "--dirty"], capture_output=True, text=True, timeout=10,
                                check=False).stdout.strip()
    mem = ""
    with contextlib.suppress(OSError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kib / 1024 / 1024:.0f} GiB"
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(), "cpu": cpu, "memory": mem,
            "python": platform.python_version(), "platform": platform.platform(),
            "commit": commit, "loadavg": load}


def write_json(path: str, args: argparse.Namespace, sz: Sizes, res: Results,
               tgts: list[Target], info: dict[str, Any]) -> None:
    doc = {
        "machine": info,
        "runs": args.runs,
        "quick": args.quick,
        "sizes": {k: getattr(sz, k) for k in sz.__dataclass_fields__},
        "figures": {f.key: {"section": f.section, "label": f.label, "median": f.median,
                            "runs": [f.runs.get(r) for r in range(1, args.runs + 1)]}
                    for f in res.figures.values()},
        "targets": [{"target": t.text, "median": t.value,
                     "verdict": None if t.ok is None else ("PASS" if t.ok else "MISS")}
                    for t in tgts],
        "notes": res.notes,
        "foreign_load": res.foreign_load,
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


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
                        "bench_celery.py where installed")
    p.add_argument("--json", metavar="FILE", help="write every figure and verdict to FILE")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each run, wait up to SECONDS for the CPUs to be < 15%% busy "
                        "(others' load skews every figure; default: do not wait)")
    p.add_argument("--anchors", default=str(DEFAULT_ANCHORS), metavar="DIR",
                   help="directory of the anchor scripts (default: %(default)s)")
    p.add_argument("--anchors-python", metavar="PYTHON",
                   help="interpreter with distributed and celery[redis] for the Dask and Celery "
                        "scripts (default: $CEYLON_BENCH_ANCHORS_PYTHON, else this one)")
    p.add_argument("--w1-tasks", "--tasks", type=_ints, metavar="N,N",
                   help="W1 task counts (default 10000,100000)")
    p.add_argument("--w1-workers", "--workers", type=_ints, metavar="K,K",
                   help="W1 worker processes (default 1,2,4)")
    p.add_argument("--window", "--concurrency", type=int, metavar="W",
                   help="W1/W5: each worker's --concurrency, its credit window (default 8)")
    p.add_argument("--prefetch", type=int, metavar="P",
                   help="W1/W5: the admin's --prefetch, tasks each worker holds queued beyond "
                        "its concurrency (default 0)")
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


def _reap_leftovers() -> int:
    """Last resort: SIGKILL every process group we created (members included) and any child of
    ours still running. Returns how many leaders were still running."""
    left = 0
    for pid, group in _STARTED:
        try:
            running = os.waitpid(pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:  # already reaped
            running = False
        if group:
            _kill_group(pid)  # also the group's other members, if any outlived their leader
        if running:  # still our unreaped child, so the pid cannot have been reused
            left += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return left


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
        left = _reap_leftovers()
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
