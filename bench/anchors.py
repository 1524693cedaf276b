"""The anchors, run in the same invocation as our figures: the raw pyzmq ceiling, Dask, Celery
and Ray (../shared/anchors/), each in a process group of its own that is gone when it is done."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import STARTED, Results, Sizes, kill_group, port_free, tail

CEILING_PORT = 7461  # fixed in bench_zmq_ceiling.py
REDIS_PORT = 6390  # fixed in celery_app.py
ANCHOR_TIMEOUT = 900.0  # seconds for one anchor script
ECHO = Path(__file__).resolve().parent / "echo.py"


@dataclass
class Anchors:
    directory: Path
    python: str  # interpreter for the Dask and Celery scripts
    has_dask: bool = False
    has_celery: bool = False
    has_ray: bool = False
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
        # Asked to compare, it would print ratios of nothing: say so before any run.
        raise SystemExit(f"error: --compare: no bench_zmq_ceiling.py in {directory} (the "
                         f"anchor scripts; --anchors DIR names where they are)")
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
    a.has_ray = (directory / "bench_ray.py").exists() and _has_module(python, "ray")
    if not a.has_ray:
        res.note(f"Ray skipped: 'ray' is not installed for {python} (see bench/README.md, "
                 f"--anchors-python)")
    return a


async def run_script(argv: Sequence[str], cwd: Path, what: str, timeout: float = ANCHOR_TIMEOUT
                     ) -> str:
    """Run an anchor script in a process group of its own; its stdout. Nothing it started
    outlives it (a timeout, an error or Ctrl-C included)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    STARTED.append((proc.pid, True))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        kill_group(proc.pid)  # its multiprocessing / LocalCluster children too
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
                ("ceiling.async1", (n, "1", "8", "asyncio"),
                 "asyncio, 1 task/message, 1 worker"),
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
                f"{' '.join(argv)}: round trip (1 / its throughput: a mean), µs")
        print(f"{tag} ceiling {' '.join(argv)}: {1e6 / tps:,.0f} µs per round trip",
              flush=True)
        # Our worker is an asyncio program, the ceiling's is not: the same round trip with
        # asyncio on both sides and nothing else is the floor under W2.
        count = str(max(sz.ceiling_rtt // 5, 600))
        what = f"bench/echo.py --count {count} --runs 1"
        text = await run_script([sys.executable, str(ECHO), "--count", count, "--runs", "1"],
                                ECHO.parent, what)
        echo = _field(text, "rtt_p50_us", what)
        res.put("echo.rtt", run, echo, section,
                "floor: bench/echo.py, asyncio on both sides (the loop's reader, as ours): "
                "round trip p50, µs")
        futures = _field(text, "futures_p50_us", what)
        res.put("echo.futures", run, futures, section,
                "bench/echo.py through zmq.asyncio's futures: round trip p50, µs")
        print(f"{tag} bare asyncio echo: {echo:,.0f} µs per round trip (through zmq.asyncio's "
              f"futures {futures:,.0f})", flush=True)


async def _run_peer(a: Anchors, res: Results, run: int, tag: str, script: str, key: str,
                    name: str, size: int, workers: str) -> None:
    """A peer's script run as ``script N 4``: its throughput and 500 round trips."""
    text = await run_script([a.python, str(a.directory / script), str(size), "4"],
                            a.directory, script)
    section = f"{name} ({script} {size} 4)"
    tps, p50, p99 = (_field(text, f, script) for f in ("tasks_per_s", "p50_us", "p99_us"))
    res.put(f"{key}.w1", run, tps, section, f"W1 N={size:,}, 4 {workers}, tasks/s")
    res.put(f"{key}.p50", run, p50, section, "W2 p50, µs (500 round trips)")
    res.put(f"{key}.p99", run, p99, section, "W2 p99, µs")
    print(f"{tag} {name.split()[0]}: {tps:,.0f} tasks/s, p50 {p50:,.0f} µs, p99 {p99:,.0f} µs",
          flush=True)


async def run_dask(sz: Sizes, a: Anchors, res: Results, run: int, tag: str) -> None:
    await _run_peer(a, res, run, tag, "bench_dask.py", "dask", "Dask distributed",
                    sz.peer_tasks, "processes")


async def run_ray(sz: Sizes, a: Anchors, res: Results, run: int, tag: str) -> None:
    await _run_peer(a, res, run, tag, "bench_ray.py", "ray", "Ray", sz.peer_tasks,
                    "worker CPUs")


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
    kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    kill_group(proc.pid)  # whatever is left of the group (prefork children included)
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
        STARTED.append((redis.pid, True))
        await _wait_redis(REDIS_PORT, redis, 20)
        celery = Path(a.python).parent / "celery"
        log = (workdir / "celery.log").open("wb")
        logs.append(log)
        argv = [str(celery)] if celery.exists() else [a.python, "-m", "celery"]
        worker = await asyncio.create_subprocess_exec(
            *argv, "-A", "celery_app", "worker", "-c", "4", "-P", "prefork", "--loglevel",
            "WARNING", cwd=str(a.directory), stdin=asyncio.subprocess.DEVNULL, stdout=log,
            stderr=log, start_new_session=True)
        STARTED.append((worker.pid, True))
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
