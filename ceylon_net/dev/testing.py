"""Harness for tests, benchmarks and the demo: start the real CLIs as separate processes on
free loopback ports, watch the PUB bus, and make sure every process is gone at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import wire
from ..core.tasks import TaskAssignment, TaskResult
from ..edge.transport import Subscriber, free_port
from ..errors import RemoteProtocolError
from ..wire import Kind

__all__ = ["Cluster", "EventLog", "Proc", "cli", "free_port", "wait_until"]


def cli(name: str) -> list[str]:
    """Command line of a console script installed beside this Python (or ``python -m``)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    if found:
        return [found]
    raise FileNotFoundError(f"{name} is not installed beside {sys.executable}")


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str,
    interval: float = 0.02,
) -> None:
    """Poll ``predicate`` until true; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Proc:
    """A CLI process with its stdout/stderr in files (no pipe can fill up and block it)."""

    name: str
    process: asyncio.subprocess.Process
    stdout_path: Path
    stderr_path: Path

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The process stopped (SIGSTOP: a suspended VM, a debugger) while the block runs,
        and continued after it, however the block ends."""
        self.signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal(signal.SIGCONT)


@dataclass
class Cluster:
    """``async with Cluster() as c:`` start admins and workers as real processes; on exit
    each still running gets SIGTERM, then SIGKILL, and is reaped, even when the test failed.
    Their output goes to files in ``workdir``; without one, a temporary directory that goes
    with them (read what they said inside the block)."""

    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # The CEYLON_* variables of this process pass to the programs (False: they do not).
    inherit_settings: bool = True
    procs: list[Proc] = field(default_factory=list)
    port: int = 0
    pub_port: int = 0
    # The temporary workdir made here, removed on the way out.
    _made: Path | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> Cluster:
        if self.workdir is None:
            self.workdir = self._made = Path(tempfile.mkdtemp(prefix="ceylon-"))
        self.port, self.pub_port = free_port(), free_port()
        while self.pub_port == self.port:
            self.pub_port = free_port()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.stop_all()
        finally:
            if self._made is not None:
                shutil.rmtree(self._made, ignore_errors=True)

    async def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
                    ) -> Proc:
        assert self.workdir is not None
        out, err = self.workdir / f"{name}.out", self.workdir / f"{name}.err"
        inherited = os.environ if self.inherit_settings else \
            {k: v for k, v in os.environ.items() if not k.startswith("CEYLON_")}
        full_env = {**inherited, **self.env, **(env or {})}
        with out.open("wb") as fo, err.open("wb") as fe:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=fo, stderr=fe, stdin=asyncio.subprocess.DEVNULL, env=full_env,
                start_new_session=True)
        proc = Proc(name, process, out, err)
        self.procs.append(proc)
        return proc

    async def admin(self, *args: str, name: str = "admin") -> Proc:
        argv = [*cli("ceylon-admin"), "--port", str(self.port), "--pub-port",
                str(self.pub_port), "--bind", "127.0.0.1", *args]
        return await self.spawn(name, argv)

    async def worker(self, name: str, *args: str, label: str | None = None,
                     env: dict[str, str] | None = None) -> Proc:
        """Start ``ceylon-worker --name NAME``; ``label`` names its log files (default NAME),
        ``env`` adds environment variables."""
        argv = [*cli("ceylon-worker"), "--name", name, "--admin-peer", "127.0.0.1",
                "--port", str(self.port), *args]
        return await self.spawn(label or name, argv, env)

    async def stop_all(self, grace: float = 5.0) -> None:
        for p in self.procs:
            p.signal(signal.SIGTERM)
        for p in self.procs:
            try:
                await p.wait(grace)
            except TimeoutError:
                p.signal(signal.SIGKILL)
                await p.wait(grace)


@dataclass
class Observed:
    kind: bytes
    sender: str
    items: list[Any]  # TaskAssignment / TaskResult list, or [Event], or [payload]
    at: float


class EventLog:
    """Everything published on a workspace's PUB bus, decoded, in arrival order."""

    def __init__(self, host: str, pub_port: int, workspace: str = "default") -> None:
        self._sub = Subscriber(host, pub_port, workspace)
        self.events: list[Observed] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> EventLog:
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._sub.close()

    async def _collect(self) -> None:
        while True:
            frames = await self._sub.recv(timeout=3600)
            if frames is None:
                continue
            try:
                env = wire.decode_frames(frames[1:])
                self.events.append(Observed(env.kind, env.header.sender, _items(env),
                                            time.monotonic()))
            except RemoteProtocolError:
                continue

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """PUB/SUB joins late: wait until the admin's periodic heartbeat reaches us."""
        await wait_until(lambda: any(e.kind == Kind.HEARTBEAT for e in self.events), timeout,
                         "the admin's heartbeat on the PUB bus")

    def of(self, kind: bytes) -> list[Any]:
        return [item for e in self.events if e.kind == kind for item in e.items]

    def max_in_flight(self) -> dict[str, int]:
        """Per worker, the most tasks it held at once, replaying ASSIGN/RESULT in order."""
        now: dict[str, int] = {}
        peak: dict[str, int] = {}
        for e in self.events:
            for item in e.items:
                if isinstance(item, TaskAssignment):
                    now[item.worker] = now.get(item.worker, 0) + 1
                    peak[item.worker] = max(peak.get(item.worker, 0), now[item.worker])
                elif isinstance(item, TaskResult):
                    now[item.worker] = now.get(item.worker, 0) - 1
        return peak


def _items(env: wire.Envelope) -> list[Any]:
    if env.kind == Kind.ASSIGN:
        return wire.unpack_batch(TaskAssignment, env.payload)
    if env.kind == Kind.RESULT:
        return wire.unpack_batch(TaskResult, env.payload)
    if env.kind in (Kind.EVENT, Kind.BCAST):
        return [wire.decode_payload(env.header, env.payload)]
    return []
