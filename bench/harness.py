"""The benchmark harness: sizes, figures and their medians, process helpers (start an
admin, spawn workers, measure CPU and memory, reap what was started), the machine described."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ceylon_net.core.tasks import Task
from ceylon_net.dev.testing import Cluster, Proc, free_port, wait_until
from ceylon_net.edge.admin import Admin
from ceylon_net.errors import ConfigError
from ceylon_net.settings import AdminSettings

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
DEFAULT_ANCHORS = REPO_ROOT.parent / "shared" / "anchors"
CONNECT_TIMEOUT = 30.0  # seconds for worker processes to register
CLOSE_TIMEOUT = 10.0  # seconds for admin.close()


# Every child process started here, for the last-resort cleanup in main(): (pid, True when it
# leads a process group of its own that we created, whose members must go with it).
STARTED: list[tuple[int, bool]] = []


# A dashboard page left open: reads the admin's event stream until it is killed.
PAGE_OPEN = ("import sys, urllib.request\n"
             "with urllib.request.urlopen(sys.argv[1]) as stream:\n"
             "    for _ in stream: pass\n")


@dataclass(frozen=True)
class Sizes:
    w1_tasks: tuple[int, ...] = (10_000, 100_000)
    w1_workers: tuple[int, ...] = (1, 2, 4)
    window: int = 8
    prefetch: int | None = None  # W1/W5: the admin's --prefetch (None: adaptive, the default)
    dashboard: bool = False  # W1: also with the web dashboard open
    w2_count: int = 2000
    w2_warmup: int = 100
    w3_tasks: int = 200
    w3_seconds: float = 0.01
    w3_workers: int = 4
    w3_concurrency: int = 8
    w3b_long: int = 8  # W3b: long tasks first ...
    w3b_long_seconds: float = 1.0
    w3b_short: int = 200  # ... then short ones, on w3_workers x w3b_concurrency
    w3b_concurrency: int = 2
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


def fmt_num(v: float) -> str:
    return f"{v:,.0f}"


def fmt_one(v: float) -> str:
    return f"{v:,.1f}"


def fmt_ratio(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:,.1f}"


def fmt_pct(v: float) -> str:
    return f"{v:.1f} %"


class Results:
    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}
        self.notes: list[str] = []
        self.foreign_load: list[dict[str, Any]] = []

    def put(self, key: str, run: int, value: float, section: str, label: str,
            fmt: Callable[[float], str] = fmt_num) -> None:
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
              fmt: Callable[[float], str] = fmt_ratio) -> None:
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


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def noop(i: int) -> Task:
    """A no-op task: the worker's own simulated task of 0 s (no user code runs)."""
    return Task(id=i, description="noop", difficulty=1, duration=0.0)


def sync_noop(i: int) -> Task:
    """A user handler returning its argument: a plain function (runs in a thread), as the
    peers' scripts run ``noop(x)``."""
    return Task(id=i, description="noop", difficulty=1, handler="noop_sync", args=[i])


def async_noop(i: int) -> Task:
    """The same as an ``async def`` handler (runs on the worker's event loop)."""
    return Task(id=i, description="noop", difficulty=1, handler="noop_async", args=[i])


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


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def start_admin(cluster: Cluster, journal: Path | None = None, prefetch: int | None = None,
                      dashboard: bool = False) -> Admin:
    """An in-process admin on the cluster's ports (picking new ones if they were taken);
    ``dashboard``: with its web dashboard on a free port."""
    for attempt in range(5):
        admin = Admin(settings=AdminSettings(
            bind="127.0.0.1", port=cluster.port, pub_port=cluster.pub_port,
            journal=None if journal is None else str(journal), prefetch=prefetch,
            dashboard_port=0 if dashboard else None))
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
    STARTED.append((proc.process.pid, True))  # Cluster starts each in a session of its own
    return proc


async def spawn_workers(cluster: Cluster, count: int, concurrency: int,
                        app: bool = False) -> list[Proc]:
    """``app``: the workers load bench/bench_handlers.py (user handlers, as the peers run)."""
    procs = []
    extra = ["--app", "bench_handlers"] if app else []
    env = {"PYTHONPATH": str(BENCH)} if app else None
    for i in range(count):
        proc = await cluster.worker(f"bench-w{i}", "--time-scale", "0", "--concurrency",
                                    str(concurrency), "--log-level", "WARNING", "--skill", "10",
                                    *extra, env=env)
        STARTED.append((proc.process.pid, True))
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


def reap_leftovers() -> int:
    """Last resort: SIGKILL every process group we created (members included) and any child of
    ours still running. Returns how many leaders were still running."""
    left = 0
    for pid, group in STARTED:
        try:
            running = os.waitpid(pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:  # already reaped
            running = False
        if group:
            kill_group(pid)  # also the group's other members, if any outlived their leader
        if running:  # still our unreaped child, so the pid cannot have been reused
            left += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return left
