"""Honest throughput under hostile load (issue 5, acceptance 4).

An in-process Admin and K ``ceylon-worker`` processes (``--time-scale 0 --concurrency W``,
fresh for every measurement); ``await admin.run_tasks(N no-op tasks)`` timed from the moment
the batch is due to the last result (wall clock: the admin shares the driver's event loop, so
time it spends unable to take the batch counts), in four conditions:

- **unloaded**;
- **stalled reader**: a DEALER registers as a worker (HELLO, skill 10, capacity 10,000: the
  largest the admin takes) and then never reads (RCVHWM 1, RCVBUF 4 KiB, so its queue is full
  at once); it keeps sending heartbeats, as a process whose reading side is stuck would;
- **stalled reader, silent**: the same without heartbeats (a hung process);
- **HELLO flood**: 1,000 HELLOs a second for 10 s from 127.0.0.1, each from a fresh DEALER
  identity, each refused (another workspace); the batch is submitted 1 s into the flood.
  ``--hello-results N`` makes every HELLO carry N empty results (costly to decode).

The attackers run in a process of their own (``bench/hostile.py attack ...``), so they do not
share the admin's interpreter. Each figure is the median over ``--runs`` runs, with every run's
value and its ratio to unloaded (acceptance 4: at least 0.5). No asserts: it prints figures.

    .venv/bin/python bench/hostile.py [--runs 3] [--tasks 2000] [--only unloaded,flood]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zmq

# The suite's own process helpers (this directory is on sys.path when run as a script).
from harness import check_alive, close_admin, port_free
from loguru import logger

from ceylon_net import wire
from ceylon_net.core.tasks import Task
from ceylon_net.dev.testing import Cluster, Proc, free_port, wait_until
from ceylon_net.edge.admin import Admin
from ceylon_net.errors import ConfigError
from ceylon_net.settings import AdminSettings
from ceylon_net.wire import Heartbeat, Hello, Kind

CONNECT_TIMEOUT = 30.0  # seconds for the workers (and the stalled reader) to register
RUN_TIMEOUT = 120.0  # seconds for one honest batch
SCENARIOS = ("unloaded", "stalled", "silent", "flood")
LABELS = {
    "unloaded": "unloaded",
    "stalled": "stalled reader (heartbeats, never reads)",
    "silent": "stalled reader, silent",
    "flood": "HELLO flood",
}
STALLED_NAME = "stalled-reader"
TARGET = 0.5


# ---------------------------------------------------------------------------- the attackers
# ``hostile.py attack ...``: plain blocking pyzmq in a process of its own.


def _hello_frames(name: str, workspace: str, capacity: int, results: int) -> list[bytes]:
    header = wire.make_header(workspace, name, "Hello")
    hello = Hello(name, "default", 10, capacity, results=[{}] * results)
    return wire.encode_frames(Kind.HELLO, header, wire.pack(hello))


def attack_stalled(port: int, heartbeats: bool) -> None:
    """Register, never read; with ``heartbeats``, say HB every second until killed."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, STALLED_NAME.encode())
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.RCVBUF, 4096)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    s.send_multipart(_hello_frames(STALLED_NAME, "default", wire.MAX_CAPACITY, 0))
    print("registering", flush=True)
    try:
        while True:
            time.sleep(1.0)
            if heartbeats:
                header = wire.make_header("default", STALLED_NAME, "Heartbeat")
                s.send_multipart(wire.encode_frames(Kind.HEARTBEAT, header,
                                                        wire.pack(Heartbeat([]))))
    finally:
        s.close()
        ctx.term()


def attack_hello_flood(port: int, rate: float, seconds: float, results: int) -> None:
    """``rate`` HELLOs a second for ``seconds``, each from a new identity, all refused."""
    ctx = zmq.Context()
    ctx.setsockopt(zmq.MAX_SOCKETS, 16_384)
    frames = _hello_frames("flood", "flood", 1, results)
    open_sockets: list[tuple[float, zmq.Socket]] = []
    sent = 0
    print(f"flooding since {time.time():.6f}", flush=True)
    start = time.monotonic()
    try:
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate) + 1
            while sent < due:
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.IDENTITY, b"flood-%d" % sent)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(f"tcp://127.0.0.1:{port}")
                s.send_multipart(frames, flags=zmq.NOBLOCK)
                open_sockets.append((now, s))
                sent += 1
            # A socket closed at once could drop its HELLO before connecting: keep each
            # 0.3 s, then let it go.
            while open_sockets and now - open_sockets[0][0] > 0.3:
                open_sockets.pop(0)[1].close()
            time.sleep(0.001)
    finally:
        for _, s in open_sockets:
            s.close()
        ctx.term()
    took = time.monotonic() - start
    print(f"sent {sent} HELLOs in {took:.1f} s ({sent / took:,.0f}/s)", flush=True)


# ---------------------------------------------------------------------------- measuring


def noop(i: int) -> Task:
    return Task(id=i, description="noop", difficulty=1, duration=0.0)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Measurement:
    tasks_per_s: float
    succeeded: int
    seconds: float
    note: str = ""


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    started: list[Proc] = field(default_factory=list)

    async def start_admin(self, cluster: Cluster) -> Admin:
        for attempt in range(5):
            admin = Admin(settings=AdminSettings(bind="127.0.0.1", port=cluster.port,
                                                 pub_port=cluster.pub_port))
            try:
                await admin.start()
                return admin
            except ConfigError:  # the port was taken since free_port() chose it
                if attempt == 4:
                    raise
                cluster.port, cluster.pub_port = free_port(), free_port()
        raise AssertionError("unreachable")

    async def spawn(self, cluster: Cluster, name: str, argv: Sequence[str]) -> Proc:
        proc = await cluster.spawn(name, argv)
        self.started.append(proc)
        return proc

    async def attacker(self, cluster: Cluster, name: str, *args: str) -> Proc:
        argv = [sys.executable, str(Path(__file__).resolve()), "attack", name, "--port",
                str(cluster.port), *args]
        proc = await self.spawn(cluster, name, argv)
        await wait_until(lambda: proc.stdout() or proc.returncode is not None, 15,
                         f"the {name} attacker to start")
        if not proc.stdout():
            raise RuntimeError(f"the {name} attacker exited with {proc.returncode}:\n"
                               f"{tail(proc.stderr())}")
        return proc

    async def workers(self, cluster: Cluster) -> list[Proc]:
        procs = []
        for i in range(self.args.workers):
            proc = await cluster.worker(f"bench-w{i}", "--time-scale", "0", "--concurrency",
                                        str(self.args.concurrency), "--log-level", "ERROR")
            self.started.append(proc)
            procs.append(proc)
        return procs

    async def once(self, scenario: str, run: int) -> Measurement:
        workdir = self.workdir / f"{scenario}-{run}"
        workdir.mkdir()
        async with Cluster(workdir=workdir) as cluster:
            admin = await self.start_admin(cluster)
            try:
                m = await self._measure(scenario, cluster, admin)
            finally:
                await close_admin(admin)
        if not ports_free([cluster.port, cluster.pub_port]):
            print(f"warning: port {cluster.port} or {cluster.pub_port} still in use after the "
                  f"admin closed", flush=True)
        return m

    async def _measure(self, scenario: str, cluster: Cluster, admin: Admin) -> Measurement:
        procs = await self.workers(cluster)
        expected = {p.name for p in procs}
        attacker = None
        if scenario in ("stalled", "silent"):
            flags = ("--heartbeats",) if scenario == "stalled" else ()
            attacker = await self.attacker(cluster, "stalled", *flags)
            expected.add(STALLED_NAME)
        await _wait_registered(admin, [*procs, *([attacker] if attacker else [])], expected)
        batch = [noop(i) for i in range(self.args.tasks)]
        due = time.time()
        if scenario == "flood":
            attacker = await self.attacker(
                cluster, "hello-flood", "--rate", str(self.args.flood_rate), "--seconds",
                str(self.args.flood_seconds), "--results", str(self.args.hello_results))
            # The batch is due 1 s into the flood, by the attacker's clock: the admin shares
            # this event loop, and time it spends unable to take the batch must count.
            due = float(attacker.stdout().split()[2]) + 1.0
            await asyncio.sleep(max(0.0, due - time.time()))
        try:
            report = await asyncio.wait_for(admin.run_tasks(batch), RUN_TIMEOUT)
        except TimeoutError:
            return Measurement(0.0, 0, RUN_TIMEOUT, f"did not finish in {RUN_TIMEOUT:g} s")
        elapsed = time.time() - due
        succeeded = sum(t.success for t in report.tasks)
        note = ""
        if attacker is not None and scenario == "flood":
            await attacker.wait(self.args.flood_seconds + 30)
            note = attacker.stdout().strip().splitlines()[-1]
            dropped = getattr(admin, "dropped_hellos", None)
            if dropped is not None:
                note += f"; admin dropped {dropped} unread (rate limit)"
        return Measurement(self.args.tasks / elapsed, succeeded, elapsed, note)


async def _wait_registered(admin: Admin, procs: list[Proc], names: set[str]) -> None:
    def ready() -> bool:
        check_alive(procs)
        return names <= {a.name for a in admin.get_connected_agents()}

    await wait_until(ready, CONNECT_TIMEOUT, f"{', '.join(sorted(names))} to register")


# ---------------------------------------------------------------------------- driver


@dataclass
class Results:
    runs: dict[str, list[Measurement]] = field(default_factory=dict)

    def median(self, scenario: str) -> float:
        return statistics.median(m.tasks_per_s for m in self.runs[scenario])


async def run_all(args: argparse.Namespace, res: Results, scenarios: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="ceylon-hostile-") as tmp:
        bench = Bench(args, Path(tmp))
        for run in range(1, args.runs + 1):
            for scenario in scenarios:
                m = await bench.once(scenario, run)
                res.runs.setdefault(scenario, []).append(m)
                extra = f"; {m.note}" if m.note else ""
                print(f"[run {run}/{args.runs}] {LABELS[scenario]}: {m.tasks_per_s:,.0f} tasks/s "
                      f"({m.succeeded}/{args.tasks} succeeded in {m.seconds:.2f} s){extra}",
                      flush=True)
        left = [p for p in bench.started if p.returncode is None]
        for p in left:  # Cluster stops what it started; this only makes sure of it
            p.signal(signal.SIGKILL)
            await p.wait(10)
        if left:
            print(f"warning: {len(left)} process(es) were still running; killed", flush=True)


def print_table(args: argparse.Namespace, res: Results) -> None:
    base = res.median("unloaded") if "unloaded" in res.runs else None
    print(f"\nhonest throughput, tasks/s: N={args.tasks} no-op tasks, {args.workers} workers x "
          f"concurrency {args.concurrency}; median of {args.runs} run(s)")
    print(f"{'condition':<42} {'median':>8} {'ratio':>6}  each run (ratio to that run's "
          f"unloaded)")
    for scenario, runs in res.runs.items():
        median = res.median(scenario)
        ratio = f"{median / base:.2f}" if base else "-"
        each = []
        for i, m in enumerate(runs):
            own = res.runs.get("unloaded", [])
            r = f" ({m.tasks_per_s / own[i].tasks_per_s:.2f})" if i < len(own) else ""
            failed = "" if m.succeeded == args.tasks else f" [{m.succeeded} ok]"
            each.append(f"{m.tasks_per_s:,.0f}{r}{failed}")
        print(f"{LABELS[scenario]:<42} {median:>8,.0f} {ratio:>6}  {', '.join(each)}")
    if base:
        misses = [LABELS[s] for s in res.runs if s != "unloaded"
                  and res.median(s) / base < TARGET]
        verdict = "all within" if not misses else f"below target: {'; '.join(misses)}"
        print(f"target (acceptance 4): loaded >= {TARGET:.0%} of unloaded -> {verdict}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command")
    attack = sub.add_parser("attack", help="(internal) run one attacker")
    attack.add_argument("kind", choices=("stalled", "hello-flood"))
    attack.add_argument("--port", type=int, required=True)
    attack.add_argument("--heartbeats", action="store_true")
    attack.add_argument("--rate", type=float, default=1000.0)
    attack.add_argument("--seconds", type=float, default=10.0)
    attack.add_argument("--results", type=int, default=0)
    p.add_argument("--tasks", type=int, default=2000, help="no-op tasks per honest batch")
    p.add_argument("--workers", type=int, default=3, help="honest worker processes")
    p.add_argument("--concurrency", type=int, default=8, help="each worker's --concurrency")
    p.add_argument("--runs", type=int, default=3, help="runs per condition (median shown)")
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"conditions to measure, of {','.join(SCENARIOS)}")
    p.add_argument("--flood-rate", type=float, default=1000.0, help="HELLOs per second")
    p.add_argument("--flood-seconds", type=float, default=10.0, help="length of the flood")
    p.add_argument("--hello-results", type=int, default=0,
                   help="empty results in each flooding HELLO (decoding cost)")
    args = p.parse_args(argv)
    if args.command is None:
        unknown = set(args.only.split(",")) - set(SCENARIOS)
        if unknown:
            p.error(f"--only: unknown condition(s) {', '.join(sorted(unknown))}")
        for name in ("tasks", "workers", "concurrency", "runs"):
            if getattr(args, name) < 1:
                p.error(f"--{name} must be at least 1")
    return args


def run_attacker(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # closes the sockets on the way out
    if args.kind == "stalled":
        attack_stalled(args.port, args.heartbeats)
    else:
        attack_hello_flood(args.port, args.rate, args.seconds, args.results)
    return 0


def ports_free(ports: Sequence[int]) -> bool:
    """Nobody listens on these ports any more (connections in TIME_WAIT do not count)."""
    return all(port_free(port) for port in ports)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "attack":
        return run_attacker(args)
    logger.remove()
    logger.add(sys.stderr, level="ERROR")  # a refused HELLO is a warning: 1,000 a second
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flood's sockets
    scenarios = [s for s in SCENARIOS if s in args.only.split(",")]
    if "unloaded" not in scenarios:
        print("note: without 'unloaded' there are no ratios", flush=True)
    print(f"ceylon_net hostile-load benchmark: python {platform.python_version()}, "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}, {args.runs} run(s)",
          flush=True)
    res = Results()
    code = 0
    try:
        asyncio.run(run_all(args, res, scenarios))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    if res.runs:
        print_table(args, res)
    return code


if __name__ == "__main__":
    sys.exit(main())
