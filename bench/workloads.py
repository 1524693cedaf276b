"""The workloads W1-W5 (see bench/README.md): each measures one figure per run into Results."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    PAGE_OPEN,
    STARTED,
    ForeignLoad,
    Results,
    Sizes,
    async_noop,
    check_alive,
    close_admin,
    fmt_one,
    fmt_pct,
    fmt_ratio,
    noop,
    percentile,
    proc_cpu_seconds,
    proc_rss_mib,
    report_logs,
    spawn,
    spawn_workers,
    start_admin,
    sync_noop,
    wait_connected,
)
from zmq_connections import connection_cost

from ceylon_net.core.tasks import Task
from ceylon_net.dev.testing import Cluster, Proc, wait_until
from ceylon_net.edge.client import AsyncClient
from ceylon_net.errors import AdminUnreachableError

MANY_WORKERS = BENCH / "many_workers.py"
SUBMIT_CHUNK = 10_000  # tasks per ceylon-submit message (the admin takes frames up to 1 MiB)


async def w1_once(tasks: int, workers: int, window: int, workdir: Path,
                  journal: Path | None = None, res: Results | None = None, run: int = 0,
                  what: str = "W1", prefetch: int | None = None, dashboard: bool = False,
                  make: Callable[[int], Task] = noop) -> float:
    """tasks/s of one run_tasks() of ``tasks`` no-ops over ``workers`` fresh processes, from
    making the tasks (as the anchors' clocks count theirs) to the last result; ``make``: the
    task of each number (a handler's: the workers load bench/bench_handlers.py);
    ``dashboard``: with a dashboard page open meanwhile."""
    async with Cluster(workdir=workdir) as cluster:
        admin = await start_admin(cluster, journal, prefetch, dashboard)
        procs: list[Proc] = []
        try:
            if dashboard:
                url = f"http://127.0.0.1:{admin.dashboard.port}/api/stream"
                procs.append(await spawn(cluster, "page", [sys.executable, "-c", PAGE_OPEN,
                                                           url]))
            procs += await spawn_workers(cluster, workers, window, app=make is not noop)
            await wait_connected(admin, procs, workers)
            if dashboard:
                await wait_until(lambda: admin.dashboard and admin.dashboard.streams, 10,
                                 "the dashboard page to be open")
            load = ForeignLoad([os.getpid(), *(p.process.pid for p in procs)])
            t0 = time.perf_counter()
            batch = [make(i) for i in range(tasks)]
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
                    f"{'' if sz.prefetch is None else f', --prefetch {sz.prefetch}'})",
                    f"N={n:,}, {k} worker process{'es' if k > 1 else ''}")
            print(f"{tag} W1 N={n:,} K={k}: {tps:,.0f} tasks/s", flush=True)
    await _w1_handlers(sz, res, run, tag, workdir)
    if sz.dashboard:
        n, k = max(sz.w1_tasks), max(sz.w1_workers)
        tps = await w1_once(n, k, sz.window, workdir, res=res, run=run,
                            what=f"W1 N={n:,} K={k} dashboard open", prefetch=sz.prefetch,
                            dashboard=True)
        section = f"W1 with the dashboard open (N={n:,}, {k} worker processes)"
        res.put("w1.dashboard", run, tps, section, "tasks/s")
        base = res.get(w1_key(n, k), run)
        if base:
            res.put("w1.dashboard_ratio", run, tps / base, section, "share of W1 without it",
                    fmt_ratio)
        print(f"{tag} W1 N={n:,} K={k} with the dashboard open: {tps:,.0f} tasks/s", flush=True)


async def _w1_handlers(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    """W1 doing what the peers' scripts do per task: call a user function returning its
    argument (sync, in a thread; async, on the loop), at the peers' task count."""
    n, k = sz.peer_tasks, 4
    section = (f"W1 with a user handler, tasks/s (N={n:,}, the peers' count, {k} worker "
               f"processes, concurrency {sz.window})")
    for key, make, label in (("w1h.sync", sync_noop, "def noop(x): return x (a thread)"),
                             ("w1h.async", async_noop, "async def noop(x): return x")):
        tps = await w1_once(n, k, sz.window, workdir, res=res, run=run,
                            what=f"W1 N={n:,} K={k} {label}", prefetch=sz.prefetch, make=make)
        res.put(key, run, tps, section, label)
        print(f"{tag} W1 N={n:,} K={k} {label}: {tps:,.0f} tasks/s", flush=True)


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
    res.put("w5.ratio", run, tps / base, section, "journal / no journal", fmt_ratio)
    print(f"{tag} W5 N={n:,} K=4 journal: {tps:,.0f} tasks/s ({tps / base:.2f} of "
          f"{base:,.0f} without)", flush=True)


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


async def sleep_run(durations: list[float], k: int, c: int, workdir: Path, res: Results,
                    run: int, what: str) -> tuple[float, list[float]]:
    """One run_tasks() of sleep tasks of these durations (in this order) on ``k`` fresh
    worker processes of concurrency ``c``, after a warm-up: its wall seconds, and each task's
    run time as its worker measured it."""
    async with Cluster(workdir=workdir) as cluster:
        admin = await start_admin(cluster)
        procs: list[Proc] = []
        try:
            procs = await spawn_workers(cluster, k, c)
            await wait_connected(admin, procs, k)
            # Warm-up: every worker has taken tasks before the clock starts.
            await asyncio.wait_for(admin.run_tasks([noop(-1 - i) for i in range(k * c)]), 60)
            batch = [Task(id=i, description="sleep", difficulty=1, duration=d)
                     for i, d in enumerate(durations)]
            load = ForeignLoad([os.getpid(), *(p.process.pid for p in procs)])
            t0 = time.perf_counter()
            report = await asyncio.wait_for(admin.run_tasks(batch), 60 + sum(durations))
            wall = time.perf_counter() - t0
            res.foreign(run, what, load.stop())
        except BaseException:
            report_logs(procs)
            raise
        finally:
            await close_admin(admin)
    succeeded = {t.id for t in report.tasks if t.success}
    missing = [i for i in range(len(durations)) if i not in succeeded]
    if missing:
        raise RuntimeError(f"{what}: {len(missing)} of {len(durations)} sleep tasks did not "
                           f"succeed")
    ids = {t.id for t in batch}  # (the report covers the warm-up too)
    return wall, [t.seconds for t in report.tasks if t.id in ids]


async def run_w3(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    k, c, n, d = sz.w3_workers, sz.w3_concurrency, sz.w3_tasks, sz.w3_seconds
    wall, took = await sleep_run([d] * n, k, c, workdir, res, run, "W3")
    ideal = n * d / (k * c)
    # No schedule beats this: some slot runs ceil(n / slots) of the tasks one after another,
    # each as long as a sleep of d really takes on these workers.
    rounds = -(-n // (k * c))
    floor = rounds * statistics.median(took)
    section = f"W3 sleep tasks ({n} x {d * 1000:g} ms, {k} workers x concurrency {c})"
    res.put("w3.wall", run, wall * 1000, section, "wall time, ms", fmt_one)
    res.put("w3.ideal", run, ideal * 1000, section, "ideal, ms", fmt_one)
    res.put("w3.ratio", run, wall / ideal, section, "wall / ideal", fmt_ratio)
    res.put("w3.floor", run, floor * 1000, section,
            f"floor: {rounds} rounds x the tasks' median run time, ms", fmt_one)
    res.put("w3.floor_ratio", run, floor / ideal, section, "floor / ideal", fmt_ratio)
    print(f"{tag} W3: {wall * 1000:,.1f} ms, ideal {ideal * 1000:.1f} ms: "
          f"{wall / ideal:.3f} x ideal (floor {floor * 1000:.1f} ms: {rounds} rounds x "
          f"{statistics.median(took) * 1000:.2f} ms, the tasks' median run time)", flush=True)


async def run_w3b(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    """Long tasks, then many short ones behind them: no short one may wait behind a long one
    while a slot is free (pipelining with work stealing)."""
    k, c = sz.w3_workers, sz.w3b_concurrency
    longs, long_s, shorts, short_s = (sz.w3b_long, sz.w3b_long_seconds, sz.w3b_short,
                                      sz.w3_seconds)
    wall, _ = await sleep_run([long_s] * longs + [short_s] * shorts, k, c, workdir, res, run,
                              "W3b")
    ideal = max(long_s, (longs * long_s + shorts * short_s) / (k * c))
    section = (f"W3b long then short ({longs} x {long_s:g} s, then {shorts} x "
               f"{short_s * 1000:g} ms, {k} workers x concurrency {c})")
    res.put("w3b.wall", run, wall * 1000, section, "wall time, ms", fmt_one)
    res.put("w3b.ideal", run, ideal * 1000, section, "ideal, ms", fmt_one)
    res.put("w3b.ratio", run, wall / ideal, section, "wall / ideal", fmt_ratio)
    print(f"{tag} W3b: {wall * 1000:,.1f} ms, ideal {ideal * 1000:.1f} ms: "
          f"{wall / ideal:.3f} x ideal", flush=True)


async def _status(address: str, timeout: float = 10.0) -> dict[str, Any]:
    async with AsyncClient(address, timeout=timeout) as c:
        return await c.status()


async def run_w4(sz: Sizes, res: Results, run: int, tag: str, workdir: Path) -> None:
    total = sz.w4_workers
    pace = max(1, -(-total // 200))  # ceylon-admin's defaults: --heartbeat 1, 200 beats/s
    section = (f"W4 scale ({total:,} worker agents in {sz.w4_procs} processes, each beating "
               f"every {pace} s at the admin's default pace; ceylon-admin process)")
    async with Cluster(workdir=workdir) as cluster:
        admin = await cluster.admin("--log-level", "WARNING", "--unassignable-timeout",
                                    "86400", name="w4-admin")
        STARTED.append((admin.process.pid, True))
        procs = [admin]
        try:
            endpoint = f"127.0.0.1:{cluster.port}"
            await _answering(endpoint, procs)
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

            submit_s = await _queue_unassignable(endpoint, sz.w4_queued)
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
    res.put("w4.join", run, join_s, section, f"time for {total:,} agents to register, s", fmt_one)
    res.put("w4.connected", run, still, section, f"agents still connected after {sz.w4_idle:g} s")
    if still >= total:  # (agents that dropped out would make the admin look idler)
        res.put("w4.idle_cpu", run, idle_cpu, section,
                f"admin CPU while idle ({sz.w4_idle:g} s), % of one core", fmt_pct)
    else:
        res.note(f"run {run}: W4 idle CPU not counted: {still:,} of {total:,} agents were "
                 f"still connected")
    res.put("w4.rss_idle", run, rss_idle, section, "admin RSS idle, MiB", fmt_one)
    res.put("w4.submit", run, sz.w4_queued / submit_s, section,
            f"ceylon-submit of {sz.w4_queued:,} tasks ({SUBMIT_CHUNK:,} per batch), tasks/s")
    res.put("w4.queued_cpu", run, queued_cpu, section,
            f"admin CPU with {sz.w4_queued:,} queued, % of one core", fmt_pct)
    res.put("w4.rss_queued", run, rss_queued, section,
            f"admin RSS with {sz.w4_queued:,} queued, MiB", fmt_one)
    res.put("w4.rss_peak", run, peak, section, "admin peak RSS (VmHWM), MiB", fmt_one)
    res.put("w4.per_task", run, (rss_queued - rss_idle) * 1024 / sz.w4_queued, section,
            "RSS per queued task, KiB", fmt_ratio)
    print(f"{tag} W4: {still}/{total} agents (joined in {join_s:.1f} s), idle CPU "
          f"{idle_cpu:.1f} %, RSS {rss_idle:.1f} MiB; {sz.w4_queued:,} queued: RSS "
          f"{rss_queued:.1f} MiB, CPU {queued_cpu:.1f} %", flush=True)
    await run_w4_queue_alone(sz, res, run, tag, workdir)


async def _answering(endpoint: str, procs: list[Proc]) -> None:
    """Wait (30 s at most) until the ceylon-admin at ``endpoint`` answers a status request."""
    async def answers() -> bool:
        check_alive(procs)
        try:
            await _status(endpoint, 1.0)
            return True
        except AdminUnreachableError:
            return False

    await wait_until(answers, 30, "ceylon-admin to answer", interval=0.1)


async def _queue_unassignable(endpoint: str, count: int) -> float:
    """Submit ``count`` tasks for a role no agent has (all stay queued, none is ever
    assigned), 10,000 a batch; seconds it took. Checks they are all queued."""
    ts = time.monotonic()
    for start in range(0, count, SUBMIT_CHUNK):
        doc = {"tasks": [{"id": i, "description": "queued", "difficulty": 1,
                          "required_role": "nobody"}
                         for i in range(start, min(start + SUBMIT_CHUNK, count))]}
        async with AsyncClient(endpoint, timeout=60) as c:
            await c.submit_batch(doc, wait=False)
    took = time.monotonic() - ts
    await asyncio.sleep(2.0)
    counts = (await _status(endpoint, 30))["counts"]
    if counts["queued"] != count:
        raise RuntimeError(f"W4: {counts['queued']} tasks queued, expected {count}: {counts}")
    return took


async def run_w4_queue_alone(sz: Sizes, res: Results, run: int, tag: str,
                             workdir: Path) -> None:
    """A fresh ceylon-admin with no agents: its RSS, then with ``w4_queued`` tasks queued
    (what the queue costs, without ZeroMQ's buffers for 2,000 connections beside it)."""
    section = f"W4 queue alone ({sz.w4_queued:,} tasks queued, no agent connected)"
    async with Cluster(workdir=workdir) as cluster:
        admin = await cluster.admin("--log-level", "WARNING", "--unassignable-timeout",
                                    "86400", name="w4q-admin")
        STARTED.append((admin.process.pid, True))
        try:
            endpoint = f"127.0.0.1:{cluster.port}"
            await _answering(endpoint, [admin])
            await asyncio.sleep(1.0)
            rss_empty = proc_rss_mib(admin.process.pid)
            await _queue_unassignable(endpoint, sz.w4_queued)
            rss = proc_rss_mib(admin.process.pid)
        except BaseException:
            report_logs([admin])
            raise
    # What libzmq alone keeps for that many agents' DEALER and SUB connections (no ceylon_net
    # code in that process): with the queue alone, a floor under the RSS with them beside.
    before, after = await asyncio.to_thread(connection_cost, sz.w4_workers, sz.w4_procs)
    res.put("w4.rss_alone_empty", run, rss_empty, section, "admin RSS before, MiB", fmt_one)
    res.put("w4.rss_alone", run, rss, section, f"admin RSS with {sz.w4_queued:,} queued, MiB",
            fmt_one)
    res.put("w4.zmq_conns", run, after - before, section,
            f"{sz.w4_workers:,} agents' connections in a bare pyzmq process "
            f"(bench/zmq_connections.py), MiB", fmt_one)
    res.put("w4.floor_beside", run, rss + after - before, section,
            f"floor with the {sz.w4_workers:,} agents beside: the two above added, MiB",
            fmt_one)
    print(f"{tag} W4 queue alone: RSS {rss_empty:.1f} MiB empty, {rss:.1f} MiB with "
          f"{sz.w4_queued:,} queued; {sz.w4_workers:,} agents' connections cost a bare pyzmq "
          f"process {after - before:.1f} MiB", flush=True)
