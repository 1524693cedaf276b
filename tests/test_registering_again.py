"""A worker registering again: not while its admin is up, whatever its --heartbeat; back
within a restarted admin's come-back window; and what the admin sends it meanwhile that is
not sent again (the run's END, another agent's message) is not lost. Each test failed on the
code before (a review of the worker side)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import zmq
import zmq.asyncio
from conftest import run
from loguru import logger
from test_broadcast_repair import against

from ceylon_net import Admin, AdminSettings, Worker, wire
from ceylon_net.dev.testing import Cluster, wait_until
from ceylon_net.errors import AdminUnreachableError
from ceylon_net.wire import Kind


def _ran(proc) -> Counter:
    """Task ids a worker started, from its own debug log."""
    return Counter(m.group(1) for m in re.finditer(r"running task (.+?) \(attempt",
                                                   proc.stderr()))


# ---------------------------------------------------------------------------------------------
# 1. --heartbeat below the admin's 0.25 s tick: the worker took the admin for silent, and
#    registered again and again while the admin was up (the admin beat once a tick).


@pytest.mark.timeout(60)
def test_a_worker_of_an_admin_with_a_fast_heartbeat_does_not_register_again_and_again(
        tmp_path, tasks_file):
    """--heartbeat 0.1 to 3600 and --liveness >= 2 are accepted; with --heartbeat 0.1
    --liveness 2 the worker said 'admin silent for 0.2 s; registering again' a few times a
    second for as long as it ran, though the admin was up and answered each HELLO at once (it
    beat on PUB every 0.25 s, its TICK, not every --heartbeat)."""
    path = tasks_file([{"id": i, "description": f"t{i}", "difficulty": 1, "duration": 0.2}
                       for i in range(12)])

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            admin = await c.admin("--tasks", str(path), "--heartbeat", "0.1",
                                  "--liveness", "2")
            w = await c.worker("w1", "--log-level", "DEBUG")
            code = await admin.wait(40)  # 12 tasks of 0.2 s: ~2.5 s of running
            with contextlib.suppress(TimeoutError):  # (see test 3: it may miss the END)
                await w.wait(10)
            return code, w.stderr(), admin.stderr()

    code, werr, aerr = run(body())
    assert code == 0, aerr
    again = [line for line in werr.splitlines() if "registering again" in line]
    assert not again, (f"{len(again)} re-registrations while the admin was up, e.g.:\n"
                       + "\n".join(again[:5]))


# ---------------------------------------------------------------------------------------------
# 2. The come-back window after an admin restart (2 x heartbeat x liveness from its start) was
#    shorter than the worker's DEALER reconnect backoff (RECONNECT_IVL_MAX 2 s): a worker
#    still running its task was taken for gone, and the task ran again elsewhere.


DOWN = 5.3  # s the admin is down: just after one of the worker's reconnect attempts (below)


@pytest.mark.timeout(120)
def test_a_worker_running_its_task_makes_it_back_within_the_restarted_admins_window(
        tmp_path, tasks_file):
    """Admin --heartbeat 0.2 --liveness 3 (the suite's fastest pace): a restarted admin waits
    2 x 0.2 x 3 = 1.2 s for the workers of its journal. It is killed (SIGKILL) while a worker
    runs a 12 s task, and comes back on its journal DOWN s later (a container restarted, say).
    The worker is up and runs its task all along, so it should be back in time, and the task
    should run once. Its DEALER had backed off to a reconnect every 2 s by then
    (RECONNECT_IVL 0.1 s doubling to RECONNECT_IVL_MAX 2 s: tries at ~0.1, 0.3, 0.7, 1.5, 3.1,
    5.1, 7.1 s after the loss), so it reconnected ~1.8 s after the admin came back: taken for
    gone, its task went to another worker, and its own run was cancelled.

    The restarted admin runs in this process so that it binds at a known moment (a CLI's
    start-up time varies); DOWN is the scenario (the downtime), not a wait for anything: any
    restart that landed more than 1.2 s before the worker's next reconnect attempt missed."""
    path = tasks_file([{"id": 0, "description": "long", "difficulty": 1, "duration": 12}])
    journal = tmp_path / "state.db"
    said: list[str] = []

    async def body():
        async with Cluster(workdir=tmp_path) as c:
            first = await c.admin("--tasks", str(path), "--journal", str(journal),
                                  "--heartbeat", "0.2", "--liveness", "3")
            w = await c.worker("w1", "--log-level", "DEBUG")
            await wait_until(lambda: "running task 0" in w.stderr(), 30, "the task to run")
            first.signal(signal.SIGKILL)
            assert await first.wait(10) == -signal.SIGKILL
            killed = time.monotonic()
            second = Admin(settings=AdminSettings(
                bind="127.0.0.1", port=c.port, pub_port=c.pub_port, journal=str(journal),
                heartbeat=0.2, liveness=3))
            sink = logger.add(lambda m: said.append(m.record["message"]), level="INFO")
            try:
                await asyncio.sleep(max(0.0, killed + DOWN - time.monotonic()))
                await second.start()
                spare = await c.worker("spare", "--log-level", "DEBUG")  # takes the requeued
                await asyncio.wait_for(second.wait_idle(), 60)
                report = second.report()
            finally:
                await second.close("test over")
                logger.remove(sink)
            await w.wait(15)
            return report, _ran(w), _ran(spare)

    report, on_w1, on_spare = run(body())
    gone = [m for m in said if "did not come back" in m]
    assert not gone, (f"{gone}; the task ran on w1 {dict(on_w1)} and again on the spare "
                      f"worker {dict(on_spare)}")
    assert not on_spare
    assert [t.worker for t in report.tasks] == ["w1"]


# ---------------------------------------------------------------------------------------------
# 3. What the admin sent a worker that was registering again, before its WELCOME, was dropped
#    (_await_welcome read only WELCOME and REJECT): an END that crossed the HELLO (the run
#    ended as the worker registered again) was lost, and the worker asked and asked, then
#    exited 1, "lost the admin"; a direct message relayed to it then was lost without a word.


class _ScriptedAdmin:
    """Just enough of an admin over bare pyzmq: it welcomes the first HELLO (a heartbeat of
    0.2 s), then publishes nothing, so the worker soon takes it for silent and registers
    again; ``second`` answers the second HELLO (it is sent the peer)."""

    def __init__(self, second: Callable[[_ScriptedAdmin, bytes], Awaitable[None]]) -> None:
        self.second = second
        self.ctx = zmq.asyncio.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.pub_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.hellos = 0

    async def send(self, peer: bytes, kind: bytes, msg: Any, sender: str = "admin") -> None:
        type_, payload = wire.encode_payload(msg)
        await self.router.send_multipart([peer, *wire.encode_frames(
            kind, wire.make_header("default", sender, type_), payload)])

    async def welcome(self, peer: bytes) -> None:
        await self.send(peer, Kind.WELCOME, wire.Welcome("w", "admin", self.pub_port, 0.2, 3, 7))

    async def serve(self) -> None:
        while True:
            peer, *frames = await self.router.recv_multipart()
            if wire.decode_frames(frames).kind != Kind.HELLO:
                continue
            self.hellos += 1
            if self.hellos == 1:
                await self.welcome(peer)
            elif self.hellos == 2:
                await self.second(self, peer)

    def close(self) -> None:
        self.router.close(0)
        self.pub.close(0)
        self.ctx.term()


def _against(admin: _ScriptedAdmin, w: Worker,
             then: Callable[[asyncio.Task], Awaitable[Any]]) -> Any:
    """Run ``w`` against ``admin`` until it registered a second time, then ``then(its
    run)``; on the way out the worker is stopped and the admin closed."""

    async def body():
        async with against(admin, w) as running:
            await wait_until(lambda: admin.hellos >= 2, 20, "the worker to register again")
            return await then(running)

    return run(body())


@pytest.mark.timeout(60)
def test_an_end_that_crosses_a_hello_ends_the_worker_with_the_runs_reason():
    """The run ended as the worker registered again (it had taken the admin for silent): the
    admin's END, sent to a worker it still counted as registered, crosses the HELLO; then the
    admin process exits and nobody answers any more. The README: 'the admin ended the run'
    is exit 0; the worker instead kept sending HELLOs for --connect-timeout (30 s by
    default) and exited 1, 'lost the admin ... no answer for 30 s'."""
    async def end(admin: _ScriptedAdmin, peer: bytes) -> None:
        await admin.send(peer, Kind.END, wire.End("run over"))

    w = Worker("w", admin_port=(admin := _ScriptedAdmin(end)).port, connect_timeout=4.0)

    async def then(running: asyncio.Task) -> tuple[str | None, str | None]:
        done, _ = await asyncio.wait([running], timeout=10)
        assert done, "the worker still runs 10 s after the admin ended the run"
        try:
            return running.result(), None
        except AdminUnreachableError as exc:
            return None, str(exc)

    reason, error = _against(admin, w, then)
    assert error is None, f"the worker gave up on the admin instead: {error}"
    assert reason == "run over"


class _Inbox(Worker):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.got: list[Any] = []

    async def on_message(self, agent_id: str, data: Any, time: float) -> None:
        self.got.append((agent_id, data))


@pytest.mark.timeout(60)
def test_a_direct_message_relayed_as_the_worker_registers_again_is_delivered():
    """Another agent's send() to this worker, relayed by the admin (which still counts the
    worker as registered) as the worker's HELLO is on its way: delivered (it was dropped
    without a word, and nobody was told it was not delivered)."""
    async def direct_then_welcome(admin: _ScriptedAdmin, peer: bytes) -> None:
        await admin.send(peer, Kind.DIRECT, b"hello from w2", sender="w2")
        await admin.welcome(peer)

    w = _Inbox("w", admin_port=(admin := _ScriptedAdmin(direct_then_welcome)).port)

    async def then(running: asyncio.Task) -> list[Any]:
        await wait_until(lambda: w._welcome is not None, 10, "the second welcome")
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: w.got, 3, "the message")
        return w.got

    assert _against(admin, w, then) == [("w2", b"hello from w2")]
